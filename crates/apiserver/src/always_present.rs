//! Fields Kubernetes always serializes. Go's API types write a field without `omitempty` even
//! when it holds its zero value, so `ReplicationController.status.replicas` reads `0`, never
//! absent, and clients generated from the OpenAPI schema (the Python client, among others)
//! refuse an object whose required field is missing. These are exactly the schema's `required`
//! fields; we put their zero values in every object we store, so that every reply (get, list,
//! watch, write replies, Tables) carries them without decoding on the way out.
//!
//! Zero values are Go's: `""`, `0`, `false`, `{}` for a struct (whose own required fields are
//! then filled), `"0"` for a Quantity, `0` for an IntOrString. Lists and maps become empty
//! (Go writes `null` for a nil slice, which the same clients also refuse). Times and raw
//! extensions, which Go writes as `null`, are left absent. A present `null` counts as absent,
//! as Go decodes it into the zero value.

use serde_json::{Map, Value, json};

use crate::schema::{self, Field, Kind, Message, Schema};

/// Fills the zero values of the required fields an object (with `apiVersion` and `kind`) lacks,
/// at every level where a typed value is present.
pub fn fill(object: &mut Value) {
    let schema = schema::schema();
    let message = match (
        object.get("apiVersion").and_then(Value::as_str),
        object.get("kind").and_then(Value::as_str),
    ) {
        (Some(api_version), Some(kind)) => schema.message_for(api_version, kind),
        _ => None,
    };
    if let (Some(message), Value::Object(map)) = (message, object) {
        fill_fields(schema, message, map);
    }
}

fn fill_fields(schema: &Schema, message: &Message, map: &mut Map<String, Value>) {
    for field in &message.fields {
        let Some(name) = field.json else {
            // An embedded struct: its fields are the parent's.
            if let Some(inner) = message_of(schema, &field.kind) {
                fill_fields(schema, inner, map);
            }
            continue;
        };
        let always = field.required || GO_VALUE_STRUCTS.contains(&(message.path, name));
        if always && map.get(name).is_none_or(Value::is_null) {
            match zero_value(field) {
                Some(zero) => map.insert(name.to_string(), zero),
                None => continue,
            };
        }
        let Some(value) = map.get_mut(name) else { continue };
        match (&field.kind, value) {
            (Kind::Map(inner), Value::Object(entries)) => {
                if let Some(inner) = message_of(schema, inner) {
                    entries.values_mut().for_each(|v| fill_value(schema, inner, v));
                }
            }
            (kind, Value::Array(items)) if field.repeated => {
                if let Some(inner) = message_of(schema, kind) {
                    items.iter_mut().for_each(|v| fill_value(schema, inner, v));
                }
            }
            (kind, value) => {
                if let Some(inner) = message_of(schema, kind) {
                    fill_value(schema, inner, value);
                }
            }
        }
    }
}

/// Struct-valued fields the schema calls optional that Go still always writes (a value, not a
/// pointer, in the Go type) and that generated clients still require: 1.33 made
/// `NetworkPolicySpec.podSelector` optional, the Python client 33 refuses it absent, and
/// kube-apiserver writes `podSelector: {}`.
const GO_VALUE_STRUCTS: &[(&str, &str)] = &[("api/networking/v1/NetworkPolicySpec", "podSelector")];

fn fill_value(schema: &Schema, message: &Message, value: &mut Value) {
    if let Value::Object(map) = value {
        fill_fields(schema, message, map);
    }
}

/// The message of a struct-typed field; `None` for scalars and for the types that serialize
/// as scalars (times, quantities, int-or-string, durations, raw JSON).
fn message_of<'s>(schema: &'s Schema, kind: &Kind) -> Option<&'s Message> {
    match kind {
        Kind::Message(path) if scalar_like(path).is_none() => schema.message(path),
        _ => None,
    }
}

/// A type written as a JSON scalar, with the zero value Go writes for it (`None`: `null`,
/// which we leave absent).
fn scalar_like(path: &str) -> Option<Option<Value>> {
    match path {
        "apimachinery/pkg/apis/meta/v1/Time"
        | "apimachinery/pkg/apis/meta/v1/MicroTime"
        | "apimachinery/pkg/runtime/RawExtension"
        | "apiextensions_apiserver/pkg/apis/apiextensions/v1/Json" => Some(None),
        "apimachinery/pkg/api/resource/Quantity" => Some(Some(json!("0"))),
        "apimachinery/pkg/util/intstr/IntOrString" => Some(Some(json!(0))),
        "apimachinery/pkg/apis/meta/v1/Duration" => Some(Some(json!("0s"))),
        _ => None,
    }
}

fn zero_value(field: &Field) -> Option<Value> {
    if field.repeated {
        return Some(json!([]));
    }
    Some(match &field.kind {
        Kind::String | Kind::Bytes => json!(""),
        Kind::Bool => json!(false),
        Kind::Int32 | Kind::Int64 | Kind::Double => json!(0),
        Kind::Map(_) => json!({}),
        Kind::Message(path) => match scalar_like(path) {
            Some(zero) => return zero,
            None => json!({}),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_and_nested_required_fields_appear() {
        let mut ds = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"conditions": [{"type": "X"}]},
        });
        fill(&mut ds);
        let status = &ds["status"];
        for counter in [
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
        ] {
            assert_eq!(status[counter], 0, "{counter}");
        }
        // A condition's required status is filled; its time stays absent, as Go writes null.
        assert_eq!(status["conditions"][0]["status"], "");
        assert!(status["conditions"][0].get("lastTransitionTime").is_none());
        // What was given stays as it was.
        assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["name"], "c");
    }

    #[test]
    fn nulls_count_as_absent_and_scalar_types_get_go_zeros() {
        let mut rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "status": {"replicas": null}});
        fill(&mut rc);
        assert_eq!(rc["status"]["replicas"], 0);
        let mut endpoints = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {}});
        fill(&mut endpoints);
        assert_eq!(endpoints["addressType"], "");
        assert_eq!(endpoints["endpoints"], json!([]));
    }

    #[test]
    fn value_structs_are_written_empty() {
        let mut policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "spec": {}});
        fill(&mut policy);
        assert_eq!(policy["spec"]["podSelector"], json!({}));
    }

    #[test]
    fn unknown_kinds_and_filled_objects_are_left_alone() {
        let mut other = json!({"apiVersion": "example.com/v1", "kind": "Thing", "spec": {}});
        let before = other.clone();
        fill(&mut other);
        assert_eq!(other, before);
        let mut rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "status": {"replicas": 3}});
        fill(&mut rc);
        let once = rc.clone();
        fill(&mut rc);
        assert_eq!(rc, once);
        assert_eq!(rc["status"]["replicas"], 3);
    }
}
