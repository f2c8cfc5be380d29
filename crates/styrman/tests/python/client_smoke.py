"""The official Python client (kubernetes 33.x) against a running styrman server.

Usage: client_smoke.py KUBECONFIG. Prints one line per check; raises on anything unexpected.
"""
import sys

from kubernetes import client, config, watch

config.load_kube_config(sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = [n.metadata.name for n in core.list_namespace().items]
assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names), names
print("namespaces ok")

cm = core.create_namespaced_config_map(
    "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py"), data={"a": "1"})
)
assert int(cm.metadata.resource_version) > 0 and cm.metadata.uid
core.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
assert core.read_namespaced_config_map("py", "default").data == {"a": "1", "b": "2"}
print("configmap ok")

deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="pyd"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "pyd"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "pyd"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.27")]),
        ),
    ),
)
created = apps.create_namespaced_deployment("default", deployment)
assert created.metadata.generation == 1 and created.spec.strategy.type == "RollingUpdate"
scaled = apps.patch_namespaced_deployment_scale("pyd", "default", {"spec": {"replicas": 4}})
assert scaled.spec.replicas == 4
print("deployment ok")

seen = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1)]
assert ("ADDED", "py") in seen, seen
print("watch ok")

service = core.create_namespaced_service(
    "default", client.V1Service(metadata=client.V1ObjectMeta(name="pys"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]))
)
assert service.spec.cluster_ip.startswith("10.96.") and service.spec.ports[0].target_port == 80
print("service ok")

try:
    core.read_namespaced_config_map("nope", "default")
    raise AssertionError("reading a missing configmap succeeded")
except client.ApiException as e:
    assert e.status == 404 and '"reason":"NotFound"' in e.body, e.body
print("errors ok")

core.delete_namespaced_config_map("py", "default")
print("delete ok")
