//! Server-side apply (`application/apply-patch+yaml`): merging a manager's applied
//! configuration into the live object, field ownership and conflicts, as structured-merge-diff
//! does upstream.
//!
//! - The manager's applied configuration names the fields it owns ([`managed::paths`]).
//! - A field it sets to a value different from the live one, owned by another manager, is a
//!   conflict (409 listing each manager and field) unless `force=true`, which takes it over.
//! - The configuration merges into the live object with the kind's list semantics: maps field
//!   by field, keyed lists item by item, sets by union, everything else replaced.
//! - A field the manager applied before and applies no more is removed, unless another
//!   manager owns it too.
//!
//! [`plan`] is pure; the registry stores its result and records ownership with
//! [`managed::record_apply`].

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::kinds::Kind;
use crate::managed::{self, FieldPath};
use crate::status::{ApiError, Cause};
use crate::strategic::{ListStrategy, list_strategy};

/// What an apply does to a live object.
pub struct Plan {
    /// The live object with the configuration merged in and abandoned fields removed.
    pub object: Value,
    /// The fields of the applied configuration: the manager's Apply entry.
    pub applied: BTreeSet<FieldPath>,
    /// Conflicting fields taken from other managers with `force`.
    pub forced: BTreeSet<FieldPath>,
}

/// The fields an applied configuration sets: for the main resource everything but status (of
/// a kind with a status subresource); for `status`, status only.
pub fn applied_fields(kind: &Kind, config: &Value, subresource: Option<&str>) -> BTreeSet<FieldPath> {
    managed::paths(kind, config, subresource)
}

