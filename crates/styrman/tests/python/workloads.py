"""The official Python client (kubernetes 33.x) driving Deployments, Services, ConfigMaps and
Jobs: create, read, list, replace, the three patch types, server-side apply (through the
dynamic client, as Python users do it), watch, and delete.

Usage: workloads.py KUBECONFIG. Prints one line per check; raises on anything unexpected.
"""
import sys
import threading

from kubernetes import client, config, dynamic, watch

config.load_kube_config(sys.argv[1])
api_client = client.ApiClient()
core = client.CoreV1Api(api_client)
apps = client.AppsV1Api(api_client)
batch = client.BatchV1Api(api_client)
dyn = dynamic.DynamicClient(api_client)
NS = "default"

# ConfigMaps: CRUD, the three patch types, a label selector.
cm = core.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings", labels={"tier": "web"}), data={"a": "1"})
)
cm.data["b"] = "2"
replaced = core.replace_namespaced_config_map("settings", NS, cm)
assert int(replaced.metadata.resource_version) > int(cm.metadata.resource_version)
core.patch_namespaced_config_map("settings", NS, {"data": {"c": "3"}})  # strategic merge
core.patch_namespaced_config_map("settings", NS, [{"op": "remove", "path": "/data/a"}])  # JSON patch
assert core.read_namespaced_config_map("settings", NS).data == {"b": "2", "c": "3"}
try:
    core.replace_namespaced_config_map("settings", NS, cm)  # stale resourceVersion
    raise AssertionError("a stale replace succeeded")
except client.ApiException as e:
    assert e.status == 409, e
listed = core.list_namespaced_config_map(NS, label_selector="tier=web").items
assert [c.metadata.name for c in listed] == ["settings"], listed
print("configmaps ok")

# Deployments: server-side apply by two managers, a conflict, a forced takeover.
deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
manifest = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": NS},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
        },
    },
}
applied = deployments.server_side_apply(body=manifest, field_manager="py-deployer")
assert applied.spec.replicas == 2 and applied.metadata.managedFields[0].operation == "Apply"
scale = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS}, "spec": {"replicas": 5}}
try:
    deployments.server_side_apply(body=scale, field_manager="py-autoscaler")
    raise AssertionError("a conflicting apply succeeded")
except dynamic.exceptions.ConflictError as e:
    body = e.body.decode() if isinstance(e.body, bytes) else e.body
    assert e.status == 409 and 'conflict with \\"py-deployer\\"' in body and ".spec.replicas" in body, body
forced = deployments.server_side_apply(body=scale, field_manager="py-autoscaler", force_conflicts=True)
assert forced.spec.replicas == 5
manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
del manifest["spec"]["replicas"]
updated = deployments.server_side_apply(body=manifest, field_manager="py-deployer")
assert updated.spec.replicas == 5 and updated.spec.template.spec.containers[0].image == "nginx:1.28"
assert updated.metadata.generation == 3, updated.metadata.generation
apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"team": "a"}}})
print("deployments ok")

# Services: apply, an allocated cluster IP, a merge patch.
services = dyn.resources.get(api_version="v1", kind="Service")
svc = services.server_side_apply(
    body={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
          "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    field_manager="py-deployer",
)
assert svc.spec.clusterIP.startswith("10.") and svc.spec.ports[0].protocol == "TCP"
api_client.call_api(
    "/api/v1/namespaces/{namespace}/services/{name}", "PATCH",
    path_params={"namespace": NS, "name": "web"},
    header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
    body={"metadata": {"annotations": {"owner": "py"}}}, response_type="V1Service", auth_settings=["BearerToken"],
)
assert core.read_namespaced_service("web", NS).metadata.annotations == {"owner": "py"}
print("services ok")

# Jobs: typed create, status through its subresource, delete with propagation.
job = batch.create_namespaced_job(NS, client.V1Job(
    metadata=client.V1ObjectMeta(name="once"),
    spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
        restart_policy="Never", containers=[client.V1Container(name="once", image="busybox", command=["true"])]))),
))
assert job.spec.backoff_limit == 6 and job.spec.completions == 1
batch.patch_namespaced_job_status("once", NS, {"status": {"active": 1}})
assert batch.read_namespaced_job_status("once", NS).status.active == 1
batch.delete_namespaced_job("once", NS, propagation_policy="Background")
print("jobs ok")

# Watch: from a list's resource version, every change after it, in order.
start = core.list_namespaced_config_map(NS).metadata.resource_version
events = []
def collect():
    for e in watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=3):
        events.append((e["type"], e["object"].metadata.name))
watcher = threading.Thread(target=collect)
watcher.start()
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w1")))
core.patch_namespaced_config_map("w1", NS, {"data": {"x": "1"}})
core.delete_namespaced_config_map("w1", NS)
watcher.join()
assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")], events
print("watch ok")

for name in ("settings",):
    core.delete_namespaced_config_map(name, NS)
apps.delete_namespaced_deployment("web", NS)
core.delete_namespaced_service("web", NS)
print("delete ok")
