"""Writes without a precondition never answer 409 for a concurrent write; writes with one
answer 409 exactly when it fails.

While a second client rewrites an object's status as fast as it can, this client changes the
same object every way a client can without naming a resource version: merge, JSON and
strategic patches, server-side apply, an update whose body has no resourceVersion, the scale
and status subresources, adding and removing a finalizer, and deletes (no body, `{}`, each
propagation policy, with a finalizer pending). None may answer 409. Then with preconditions:
a stale resourceVersion in an update or in DeleteOptions answers 409 every time; a delete
whose `preconditions.uid` matches goes through despite the writer; one whose uid does not
answers 409.

Usage: conflicts.py KUBECONFIG [ROUNDS]. Prints `<what> ok` per group and the counts.
"""

import json
import os
import sys
import threading

from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
NS = "conflicts-" + os.urandom(3).hex()
BASE = f"/apis/apps/v1/namespaces/{NS}/replicasets"


def request(api, method, path, body=None, content_type="application/json", query=None):
    """(HTTP status, decoded body) without raising on errors."""
    try:
        response = api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
        )[0]
        code, data = response.status, response.data
    except client.ApiException as e:
        code, data = e.status, e.body
    return code, (json.loads(data) if data and data.strip() else None)


def replica_set(name):
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }


class StatusWriter:
    """Rewrites one object's status without pause, in its own client and thread."""

    def __init__(self, name):
        self.path = f"{BASE}/{name}/status"
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        api = client.ApiClient()
        while not self.stop.is_set():
            patch = {"status": {"conditions": [{"type": "Stress", "status": "True", "message": str(self.writes)}]}}
            code, _ = request(api, "PATCH", self.path, patch, "application/merge-patch+json")
            if code == 404:
                return
            self.writes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


api = client.ApiClient()
counts = {}
unexpected = []


def expect(what, code, wanted, body):
    counts[what] = counts.get(what, 0) + 1
    ok = code in wanted if isinstance(wanted, tuple) else code == wanted
    if not ok:
        unexpected.append(f"{what}: {code} (wanted {wanted}): {json.dumps(body)[:300]}")


def unconditional_changes(name):
    one = f"{BASE}/{name}"
    for i in range(3):
        code, body = request(api, "PATCH", one, {"metadata": {"labels": {"merge": str(i)}}}, "application/merge-patch+json")
        expect("merge patch", code, 200, body)
        code, body = request(api, "PATCH", one, [{"op": "add", "path": "/metadata/annotations", "value": {"j": str(i)}}],
                             "application/json-patch+json")
        expect("json patch", code, 200, body)
        code, body = request(api, "PATCH", one, {"metadata": {"labels": {"smp": str(i)}}},
                             "application/strategic-merge-patch+json")
        expect("strategic merge patch", code, 200, body)
        applied = replica_set(name)
        applied["metadata"]["labels"]["applied"] = str(i)
        code, body = request(api, "PATCH", one, applied, "application/apply-patch+yaml",
                             {"fieldManager": "stress", "force": "true"})
        expect("server-side apply", code, 200, body)
        _, current = request(api, "GET", one)
        del current["metadata"]["resourceVersion"]
        current["metadata"]["labels"]["put"] = str(i)
        code, body = request(api, "PUT", one, current)
        expect("update without resourceVersion", code, 200, body)
        current["metadata"].pop("resourceVersion", None)
        current["status"] = {"conditions": [{"type": "Mine", "status": "True"}]}
        code, body = request(api, "PUT", f"{one}/status", current)
        expect("status update without resourceVersion", code, 200, body)
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name, "namespace": NS},
                 "spec": {"replicas": 0}}
        code, body = request(api, "PUT", f"{one}/scale", scale)
        expect("scale update without resourceVersion", code, 200, body)
        code, body = request(api, "PATCH", f"{one}/scale", {"spec": {"replicas": 0}}, "application/merge-patch+json")
        expect("scale patch", code, 200, body)


def main():
    request(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    policies = [None, "Background", "Foreground", "Orphan"]
    writes = 0
    for r in range(ROUNDS):
        name = f"rs-{r}"
        code, body = request(api, "POST", BASE, replica_set(name))
        expect("create", code, 201, body)
        with StatusWriter(name) as writer:
            unconditional_changes(name)
            one = f"{BASE}/{name}"
            if r % 2:
                code, body = request(api, "PATCH", one, {"metadata": {"finalizers": ["example.com/hold"]}},
                                     "application/merge-patch+json")
                expect("adding a finalizer", code, 200, body)
            policy = policies[r % len(policies)]
            options = {} if policy is None else {"propagationPolicy": policy}
            code, body = request(api, "DELETE", one, options if r % 3 else None)
            expect("delete", code, (200, 202), body)
            if r % 2:
                code, body = request(api, "PATCH", one, {"metadata": {"finalizers": None}},
                                     "application/merge-patch+json")
                expect("removing the last finalizer", code, (200, 404), body)
        writes += writer.writes
    print("unconditional ok")

    # With preconditions.
    name = "pinned"
    _, created = request(api, "POST", BASE, replica_set(name))
    one = f"{BASE}/{name}"
    with StatusWriter(name) as writer:
        stale = created["metadata"]["resourceVersion"]
        while writer.writes < 2:
            pass
        for _ in range(ROUNDS):
            _, current = request(api, "GET", one)
            current["metadata"]["resourceVersion"] = stale
            code, body = request(api, "PUT", one, current)
            expect("update with a stale resourceVersion", code, 409, body)
            code, body = request(api, "PATCH", one, {"metadata": {"resourceVersion": stale, "labels": {"x": "y"}}},
                                 "application/merge-patch+json")
            expect("patch with a stale resourceVersion", code, 409, body)
            code, body = request(api, "DELETE", one, {"preconditions": {"resourceVersion": stale}})
            expect("delete with a stale resourceVersion", code, 409, body)
            code, body = request(api, "DELETE", one, {"preconditions": {"uid": "not-" + created["metadata"]["uid"]}})
            expect("delete with another uid", code, 409, body)
        code, body = request(api, "DELETE", one, {"preconditions": {"uid": created["metadata"]["uid"]}})
        expect("delete with its uid", code, 200, body)
        writes += writer.writes
    print("preconditions ok")
    print(f"status writes {writes}")
    for what, n in sorted(counts.items()):
        print(f"  {what}: {n}")
    if unexpected:
        print("\n".join(unexpected))
        sys.exit(1)


main()
