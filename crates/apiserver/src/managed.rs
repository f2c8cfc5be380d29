//! `metadata.managedFields` for Update operations (create, update, patch): which manager set
//! which fields, in the upstream `FieldsV1` encoding (`f:<field>`, `k:{<keys>}` for items of
//! keyed lists, `v:<value>` for items of sets, `.` for a list item itself).
//!
//! A write's manager owns every field the write changed, plus what it owned before and still
//! exists; the fields it changed leave every other manager's set.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::kinds::Kind;
use crate::object::{self, metadata_mut};
use crate::strategic::{ListStrategy, list_strategy};

/// A path to one owned field: its `FieldsV1` keys from the root.
pub(crate) type FieldPath = Vec<String>;

/// Metadata fields managed fields never list (upstream strips these: the server owns them, or
/// they identify the object).
const SERVER_METADATA: &[&str] = &[
    "name",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
];

/// Records the write that turned `before` (absent on create) into `after`.
pub fn record(kind: &Kind, before: Option<&Value>, after: &mut Value, manager: &str, subresource: Option<&str>) {
    let new_paths = paths(kind, after, subresource);
    let old_paths = before.map(|b| paths(kind, b, subresource)).unwrap_or_default();
    // A field changed when it is new or its value differs.
    let changed: BTreeSet<FieldPath> = new_paths
        .iter()
        .filter(|p| !old_paths.contains(*p) || value_at(before, p) != value_at(Some(after), p))
        .cloned()
        .collect();

    // The entries to start from: what the client sent if it set them, else the stored ones.
    let incoming = object::metadata(after).and_then(|m| m.get("managedFields")).cloned();
    let stored = before
        .and_then(object::metadata)
        .and_then(|m| m.get("managedFields"))
        .cloned();
    let base = match (&incoming, &stored) {
        (Some(Value::Array(i)), s) if Some(&Value::Array(i.clone())) != s.as_ref() => i.clone(),
        (_, Some(Value::Array(s))) => s.clone(),
        _ => Vec::new(),
    };
    let api_version = kind.api_version();
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Update"
            && e["apiVersion"] == api_version.as_str()
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut mine: BTreeSet<FieldPath> = base
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(|e| decode(&e["fieldsV1"]))
        .filter(|p| new_paths.contains(p))
        .collect();
    mine.extend(changed.iter().cloned());

    let others = base.into_iter().filter(|e| !is_mine(e));
    // Fields outside what this write can change (the spec, for a status write) stay whoever's
    // they were.
    let in_scope = |p: &FieldPath| {
        let status_field = p.first().is_some_and(|f| f == "f:status");
        match subresource {
            Some("status") => status_field,
            _ => !(status_field && kind.has_status()),
        }
    };
    let mut entries = others_keeping(others, |p| {
        !changed.contains(p) && (new_paths.contains(p) || !in_scope(p))
    });
    if !mine.is_empty() {
        entries.push(new_entry(manager, "Update", &api_version, subresource, &mine));
    }
    store_entries(after, entries);
}

/// The entries of other managers, each keeping the fields `keep` allows; those left with
/// none are dropped.
fn others_keeping(entries: impl Iterator<Item = Value>, keep: impl Fn(&FieldPath) -> bool) -> Vec<Value> {
    entries
        .filter_map(|entry| {
            let remaining: BTreeSet<FieldPath> = decode(&entry["fieldsV1"]).into_iter().filter(|p| keep(p)).collect();
            if remaining.is_empty() {
                return None;
            }
            let mut kept = entry;
            kept["fieldsV1"] = encode(&remaining);
            Some(kept)
        })
        .collect()
}

/// A managedFields entry written now.
fn new_entry(
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    fields: &BTreeSet<FieldPath>,
) -> Value {
    let mut entry = Map::new();
    entry.insert("manager".into(), json!(manager));
    entry.insert("operation".into(), json!(operation));
    entry.insert("apiVersion".into(), json!(api_version));
    entry.insert("time".into(), json!(object::now_rfc3339()));
    entry.insert("fieldsType".into(), json!("FieldsV1"));
    entry.insert("fieldsV1".into(), encode(fields));
    if let Some(sub) = subresource {
        entry.insert("subresource".into(), json!(sub));
    }
    Value::Object(entry)
}

