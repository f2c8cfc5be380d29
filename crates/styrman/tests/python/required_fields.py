"""Every served kind's replies carry the fields Kubernetes always serializes.

For each resource that discovery lists with `create`, a minimal object is generated from the
server's own OpenAPI v3 schema (its required fields, recursively), created, and then read back
every way a client reads it: the create reply, get, list, a watch's events, a Table with the
objects, the status subresource after a status write of `{}`, and the scale subresource. Each
reply is checked two ways: every present object has all its schema's required fields, and the
official Python client deserializes it into its model class with client-side validation on
(what raised `ValueError: Invalid value for 'replicas', must not be 'None'`).

Usage: required_fields.py KUBECONFIG. Prints `<resource> ok` per resource and `checked N`.
"""

import json
import os
import sys

import kubernetes
from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
NS = "required-fields-" + os.urandom(3).hex()

# Values the generator cannot guess, for fields whose content the server validates beyond
# presence (a reference must name something real, a selector must match its template).
OVERRIDES = {
    "io.k8s.api.apps.v1.DeploymentSpec": {"selector": {"matchLabels": {"app": "a"}}},
    "io.k8s.api.apps.v1.ReplicaSetSpec": {"selector": {"matchLabels": {"app": "a"}}},
    "io.k8s.api.apps.v1.StatefulSetSpec": {"selector": {"matchLabels": {"app": "a"}}},
    "io.k8s.api.apps.v1.DaemonSetSpec": {"selector": {"matchLabels": {"app": "a"}}},
    "io.k8s.api.core.v1.PodTemplateSpec": {"metadata": {"labels": {"app": "a"}}},
}


