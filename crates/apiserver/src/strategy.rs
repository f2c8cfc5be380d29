//! What differs per kind in the generic registry, as kube-apiserver's per-kind strategies:
//! which fields the server owns, what create and update reset, when `generation` moves, how a
//! deletion is deferred.

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::object::{self, meta_str, metadata, metadata_mut};
use crate::selectors::is_dns_label;
use crate::status::{ApiError, ApiResult, Cause};

/// Kinds whose `metadata.generation` counts spec changes (the spec/status kinds of the
/// workload APIs and a few others; pods do not track it in 1.33).
fn tracks_generation(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("apps", _)
            | ("batch", _)
            | ("", "ReplicationController")
            | ("policy", "PodDisruptionBudget")
            | ("networking.k8s.io", "NetworkPolicy" | "Ingress" | "IngressClass")
            | ("autoscaling", "HorizontalPodAutoscaler")
    )
}

/// Namespaces and services are DNS labels; everything else a DNS subdomain.
pub fn validate_name(kind: &Kind, name: &str) -> ApiResult<()> {
    let label_only = matches!((kind.group, kind.kind), ("", "Namespace" | "Service"));
    let ok = if label_only {
        is_dns_label(name)
    } else {
        name.len() <= 253 && name.split('.').all(is_dns_label)
    };
    if ok {
        return Ok(());
    }
    let rule = if label_only {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
    Err(ApiError::invalid(
        kind,
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{name}\": {rule}"),
            field: "metadata.name".into(),
        }],
    ))
}

/// Fills in what the server owns on a new object and resets what a client may not set.
pub fn prepare_for_create(kind: &Kind, object: &mut Value) {
    let meta = metadata_mut(object);
    for owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(owned);
    }
    drop_empty_lists_and_maps(meta);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    if tracks_generation(kind) {
        meta.insert("generation".into(), json!(1));
    }
    let root = object.as_object_mut().expect("objects are JSON objects");
    match (kind.group, kind.kind) {
        ("", "Namespace") => {
            root.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "Pod") => {
            root.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "Service") => {
            root.insert("status".into(), json!({"loadBalancer": {}}));
        }
        // Nodes report their own status at registration.
        ("", "Node") => {}
        _ if kind.has_status() => {
            root.insert("status".into(), json!({}));
        }
        _ => {}
    }
    crate::always_present::fill(object);
}

/// Metadata lists and maps are `omitempty` upstream: once empty (the last owner reference
/// removed, say), they are gone, not `[]`.
fn drop_empty_lists_and_maps(meta: &mut serde_json::Map<String, Value>) {
    for field in [
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ] {
        let empty = match meta.get(field) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

/// The object an update stores: `incoming` with what the server owns carried over from
/// `current`, and only the part the (sub)resource may change.
/// A pod's `ephemeralcontainers` write: the current pod with the incoming ephemeral
/// containers, which may only add to those it has (upstream's ValidatePodEphemeralContainersUpdate):
/// none changed or removed, names unique across the pod, and none of what an ephemeral
/// container may not have (ports, probes, lifecycle, resources).
fn add_ephemeral_containers(kind: &Kind, current: &Value, incoming: &Value) -> ApiResult<Value> {
    let field = "spec.ephemeralContainers";
    let list = |pod: &Value, key: &str| pod["spec"][key].as_array().cloned().unwrap_or_default();
    let (old, new) = (
        list(current, "ephemeralContainers"),
        list(incoming, "ephemeralContainers"),
    );
    let name_of = |c: &Value| c["name"].as_str().unwrap_or("").to_string();
    let mut causes = Vec::new();
    let mut cause = |reason: &str, field: String, message: String| {
        causes.push(Cause {
            reason: reason.into(),
            message,
            field,
        })
    };
    for before in &old {
        match new.iter().find(|c| name_of(c) == name_of(before)) {
            Some(after) if after == before => {}
            Some(_) => cause(
                "FieldValueForbidden",
                field.into(),
                format!(
                    "Forbidden: existing ephemeral containers \"{}\" may not be changed",
                    name_of(before)
                ),
            ),
            None => cause(
                "FieldValueForbidden",
                field.into(),
                format!(
                    "Forbidden: existing ephemeral containers \"{}\" may not be removed",
                    name_of(before)
                ),
            ),
        }
    }
    let mut names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|key| list(current, key))
        .map(|c| name_of(&c))
        .collect();
    for (i, added) in new.iter().enumerate() {
        let name = name_of(added);
        if old.iter().any(|c| name_of(c) == name) {
            continue;
        }
        let at = format!("{field}[{i}]");
        if !is_dns_label(&name) {
            cause(
                "FieldValueInvalid",
                format!("{at}.name"),
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 label"),
            );
        } else if names.contains(&name) {
            cause(
                "FieldValueDuplicate",
                format!("{at}.name"),
                format!("Duplicate value: \"{name}\""),
            );
        }
        names.push(name);
        if added["image"].as_str().is_none_or(str::is_empty) {
            cause("FieldValueRequired", format!("{at}.image"), "Required value".into());
        }
        for forbidden in ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle"] {
            if added.get(forbidden).is_some_and(|v| !v.is_null()) {
                cause(
                    "FieldValueForbidden",
                    format!("{at}.{forbidden}"),
                    "Forbidden: cannot be set for an Ephemeral Container".into(),
                );
            }
        }
        if added["resources"]
            .as_object()
            .is_some_and(|r| r.values().any(|v| !v.is_null()))
        {
            cause(
                "FieldValueForbidden",
                format!("{at}.resources"),
                "Forbidden: cannot be set for an Ephemeral Container".into(),
            );
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(kind, meta_str(current, "name").unwrap_or(""), causes));
    }
    let mut updated = current.clone();
    updated["spec"]["ephemeralContainers"] = Value::Array(new);
    Ok(updated)
}