/// Records a server-side apply by `manager` that turned `before` (absent on create) into
/// `after`: the manager's Apply entry becomes exactly `applied` (the fields of its applied
/// configuration); `forced` (conflicting fields taken with `force=true`) leave every other
/// manager; fields no longer in the object leave everyone.
pub fn record_apply(
    kind: &Kind,
    before: Option<&Value>,
    after: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    applied: &BTreeSet<FieldPath>,
    forced: &BTreeSet<FieldPath>,
) {
    // Other managers may own fields on either side of the status split.
    let mut new_paths = paths(kind, after, None);
    new_paths.extend(paths(kind, after, Some("status")));
    let others = before
        .map(entries_of)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !is_apply_entry_of(e, manager, subresource));
    let mut entries = others_keeping(others, |p| !forced.contains(p) && new_paths.contains(p));
    entries.push(new_entry(manager, "Apply", &kind.api_version(), subresource, applied));
    store_entries(after, entries);
}

/// The managedFields entries of an object.
pub(crate) fn entries_of(object: &Value) -> Vec<Value> {
    object::metadata(object)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether two objects' managed fields say the same, apart from when each entry was written.
pub(crate) fn same_ownership(a: &Value, b: &Value) -> bool {
    let timeless = |o: &Value| {
        let mut entries = entries_of(o);
        for e in &mut entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
        entries
    };
    timeless(a) == timeless(b)
}

/// Whether `entry` is `manager`'s Apply entry for `subresource` (None: the main resource).
pub(crate) fn is_apply_entry_of(entry: &Value, manager: &str, subresource: Option<&str>) -> bool {
    entry["manager"] == manager
        && entry["operation"] == "Apply"
        && entry.get("subresource").and_then(Value::as_str) == subresource
}

/// Stores `entries` in upstream's order: Apply before Update, then by time, manager and
/// apiVersion.
fn store_entries(object: &mut Value, mut entries: Vec<Value>) {
    entries.sort_by(|p, q| {
        let key = |e: &Value| {
            (
                e["operation"].as_str().unwrap_or("").to_string(),
                e["time"].as_str().unwrap_or("").to_string(),
                e["manager"].as_str().unwrap_or("").to_string(),
                e["apiVersion"].as_str().unwrap_or("").to_string(),
            )
        };
        key(p).cmp(&key(q))
    });
    let meta = metadata_mut(object);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// Every leaf path of an object, as managed fields list them: a status write owns status only;
/// any other write of a kind with a status subresource owns everything but status.
pub(crate) fn paths(kind: &Kind, object: &Value, subresource: Option<&str>) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(root) = object.as_object() else { return out };
    let status_write = subresource == Some("status");
    for (key, value) in root {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        if (key == "status") != status_write && (status_write || kind.has_status()) {
            continue;
        }
        if key == "metadata" {
            if let Some(meta) = value.as_object() {
                for (k, v) in meta.iter().filter(|(k, _)| !SERVER_METADATA.contains(&k.as_str())) {
                    walk(kind, k, v, vec!["f:metadata".into(), format!("f:{k}")], &mut out);
                }
            }
            continue;
        }
        walk(kind, key, value, vec![format!("f:{key}")], &mut out);
    }
    out
}

fn walk(kind: &Kind, name: &str, value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut child = path.clone();
                child.push(format!("f:{k}"));
                walk(kind, k, v, child, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let in_service_spec = kind.kind == "Service" && path.first().map(String::as_str) == Some("f:spec");
            match list_strategy(name, in_service_spec) {
                ListStrategy::MergeOnKey(key) => {
                    for item in items {
                        let mut element = path.clone();
                        element.push(format!("k:{}", Value::Object(list_item_key(name, item, key))));
                        let mut dot = element.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        if let Value::Object(fields) = item {
                            for (k, v) in fields {
                                let mut child = element.clone();
                                child.push(format!("f:{k}"));
                                walk(kind, k, v, child, out);
                            }
                        }
                    }
                }
                ListStrategy::MergeSet => {
                    for item in items {
                        let mut element = path.clone();
                        element.push(format!("v:{item}"));
                        out.insert(element);
                    }
                }
                ListStrategy::Replace => {
                    out.insert(path);
                }
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The key of an item of the keyed list `name` (merge key `key`), as managed fields and
/// server-side apply name it. Ports are keyed by port and protocol, the protocol defaulting to
/// TCP (upstream's defaulted list-map key).
pub(crate) fn list_item_key(name: &str, item: &Value, key: &str) -> Map<String, Value> {
    let mut keys = Map::new();
    if let Some(k) = item.get(key) {
        keys.insert(key.into(), k.clone());
    }
    if name == "ports" {
        keys.insert(
            "protocol".into(),
            item.get("protocol").cloned().unwrap_or_else(|| json!("TCP")),
        );
    }
    keys
}

/// An item's value for one of its list's key fields; a port's protocol defaults to TCP.
pub(crate) fn key_field(item: &Value, key: &str) -> Option<Value> {
    match item.get(key) {
        Some(v) => Some(v.clone()),
        None if key == "protocol" => Some(json!("TCP")),
        None => None,
    }
}

/// The value at a managed-fields path, for telling changed fields from unchanged ones.
pub(crate) fn value_at<'a>(object: Option<&'a Value>, path: &FieldPath) -> Option<&'a Value> {
    let mut here = object?;
    for step in path {
        here = if let Some(field) = step.strip_prefix("f:") {
            here.get(field)?
        } else if let Some(keys) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
            here.as_array()?
                .iter()
                .find(|item| keys.iter().all(|(k, v)| key_field(item, k).as_ref() == Some(v)))?
        } else if let Some(v) = step.strip_prefix("v:") {
            let wanted: Value = serde_json::from_str(v).ok()?;
            here.as_array()?.iter().find(|item| **item == wanted)?
        } else {
            here
        };
    }
    Some(here)
}

pub(crate) fn encode(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut here = &mut root;
        for step in path {
            here = here
                .entry(step.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("only objects here");
        }
    }
    Value::Object(root)
}

pub(crate) fn decode(fields: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    fn go(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    go(v, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    go(fields, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    fn deployments() -> &'static Kind {
        kinds::find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn create_owns_everything_the_client_set() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "x", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        record(deployments(), None, &mut d, "kubectl-create", None);
        let entries = d["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let f = &entries[0]["fieldsV1"];
        assert!(f["f:metadata"]["f:labels"]["f:app"].is_object());
        assert!(f["f:metadata"].get("f:uid").is_none());
        let container = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert!(container["."].is_object() && container["f:image"].is_object());
        assert!(container["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["."].is_object());
        assert_eq!(entries[0]["operation"], "Update");
        assert_eq!(entries[0]["apiVersion"], "apps/v1");
    }

    #[test]
    fn a_second_manager_takes_the_fields_it_changes() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "paused": false}});
        record(deployments(), None, &mut d, "a", None);
        let before = d.clone();
        let mut after = d.clone();
        after["spec"]["replicas"] = json!(3);
        record(deployments(), Some(&before), &mut after, "b", None);
        let entries = after["metadata"]["managedFields"].as_array().unwrap();
        let of = |m: &str| entries.iter().find(|e| e["manager"] == m).unwrap()["fieldsV1"].clone();
        assert!(of("a")["f:spec"].get("f:replicas").is_none());
        assert!(of("a")["f:spec"]["f:paused"].is_object());
        assert!(of("b")["f:spec"]["f:replicas"].is_object());
        assert!(of("b")["f:spec"].get("f:paused").is_none());
    }

    #[test]
    fn a_status_write_leaves_the_spec_owners_alone() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        record(deployments(), None, &mut d, "kubectl", None);
        let before = d.clone();
        let mut after = d.clone();
        after["status"] = json!({"replicas": 1});
        record(
            deployments(),
            Some(&before),
            &mut after,
            "kube-controller-manager",
            Some("status"),
        );
        let entries = after["metadata"]["managedFields"].as_array().unwrap();
        let of = |m: &str| {
            entries
                .iter()
                .find(|e| e["manager"] == m)
                .unwrap_or_else(|| panic!("no {m}: {entries:?}"))["fieldsV1"]
                .clone()
        };
        assert!(of("kubectl")["f:spec"]["f:replicas"].is_object());
        assert!(of("kube-controller-manager")["f:status"]["f:replicas"].is_object());
    }
}