def call(method, path, body=None, query=None, headers=None):
    response = api.call_api(
        path,
        method,
        query_params=list((query or {}).items()),
        header_params={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=False,
    )
    data = response[0].data
    return json.loads(data) if data.strip() else None


def path_of(ref):
    return ref.rsplit("/", 1)[-1]


class Schemas:
    def __init__(self):
        self.schemas = {}
        index = call("GET", "/openapi/v3")
        for name, entry in index["paths"].items():
            doc = call("GET", entry["serverRelativeURL"])
            self.schemas.update(doc.get("components", {}).get("schemas", {}))

    def ref_of(self, prop):
        if "$ref" in prop:
            return path_of(prop["$ref"])
        for part in prop.get("allOf", []):
            if "$ref" in part:
                return path_of(part["$ref"])
        return None

    def is_object_type(self, name):
        s = self.schemas.get(name, {})
        return s.get("type") == "object" and "properties" in s

    def minimal(self, name, depth=0):
        """The smallest object of definition `name` with every required field."""
        schema = self.schemas[name]
        out = {}
        # A spec (or a template's) is optional in the schema but is what validation reads.
        wanted = list(schema.get("required", [])) + [f for f in ("spec", "template") if f in schema.get("properties", {})]
        for field in wanted:
            out[field] = self.value(schema["properties"][field], depth)
        out.update(OVERRIDES.get(name, {}))
        return out

    def value(self, prop, depth):
        ref = self.ref_of(prop)
        if ref:
            if self.is_object_type(ref) and depth < 8:
                return self.minimal(ref, depth + 1)
            target = self.schemas.get(ref, {})
            if target.get("format") == "int-or-string":
                return 1
            return "1" if target.get("type") == "string" else {}
        t = prop.get("type")
        if t == "array":
            return [self.value(prop["items"], depth + 1)]
        if t == "integer":
            return 1
        if t == "number":
            return 1
        if t == "boolean":
            return False
        if t == "object":
            return {}
        return "a"

    def missing(self, name, value, where, out):
        """Required fields absent (or null) in `value` and below, as paths."""
        schema = self.schemas.get(name)
        if schema is None or not isinstance(value, dict):
            return out
        for field in schema.get("required", []):
            if value.get(field) is None and self.is_serialized(schema["properties"][field]):
                out.append(f"{where}.{field}")
        for field, prop in schema.get("properties", {}).items():
            inner = value.get(field)
            if inner is None:
                continue
            ref = self.ref_of(prop)
            if ref:
                self.missing(ref, inner, f"{where}.{field}", out)
            elif prop.get("type") == "array" and isinstance(inner, list):
                item_ref = self.ref_of(prop.get("items", {}))
                for i, item in enumerate(inner):
                    if item_ref:
                        self.missing(item_ref, item, f"{where}.{field}[{i}]", out)
            elif prop.get("type") == "object" and isinstance(inner, dict):
                value_ref = self.ref_of(prop.get("additionalProperties") or {})
                for k, item in inner.items():
                    if value_ref:
                        self.missing(value_ref, item, f"{where}.{field}[{k}]", out)
        return out

    def is_serialized(self, prop):
        """Go writes times and raw objects as null when zero; every other field is written."""
        ref = self.ref_of(prop)
        return ref is None or not ref.endswith((".Time", ".MicroTime", ".RawExtension"))


def definition(group_version, kind):
    group, _, version = group_version.rpartition("/")
    prefix = {"": "io.k8s.api.core"}.get(group)
    if prefix is None:
        prefix = "io.k8s.api." + group.split(".")[0]
    return f"{prefix}.{version}.{kind}"


def model_class(group_version, kind):
    """The client's model class name: `V1DaemonSet`, or with the group where names collide
    (`CoreV1Event`, `EventsV1Event`)."""
    group, _, version = group_version.rpartition("/")
    plain = version[0].upper() + version[1:] + kind
    if hasattr(kubernetes.client.models, plain):
        return plain
    label = (group or "core").split(".")[0]
    return label[0].upper() + label[1:] + plain


failures = []


def check(schemas, what, group_version, kind, value):
    name = definition(group_version, kind)
    missing = schemas.missing(name, value, kind, [])
    if missing:
        failures.append(f"{what}: missing {missing}")
    try:
        api._ApiClient__deserialize(value, model_class(group_version, kind))
    except ValueError as e:
        # An events.k8s.io Event read from a core Event recorded without eventTime: upstream
        # writes `eventTime: null` there too (a zero time is null in Go), which the client
        # refuses just the same.
        if "`event_time`" not in str(e):
            failures.append(f"{what}: the Python client refused it: {e}")


def main():
    schemas = Schemas()
    call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    groups = [("", "v1", "/api/v1")]
    for g in call("GET", "/apis")["groups"]:
        for v in g["versions"]:
            groups.append((g["name"], v["version"], f"/apis/{g['name']}/{v['version']}"))
    checked = 0
    for group, version, base in groups:
        gv = f"{group}/{version}" if group else version
        resources = call("GET", base)["resources"]
        subresources = {r["name"] for r in resources if "/" in r["name"]}
        for r in resources:
            if "/" in r["name"] or "create" not in r["verbs"] or "list" not in r["verbs"]:
                continue
            if r["kind"] in ("Namespace",):
                continue
            plural, kind = r["name"], r["kind"]
            collection = f"{base}/namespaces/{NS}/{plural}" if r["namespaced"] else f"{base}/{plural}"
            obj = schemas.minimal(definition(gv, kind))
            obj.update({"apiVersion": gv, "kind": kind, "metadata": {"name": f"{plural}-{group.split('.')[0] or 'core'}-{version}-{NS[-6:]}"}})
            try:
                created = call("POST", collection, obj)
            except client.ApiException as e:
                failures.append(f"{plural}: the generated object was refused: {e.status} {e.body}")
                continue
            one = f"{collection}/{created['metadata']['name']}"
            check(schemas, f"{plural} create reply", gv, kind, created)
            check(schemas, f"{plural} get", gv, kind, call("GET", one))
            listed = call("GET", collection)
            check(schemas, f"{plural} list", gv, kind + "List", listed)
            for item in listed["items"]:
                check(schemas, f"{plural} list item", gv, kind, item)
            table = call("GET", collection, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
                         query={"includeObject": "Object"})
            for row in table["rows"]:
                check(schemas, f"{plural} table row", gv, kind, row["object"])
            events = api.call_api(collection, "GET", query_params=[("watch", "1"), ("resourceVersion", "0"),
                                                                     ("timeoutSeconds", "1")],
                                  header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                                  _preload_content=False)[0].data
            for line in events.decode().splitlines():
                event = json.loads(line)
                if event["type"] != "BOOKMARK":
                    check(schemas, f"{plural} watch event", gv, kind, event["object"])
            if f"{plural}/status" in subresources:
                current = call("GET", one)
                current["status"] = {}
                check(schemas, f"{plural}/status update reply", gv, kind, call("PUT", f"{one}/status", current))
                check(schemas, f"{plural} get after a status write", gv, kind, call("GET", one))
                patched = call("PATCH", f"{one}/status", {"status": {}},
                               headers={"Content-Type": "application/merge-patch+json"})
                check(schemas, f"{plural}/status patch reply", gv, kind, patched)
            if f"{plural}/scale" in subresources:
                check(schemas, f"{plural}/scale", "autoscaling/v1", "Scale", call("GET", f"{one}/scale"))
            print(f"{plural} ok", flush=True)
            checked += 1
    print(f"checked {checked}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


main()