pub fn prepare_for_update(
    kind: &Kind,
    subresource: Option<&str>,
    current: &Value,
    incoming: Value,
) -> ApiResult<Value> {
    let mut updated = match subresource {
        Some("status") => {
            let mut updated = current.clone();
            updated["status"] = incoming.get("status").cloned().unwrap_or(json!({}));
            updated
        }
        Some("finalize") => {
            let mut updated = current.clone();
            set_namespace_finalizers(&mut updated, namespace_finalizers(&incoming));
            updated
        }
        Some("ephemeralcontainers") => add_ephemeral_containers(kind, current, &incoming)?,
        Some(sub) if sub != "scale" => return Err(ApiError::method_not_allowed()),
        // The main resource, or `scale`, whose caller built the whole object.
        _ => {
            let mut updated = incoming;
            if kind.has_status() {
                match current.get("status") {
                    Some(status) => updated["status"] = status.clone(),
                    None => {
                        if let Some(o) = updated.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if is_namespace(kind) {
                // A namespace's spec.finalizers change through `finalize` only.
                set_namespace_finalizers(&mut updated, namespace_finalizers(current));
            }
            updated
        }
    };
    let current_meta = metadata(current).cloned().unwrap_or_default();
    let meta = metadata_mut(&mut updated);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
    ] {
        match current_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    meta.remove("resourceVersion");
    drop_empty_lists_and_maps(meta);
    if meta_str(current, "deletionTimestamp").is_some() {
        let before = object::finalizers(current);
        let added: Vec<String> = object::finalizers(&updated)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                kind,
                object::name(current),
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    crate::always_present::fill(&mut updated);
    if tracks_generation(kind) && object::spec_part(&updated) != object::spec_part(current) {
        let generation = current_meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        metadata_mut(&mut updated).insert("generation".into(), json!(generation));
    }
    // Compare without the resource version the current object carries.
    let mut current_plain = current.clone();
    metadata_mut(&mut current_plain).remove("resourceVersion");
    if updated == current_plain {
        return Ok(current.clone());
    }
    Ok(updated)
}

/// Namespaces the cluster cannot do without.
pub fn check_delete(kind: &Kind, name: &str) -> ApiResult<()> {
    if (kind.group, kind.kind) == ("", "Namespace") && matches!(name, "default" | "kube-system" | "kube-public") {
        return Err(ApiError::forbidden(kind, name, "this namespace may not be deleted"));
    }
    Ok(())
}

/// When a DELETE only marks the object (`deletionTimestamp`) and something else finishes it:
/// finalizers, propagation that needs the garbage collector, a namespace's content, a running
/// pod's graceful stop. `None` means delete now.
pub fn deferred_deletion(kind: &Kind, current: &Value, options: &Value) -> Option<Value> {
    let grace = options.get("gracePeriodSeconds").and_then(Value::as_i64);
    let is_pod = (kind.group, kind.kind) == ("", "Pod");
    if meta_str(current, "deletionTimestamp").is_some() {
        // Already being deleted: a forced pod deletion finishes it; otherwise nothing changes.
        return if is_pod && grace == Some(0) && object::finalizers(current).is_empty() {
            None
        } else {
            Some(current.clone())
        };
    }
    let mut marked = current.clone();
    let mut finalizers = object::finalizers(current);
    match options.get("propagationPolicy").and_then(Value::as_str) {
        Some("Foreground") => finalizers.push("foregroundDeletion".into()),
        Some("Orphan") => finalizers.push("orphan".into()),
        _ if options.get("orphanDependents") == Some(&json!(true)) => finalizers.push("orphan".into()),
        _ => {}
    }
    finalizers.dedup();
    // A namespace waits for its content to go (the namespace controller's `kubernetes`
    // finalizer); one without spec finalizers goes at once.
    let is_namespace = is_namespace(kind) && !namespace_finalizers(current).is_empty();
    let graceful_pod =
        is_pod && grace != Some(0) && current.pointer("/spec/nodeName").and_then(Value::as_str).is_some();
    if finalizers.is_empty() && !is_namespace && !graceful_pod {
        return None;
    }
    let meta = metadata_mut(&mut marked);
    meta.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
    let seconds = if graceful_pod {
        grace
            .or_else(|| {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
    } else {
        0
    };
    meta.insert("deletionGracePeriodSeconds".into(), json!(seconds));
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    if is_namespace {
        marked["status"] = json!({"phase": "Terminating"});
    }
    Some(marked)
}

fn is_namespace(kind: &Kind) -> bool {
    (kind.group, kind.kind) == ("", "Namespace")
}

/// A namespace's `spec.finalizers` (the content finalizers, apart from metadata.finalizers).
pub fn namespace_finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

fn set_namespace_finalizers(object: &mut Value, finalizers: Vec<String>) {
    let Some(root) = object.as_object_mut() else { return };
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        if finalizers.is_empty() {
            spec.remove("finalizers");
        } else {
            spec.insert("finalizers".into(), json!(finalizers));
        }
    }
}

/// An object being deleted goes once nothing holds it: no finalizers, and for a namespace no
/// content finalizers either.
pub fn nothing_holds(kind: &Kind, object: &Value) -> bool {
    object::finalizers(object).is_empty() && (!is_namespace(kind) || namespace_finalizers(object).is_empty())
}

/// Kinds whose DELETE answers with the deleted object rather than a Status.
pub fn returns_deleted_object(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("", "Pod" | "ServiceAccount") | ("storage.k8s.io", "StorageClass")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}], "ephemeralContainers": ephemeral}})
    }

    #[test]
    fn ephemeral_containers_are_only_added() {
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        let debugger = json!({"name": "debugger", "image": "busybox"});
        let current = pod(json!([]));
        let added = add_ephemeral_containers(pods, &current, &pod(json!([debugger]))).unwrap();
        assert_eq!(added["spec"]["ephemeralContainers"][0]["name"], "debugger");

        let changed = json!({"name": "debugger", "image": "other"});
        let e = add_ephemeral_containers(pods, &added, &pod(json!([changed]))).unwrap_err();
        assert_eq!(e.code, 422);
        let e = add_ephemeral_containers(pods, &added, &pod(json!([]))).unwrap_err();
        assert!(e.message.contains("may not be removed"), "{}", e.message);
        let clash = json!({"name": "app", "image": "busybox"});
        let e = add_ephemeral_containers(pods, &current, &pod(json!([clash]))).unwrap_err();
        assert!(e.message.contains("Duplicate value"), "{}", e.message);
        let probed = json!({"name": "d2", "image": "busybox", "ports": [{"containerPort": 80}]});
        let e = add_ephemeral_containers(pods, &current, &pod(json!([probed]))).unwrap_err();
        assert!(e.message.contains("ports: Forbidden"), "{}", e.message);
    }
}
