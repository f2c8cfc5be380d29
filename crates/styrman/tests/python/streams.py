"""The Python client's streams against a node: exec (WebSocket v4.channel.k8s.io) with
stdout, stderr, stdin, a tty and the exit code, and port-forward to a pod's port.
Usage: streams.py KUBECONFIG NAMESPACE SHELL_POD WEB_POD"""
import sys
import time

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(sys.argv[1])
namespace, shell, web = sys.argv[2], sys.argv[3], sys.argv[4]
api = client.CoreV1Api()

out = stream(api.connect_get_namespaced_pod_exec, shell, namespace,
             command=["sh", "-c", "echo out; echo err >&2"],
             stdout=True, stderr=True, stdin=False, tty=False)
assert "out" in out, repr(out)
print("exec ok")

resp = stream(api.connect_get_namespaced_pod_exec, shell, namespace,
              command=["sh", "-c", "read line; echo got $line; exit 7"],
              stdout=True, stderr=True, stdin=True, tty=False, _preload_content=False)
resp.write_stdin("hello\n")
output = ""
deadline = time.time() + 30
while resp.is_open() and time.time() < deadline:
    resp.update(timeout=1)
    if resp.peek_stdout():
        output += resp.read_stdout()
assert not resp.is_open(), "the exec did not end"
assert "got hello" in output, repr(output)
assert resp.returncode == 7, resp.returncode
print("stdin-exit ok")

tty = stream(api.connect_get_namespaced_pod_exec, shell, namespace,
             command=["sh", "-c", "tty; stty size"],
             stdout=True, stderr=True, stdin=True, tty=True, _preload_content=False)
tty.write_channel(4, '{"Width": 100, "Height": 40}')
output = ""
deadline = time.time() + 30
while tty.is_open() and time.time() < deadline:
    tty.update(timeout=1)
    if tty.peek_stdout():
        output += tty.read_stdout()
assert "/dev/pts/" in output, repr(output)
print("tty ok")

pf = portforward(api.connect_get_namespaced_pod_portforward, web, namespace, ports="80")
sock = pf.socket(80)
sock.setblocking(True)
sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
reply = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    reply += chunk
sock.close()
assert b"Welcome to nginx!" in reply, reply[:200]
print("portforward ok")
