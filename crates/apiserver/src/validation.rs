//! Field validation (`fieldValidation=Strict|Warn|Ignore`): fields the kind's schema does not
//! have. Strict refuses the request (400, as kube-apiserver's strict decoding does); Warn (the
//! default) and Ignore drop them, Warn with a `Warning` header each, as decoding into the Go
//! types drops them upstream.

use serde_json::Value;

use crate::kinds::Kind;
use crate::request::Query;
use crate::schema::{self, Schema};
use crate::status::{ApiError, ApiResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Warn,
    Ignore,
}

impl Mode {
    pub fn from_query(query: &Query, options_kind: &str) -> ApiResult<Mode> {
        match query.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(Mode::Warn),
            Some("Strict") => Ok(Mode::Strict),
            Some("Ignore") => Ok(Mode::Ignore),
            Some(other) => Err(ApiError::invalid_option(
                options_kind,
                "fieldValidation",
                format!("Unsupported value: \"{other}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""),
            )),
        }
    }
}

/// Removes the fields `kind`'s schema does not know from `object`, returning their paths
/// (`spec.containers[0].bogus`); in Strict mode a path found is an error.
pub fn check(kind: &Kind, object: &mut Value, mode: Mode) -> ApiResult<Vec<String>> {
    let schema = schema::schema();
    let Some(message) = schema.message_for(&kind.api_version(), kind.kind) else {
        return Ok(Vec::new());
    };
    let mut unknown = Vec::new();
    if let Value::Object(map) = object {
        let allowed: Vec<&str> = schema.properties(message).iter().map(|(n, _)| *n).collect();
        map.retain(|key, _| {
            if key == "apiVersion" || key == "kind" {
                return true;
            }
            if !allowed.contains(&key.as_str()) {
                unknown.push(key.clone());
                return false;
            }
            true
        });
        for (key, value) in map.iter_mut() {
            if let Some((_, field)) = schema.properties(message).iter().find(|(n, _)| *n == key) {
                walk(schema, &field.kind, field.repeated, value, key, &mut unknown);
            }
        }
    }
    if mode == Mode::Strict && !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            listed.join(", "),
            kind = kind.kind,
            version = kind.version,
        )));
    }
    Ok(unknown)
}

fn walk(
    schema: &'static Schema,
    kind: &schema::Kind,
    repeated: bool,
    value: &mut Value,
    path: &str,
    unknown: &mut Vec<String>,
) {
    if repeated {
        if let Value::Array(items) = value {
            for (i, item) in items.iter_mut().enumerate() {
                walk(schema, kind, false, item, &format!("{path}[{i}]"), unknown);
            }
        }
        return;
    }
    match (kind, value) {
        (schema::Kind::Map(inner), Value::Object(map)) => {
            for (key, v) in map.iter_mut() {
                walk(schema, inner, false, v, &format!("{path}.{key}"), unknown);
            }
        }
        (schema::Kind::Message(name), Value::Object(map)) => {
            let Some(message) = schema.message(name) else { return };
            let properties = schema.properties(message);
            // Types with a JSON form of their own (embedded JSON, times, quantities) hold
            // anything.
            if properties.is_empty() || name.ends_with("/RawExtension") || name.ends_with("/FieldsV1") {
                return;
            }
            map.retain(|key, _| {
                let known = properties.iter().any(|(n, _)| n == key);
                if !known {
                    unknown.push(format!("{path}.{key}"));
                }
                known
            });
            for (key, v) in map.iter_mut() {
                if let Some((_, field)) = properties.iter().find(|(n, _)| n == key) {
                    walk(
                        schema,
                        &field.kind,
                        field.repeated,
                        v,
                        &format!("{path}.{key}"),
                        unknown,
                    );
                }
            }
        }
        _ => {}
    }
}

/// The required fields (per the type schema) an object lacks, as 422 causes: what upstream's
/// validation reports as `Required value` (an empty string or list counts as missing). Status
/// is left out: it is the server's and the controllers'.
pub fn missing_required(kind: &Kind, object: &Value) -> Vec<crate::status::Cause> {
    let schema = schema::schema();
    let mut causes = Vec::new();
    if let Some(message) = schema.message_for(&kind.api_version(), kind.kind) {
        required_in(schema, message, object, "", &mut causes);
    }
    causes
}

fn required_in(
    schema: &'static Schema,
    message: &'static schema::Message,
    value: &Value,
    path: &str,
    causes: &mut Vec<crate::status::Cause>,
) {
    let Value::Object(map) = value else { return };
    for &(name, field) in schema.properties(message) {
        if path.is_empty() && name == "status" {
            continue;
        }
        // The path is built only where it is reported or descended into: this runs on every
        // write, over every property of every present object.
        let here = || {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        let value = map.get(name);
        let present = match value {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if field.required && !present {
            causes.push(crate::status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: here(),
            });
            continue;
        }
        let (Some(value), schema::Kind::Message(inner)) = (value, &field.kind) else {
            continue;
        };
        let Some(inner) = schema.message(inner) else { continue };
        match value {
            Value::Array(items) if field.repeated => {
                let here = here();
                for (i, item) in items.iter().enumerate() {
                    required_in(schema, inner, item, &format!("{here}[{i}]"), causes);
                }
            }
            Value::Object(_) if !field.repeated => required_in(schema, inner, value, &here(), causes),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> &'static Kind {
        crate::kinds::find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn finds_and_drops_unknown_fields() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "bogus": 1},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "imagee": "x", "resources": {"limits": {"cpu": "1"}}}]}}},
            "extra": true});
        let unknown = check(deployment(), &mut d, Mode::Warn).unwrap();
        assert_eq!(
            unknown,
            ["extra", "metadata.bogus", "spec.template.spec.containers[0].imagee"]
        );
        assert!(d.get("extra").is_none());
        assert!(d["spec"]["template"]["spec"]["containers"][0].get("imagee").is_none());
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
    }

    #[test]
    fn strict_refuses_as_upstream_words_it() {
        let mut d = json!({"kind": "Deployment", "spec": {"replicas": 1, "bogusField": 2}});
        let err = check(deployment(), &mut d, Mode::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.bogusField\""
        );
    }

    #[test]
    fn required_fields_are_reported_with_their_paths() {
        let d = json!({"metadata": {"name": "a"}, "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let causes = missing_required(deployment(), &d);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.selector", "spec.template.spec.containers[0].name"]);
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        let causes = missing_required(pods, &json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(causes[0].field, "spec.containers");
        assert!(
            missing_required(
                pods,
                &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
            )
            .is_empty()
        );
    }

    #[test]
    fn known_objects_pass_untouched() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"fieldsV1": {"f:x": {}}}]},
            "spec": {"volumes": [{"name": "v", "configMap": {"name": "cm"}}], "containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}});
        let before = pod.clone();
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        assert!(check(pods, &mut pod, Mode::Strict).unwrap().is_empty());
        assert_eq!(pod, before);
    }
}
