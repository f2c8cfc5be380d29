//! Strategic merge patch, for the built-in kinds: a JSON merge patch in which some lists merge
//! item by item on a key (containers by `name`, ports by `containerPort`, ...) instead of being
//! replaced, with the directives `$patch` (replace/delete/merge), `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//!
//! Which lists merge, and on what key, is the `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` metadata of the Kubernetes API types, kept here as a table of
//! field names (a field name picks one strategy everywhere it appears in the built-in types,
//! except `ports`, which services key by `port` and containers by `containerPort`).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Items are maps merged on this key.
    MergeOnKey(&'static str),
    /// A list of scalars merged as a set (union, order kept).
    MergeSet,
    /// Replaced whole (the default).
    Replace,
}

/// The patch strategy of a list field named `field`; `in_service_spec` says the list sits in a
/// Service's spec.
pub(crate) fn list_strategy(field: &str, in_service_spec: bool) -> ListStrategy {
    use ListStrategy::*;
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "imagePullSecrets"
        | "volumes"
        | "schedulingGates"
        | "resourceClaims"
        | "secrets"
        | "drivers"
        | "allocatedResourcesStatus"
        | "matchConditions"
        | "webhooks"
        | "variables" => MergeOnKey("name"),
        "ports" if in_service_spec => MergeOnKey("port"),
        "ports" => MergeOnKey("containerPort"),
        "volumeMounts" => MergeOnKey("mountPath"),
        "volumeDevices" => MergeOnKey("devicePath"),
        "hostAliases" | "podIPs" | "hostIPs" => MergeOnKey("ip"),
        "topologySpreadConstraints" => MergeOnKey("topologyKey"),
        "conditions" | "addresses" => MergeOnKey("type"),
        "ownerReferences" | "reservedFor" => MergeOnKey("uid"),
        "finalizers" | "podCIDRs" => MergeSet,
        _ => Replace,
    }
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `target` (an object of kind `kind`).
pub fn apply(kind: &str, target: &mut Value, patch: &Value) -> ApiResult<()> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
    };
    let original = std::mem::take(target);
    let original = match original {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let context = Context {
        service: kind == "Service",
        path: Vec::new(),
    };
    *target = match merge_map(original, patch, &context)? {
        Some(m) => Value::Object(m),
        None => Value::Object(Map::new()),
    };
    Ok(())
}

struct Context {
    service: bool,
    /// Field names from the root to here.
    path: Vec<String>,
}

impl Context {
    fn child(&self, field: &str) -> Context {
        let mut path = self.path.clone();
        path.push(field.to_string());
        Context {
            service: self.service,
            path,
        }
    }

    fn strategy(&self, field: &str) -> ListStrategy {
        let in_service_spec = self.service && self.path.len() == 1 && self.path[0] == "spec";
        list_strategy(field, in_service_spec)
    }
}

/// Merges a patch map into an original map; `None` when the patch deletes the map.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    ctx: &Context,
) -> ApiResult<Option<Map<String, Value>>> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(Some(strip_directives(replaced)));
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!("unknown patch type: {other:?}")));
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| ApiError::bad_request("$retainKeys must be a list"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            let doomed = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let child_ctx = ctx.child(key);
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, &child_ctx)?.map(Value::Object),
            (Some(Value::Array(o)), Value::Array(p)) => {
                Some(Value::Array(merge_list(o, p, ctx.strategy(key), &child_ctx)?))
            }
            (None, Value::Array(p)) => Some(Value::Array(merge_list(Vec::new(), p, ctx.strategy(key), &child_ctx)?)),
            (_, Value::Object(p)) => merge_map(Map::new(), p, &child_ctx)?.map(Value::Object),
            (_, v) => Some(v.clone()),
        };
        if let Some(v) = merged {
            original.insert(key.clone(), v);
        }
    }
    // Orders last, once every list holds its final items.
    for (key, order) in patch.iter().filter(|(k, _)| k.starts_with(SET_ORDER)) {
        let field = &key[SET_ORDER.len()..];
        if let (Some(Value::Array(items)), Some(order)) = (original.get_mut(field), order.as_array()) {
            let strategy = ctx.strategy(field);
            reorder(items, order, strategy);
        }
    }
    Ok(Some(original))
}

