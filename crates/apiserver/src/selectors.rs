//! Label and field selectors: the `labelSelector=` and `fieldSelector=` grammars of
//! apimachinery, parsed and matched against objects held as JSON.

use serde_json::Value;

use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> ApiResult<LabelSelector> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(
                parse_requirement(part)
                    .map_err(|why| ApiError::bad_request(format!("unable to parse requirement: {why}")))?,
            );
        }
        Ok(LabelSelector(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement::NotExists(key.to_string()));
    }
    for (op, negated) in [(" notin ", true), (" in ", false)] {
        if let Some(at) = part.find(op) {
            let key = part[..at].trim();
            check_key(key)?;
            let set = part[at + op.len()..].trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{part:?}: expected a parenthesised set of values"))?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            for v in &values {
                check_value(v)?;
            }
            return Ok(if negated {
                Requirement::NotIn(key.to_string(), values)
            } else {
                Requirement::In(key.to_string(), values)
            });
        }
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(at) = part.find(op) {
            let (key, value) = (part[..at].trim(), part[at + op.len()..].trim());
            check_key(key)?;
            check_value(value)?;
            return Ok(if negated {
                Requirement::NotEquals(key.to_string(), value.to_string())
            } else {
                Requirement::Equals(key.to_string(), value.to_string())
            });
        }
    }
    check_key(part)?;
    Ok(Requirement::Exists(part.to_string()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
                return Err(format!(
                    "invalid label key {key:?}: prefix part must be a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && is_label_name(value)) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field is one `kind` can be selected by.
    pub fn parse(text: &str, kind: &Kind) -> ApiResult<FieldSelector> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported_fields(kind).contains(&field) {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), negated, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, negated, value)| (field_value(object, field) == *value) != *negated)
    }
}

/// The fields each kind can be selected by (besides `metadata.name` and `metadata.namespace`).
fn supported_fields(kind: &Kind) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name"];
    if kind.namespaced {
        fields.push("metadata.namespace");
    }
    let extra: &[&str] = match (kind.group, kind.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "Secret") => &["type"],
        ("", "Service") => &["spec.clusterIP", "spec.type"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    };
    fields.extend_from_slice(extra);
    fields
}

/// A field's value as a selector compares it: strings as they are, numbers and booleans
/// printed, missing as "".
fn field_value(object: &Value, field: &str) -> String {
    let path = match field {
        "source" => "/source/component".to_string(),
        "status.podIPs" => "/status/podIP".to_string(),
        f => format!("/{}", f.replace('.', "/")),
    };
    match object.pointer(&path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) if field == "spec.unschedulable" || field == "spec.hostNetwork" => "false".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}})
    }

    #[test]
    fn label_selector_grammar() {
        let s = LabelSelector::parse("app=web,tier in (fe, be),!missing,env!=prod,version").unwrap();
        assert!(s.matches(&obj(json!({"app": "web", "tier": "fe", "version": "1"}))));
        assert!(!s.matches(&obj(json!({"app": "web", "tier": "db", "version": "1"}))));
        assert!(!s.matches(&obj(
            json!({"app": "web", "tier": "fe", "version": "1", "missing": "x"})
        )));
        assert!(!s.matches(&obj(json!({"app": "web", "tier": "fe", "version": "1", "env": "prod"}))));
        // != and notin match objects without the key.
        let s = LabelSelector::parse("env!=prod,zone notin (a,b)").unwrap();
        assert!(s.matches(&obj(json!({}))));
        assert!(
            LabelSelector::parse("app.kubernetes.io/name==x")
                .unwrap()
                .matches(&obj(json!({"app.kubernetes.io/name": "x"})))
        );
        assert!(LabelSelector::parse("").unwrap().matches(&obj(json!(null))));
    }

    #[test]
    fn bad_label_selectors_are_400s() {
        for bad in ["a b", "-x=1", "x=bad value", "x in a,b", "a/=1"] {
            let err = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
            assert!(
                err.message.starts_with("unable to parse requirement"),
                "{bad}: {}",
                err.message
            );
        }
    }

    #[test]
    fn field_selectors_check_fields_per_kind() {
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", pods).unwrap();
        assert!(s.matches(&json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})));
        assert!(!s.matches(&json!({"spec": {"nodeName": "n2"}})));
        let cms = crate::kinds::find("", "v1", "configmaps").unwrap();
        let err = FieldSelector::parse("spec.nodeName=x", cms).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.nodeName");
        assert!(
            FieldSelector::parse("metadata.name=a", cms)
                .unwrap()
                .matches(&json!({"metadata": {"name": "a"}}))
        );
    }
}