/// Plans `manager`'s apply of `config` to `live` (through `subresource`, if any); a conflict
/// is an error unless `force`.
pub fn plan(
    kind: &Kind,
    live: &Value,
    config: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
) -> Result<Plan, ApiError> {
    let applied = applied_fields(kind, config, subresource);
    let entries = managed::entries_of(live);
    let others: Vec<(&Value, BTreeSet<FieldPath>)> = entries
        .iter()
        .filter(|e| !managed::is_apply_entry_of(e, manager, subresource))
        .map(|e| (e, managed::decode(&e["fieldsV1"])))
        .collect();

    // Conflicts: fields applied with another value than the live one, owned by someone else.
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    let mut forced = BTreeSet::new();
    for path in &applied {
        if path.last().map(String::as_str) == Some(".") {
            continue;
        }
        let live_value = managed::value_at(Some(live), path);
        if live_value.is_none() || live_value == managed::value_at(Some(config), path) {
            continue;
        }
        for (entry, fields) in &others {
            if fields.contains(path) {
                conflicts.push((manager_name(entry), path.clone()));
                forced.insert(path.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }

    let mut object = merge(kind, live, config);
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| managed::is_apply_entry_of(e, manager, subresource))
        .flat_map(|e| managed::decode(&e["fieldsV1"]))
        .collect();
    let kept_by_others: BTreeSet<&FieldPath> = others
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .filter(|p| !forced.contains(*p))
        .collect();
    // Deepest first, so an item's fields go before the item.
    let mut abandoned: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied.contains(*p) && !kept_by_others.contains(p))
        .collect();
    abandoned.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in abandoned {
        remove(&mut object, path);
    }
    Ok(Plan {
        object,
        applied,
        forced,
    })
}

/// Merges `config` into `live`: maps by field, keyed lists by item, sets by union; anything
/// else the configuration sets replaces the live value. A null in the configuration removes
/// the field.
pub fn merge(kind: &Kind, live: &Value, config: &Value) -> Value {
    merge_value(kind, "", Some(live), config, false)
}

fn merge_value(kind: &Kind, name: &str, live: Option<&Value>, config: &Value, in_service_spec: bool) -> Value {
    match (live, config) {
        (Some(Value::Object(live)), Value::Object(config)) => {
            let mut out = live.clone();
            for (key, value) in config {
                if value.is_null() {
                    out.remove(key);
                    continue;
                }
                let service_spec = in_service_spec || (name.is_empty() && kind.kind == "Service" && key == "spec");
                let merged = merge_value(kind, key, live.get(key), value, service_spec);
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(live)), Value::Array(config)) => match list_strategy(name, in_service_spec) {
            ListStrategy::MergeOnKey(key) => {
                let mut out = live.clone();
                for item in config {
                    let wanted = managed::list_item_key(name, item, key);
                    match out.iter().position(|x| managed::list_item_key(name, x, key) == wanted) {
                        Some(i) => {
                            let merged = merge_value(kind, "", Some(&out[i]), item, in_service_spec);
                            out[i] = merged;
                        }
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            ListStrategy::MergeSet => {
                let mut out = live.clone();
                for item in config {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListStrategy::Replace => Value::Array(config.clone()),
        },
        _ => config.clone(),
    }
}

/// Removes the field, list item or set member at `path`, and any map or list left empty by it.
fn remove(object: &mut Value, path: &FieldPath) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    // An item itself (`k:{...}/.`) goes from its list.
    let (last, parent) = if last == "." {
        match parent.split_last() {
            Some((item, list)) => (item, list),
            None => return,
        }
    } else {
        (last, parent)
    };
    let Some(container) = navigate(object, parent) else {
        return;
    };
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = container.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(keys) = last.strip_prefix("k:") {
        let Ok(keys) = serde_json::from_str::<Map<String, Value>>(keys) else {
            return;
        };
        if let Some(items) = container.as_array_mut() {
            items.retain(|item| {
                !keys
                    .iter()
                    .all(|(k, v)| managed::key_field(item, k).as_ref() == Some(v))
            });
        }
    } else if let Some(value) = last.strip_prefix("v:") {
        let Ok(value) = serde_json::from_str::<Value>(value) else {
            return;
        };
        if let Some(items) = container.as_array_mut() {
            items.retain(|item| *item != value);
        }
    }
    let now_empty = match &*container {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if now_empty && !parent.is_empty() && parent.last().is_some_and(|s| s.starts_with("f:")) {
        remove(object, &parent.to_vec());
    }
}

fn navigate<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut here = object;
    for step in path {
        here = if let Some(field) = step.strip_prefix("f:") {
            here.get_mut(field)?
        } else if let Some(keys) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
            here.as_array_mut()?.iter_mut().find(|item| {
                keys.iter()
                    .all(|(k, v)| managed::key_field(item, k).as_ref() == Some(v))
            })?
        } else if let Some(v) = step.strip_prefix("v:") {
            let wanted: Value = serde_json::from_str(v).ok()?;
            here.as_array_mut()?.iter_mut().find(|item| **item == wanted)?
        } else {
            here
        };
    }
    Some(here)
}

/// How upstream names a manager in conflicts: `"kubectl"` for an applier, `"kubectl-edit"
/// using apps/v1` for an updater (and `with subresource "status"`).
fn manager_name(entry: &Value) -> String {
    let mut name = format!("{:?}", entry["manager"].as_str().unwrap_or(""));
    if let Some(sub) = entry.get("subresource").and_then(Value::as_str) {
        name = format!("{name} with subresource {sub:?}");
    }
    if entry["operation"] == "Update" {
        name = format!("{name} using {}", entry["apiVersion"].as_str().unwrap_or(""));
    }
    name
}

/// A managed-fields path as upstream prints it: `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &FieldPath) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(field) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(keys) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = step.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// The 409 upstream answers a conflicting apply with.
fn conflict_error(conflicts: &[(String, FieldPath)]) -> ApiError {
    let message = if let [(manager, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            path_string(path)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {manager}:"));
            for (_, path) in conflicts.iter().filter(|(m, _)| m == manager) {
                lines.push(format!("- {}", path_string(path)));
            }
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|(manager, path)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {manager}"),
            field: path_string(path),
        })
        .collect();
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds;

    fn deployments() -> &'static Kind {
        kinds::find("apps", "v1", "deployments").unwrap()
    }

    fn config(replicas: i64, image: &str, env: Option<&str>) -> Value {
        let mut container = json!({"name": "web", "image": image});
        if let Some(e) = env {
            container["env"] = json!([{"name": e, "value": "1"}]);
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [container]}}}})
    }

    /// The live object after `manager` applied `config` to `live` (None: created by it).
    fn applied(live: Option<&Value>, config: &Value, manager: &str, force: bool) -> Result<Value, ApiError> {
        let kind = deployments();
        let (mut object, applied, forced) = match live {
            None => (config.clone(), applied_fields(kind, config, None), BTreeSet::new()),
            Some(live) => {
                let p = plan(kind, live, config, manager, None, force)?;
                (p.object, p.applied, p.forced)
            }
        };
        managed::record_apply(kind, live, &mut object, manager, None, &applied, &forced);
        Ok(object)
    }

    fn managers(object: &Value) -> Vec<String> {
        managed::entries_of(object)
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["manager"].as_str().unwrap(),
                    e["operation"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn two_managers_own_different_fields() {
        let a = applied(None, &config(1, "nginx", None), "a", false).unwrap();
        // b applies only replicas, with the same value: shared, no conflict.
        let b_config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                              "spec": {"replicas": 1}});
        let both = applied(Some(&a), &b_config, "b", false).unwrap();
        assert_eq!(managers(&both), ["a/Apply", "b/Apply"]);
        assert_eq!(both["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
    }

    #[test]
    fn a_different_value_for_anothers_field_conflicts_unless_forced() {
        let a = applied(None, &config(1, "nginx", None), "a", false).unwrap();
        let err = applied(Some(&a), &config(3, "nginx", None), "b", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            r#"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#
        );
        let taken = applied(Some(&a), &config(3, "nginx", None), "b", true).unwrap();
        assert_eq!(taken["spec"]["replicas"], 3);
        let a_fields = managed::decode(&managed::entries_of(&taken)[0]["fieldsV1"]);
        assert!(!a_fields.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
    }

    #[test]
    fn a_field_no_longer_applied_is_removed() {
        let first = applied(None, &config(1, "nginx", Some("DEBUG")), "a", false).unwrap();
        assert_eq!(
            first["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"],
            "DEBUG"
        );
        let second = applied(Some(&first), &config(1, "nginx", None), "a", false).unwrap();
        assert!(
            second["spec"]["template"]["spec"]["containers"][0].get("env").is_none(),
            "{second}"
        );
    }

    #[test]
    fn keyed_lists_merge_by_key_across_managers() {
        let a = applied(None, &config(1, "nginx", None), "a", false).unwrap();
        let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox",
                "ports": [{"containerPort": 9000}]}]}}}});
        let both = applied(Some(&a), &sidecar, "b", false).unwrap();
        let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "log"]);
        // a re-applies without knowing about b's container: it stays.
        let again = applied(Some(&both), &config(1, "nginx:2", None), "a", false).unwrap();
        assert_eq!(
            again["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(again["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
    }

    #[test]
    fn paths_print_as_upstream() {
        let path: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            r#"k:{"name":"web"}"#.into(),
            "f:ports".into(),
            r#"k:{"containerPort":80,"protocol":"TCP"}"#.into(),
            "f:hostPort".into(),
        ];
        assert_eq!(
            path_string(&path),
            r#".spec.containers[name="web"].ports[containerPort=80,protocol="TCP"].hostPort"#
        );
    }
}