fn merge_list(original: Vec<Value>, patch: &[Value], strategy: ListStrategy, ctx: &Context) -> ApiResult<Vec<Value>> {
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().cloned().map(strip_value).collect()),
        ListStrategy::MergeSet => {
            let mut out = original;
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeOnKey(merge_key) => {
            if patch
                .iter()
                .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch
                    .iter()
                    .filter(|p| p.get("$patch").is_none())
                    .cloned()
                    .map(strip_value)
                    .collect());
            }
            let mut out = original;
            for item in patch {
                let Value::Object(item_map) = item else {
                    // A scalar in a keyed list: nothing to key on, keep it as a value.
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                    continue;
                };
                let key_value = item_map.get(merge_key);
                let position = key_value.and_then(|kv| out.iter().position(|o| o.get(merge_key) == Some(kv)));
                let deleting = item_map.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, deleting) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let existing = match out.remove(i) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        if let Some(merged) = merge_map(existing, item_map, ctx)? {
                            out.insert(i, Value::Object(merged));
                        }
                    }
                    (None, false) => {
                        if let Some(merged) = merge_map(Map::new(), item_map, ctx)? {
                            out.push(Value::Object(merged));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Puts the items named by `$setElementOrder` first, in that order; the rest keep theirs.
fn reorder(items: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> usize {
        let found = match strategy {
            ListStrategy::MergeOnKey(k) => order.iter().position(|o| o.get(k).is_some() && o.get(k) == item.get(k)),
            _ => order.iter().position(|o| o == item),
        };
        found.unwrap_or(usize::MAX)
    };
    // A stable sort keeps unlisted items in their order, after the listed ones.
    items.sort_by_key(rank);
}

fn strip_value(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        other => other,
    }
}

/// Drops directive keys from a map that replaces what was there.
fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(kind: &str, original: Value, patch: Value) -> Value {
        let mut target = original;
        apply(kind, &mut target, &patch).unwrap();
        target
    }

    fn deployment(containers: Value) -> Value {
        json!({"spec": {"replicas": 1, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name_keeping_other_fields() {
        let live = deployment(
            json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
        );
        // What kubectl apply sends after the image changed and env A was dropped.
        let patch = json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{"$setElementOrder/env": [{"name": "B"}], "env": [{"name": "B", "value": "3"}, {"$patch": "delete", "name": "A"}],
                            "image": "nginx:1.28", "name": "nginx"}]}}}});
        let out = patched("Deployment", live, patch);
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.28");
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80}]),
            "fields the patch does not mention stay"
        );
        assert_eq!(c["env"], json!([{"name": "B", "value": "3"}]));
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(!out.to_string().contains('$'), "no directive may be stored: {out}");
    }

    #[test]
    fn new_items_append_and_order_is_set() {
        let live = deployment(json!([{"name": "a", "image": "x"}]));
        let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b", "image": "y"}]}}}});
        let out = patched("Deployment", live, patch);
        let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, [json!("b"), json!("a")]);
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let live = json!({"spec": {"tolerations": [{"key": "a"}], "containers": []}});
        let out = patched("Pod", live, json!({"spec": {"tolerations": [{"key": "b"}]}}));
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
    }

    #[test]
    fn service_ports_merge_on_port() {
        let live = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = patched(
            "Service",
            live,
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30001}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "nodePort": 30001}, {"port": 443}])
        );
    }

    #[test]
    fn directives() {
        // $patch: replace on a map, $retainKeys, null deletes, primitive-list set merge and removal.
        let live = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
                          "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"y": null}},
                           "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = patched("Deployment", live, patch);
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = patched(
            "Pod",
            json!({"spec": {"a": 1, "b": 2}}),
            json!({"spec": {"$patch": "replace", "c": 3}}),
        );
        assert_eq!(out["spec"], json!({"c": 3}));
    }
}
