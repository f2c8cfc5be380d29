//! Reviews: objects a client creates to ask a question and gets back answered, never stored.
//! `SelfSubjectReview` (`kubectl auth whoami`) says who the caller is; the access reviews
//! (`kubectl auth can-i`) say what a user may do. There is no authorizer yet: every
//! authenticated user may do anything, and the access reviews say so.

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::object;
use crate::server::User;
use crate::status::{ApiError, ApiResult, Cause};

/// The answered review for a create of `kind` with `body`, by `user`, in `namespace`.
pub fn answer(kind: &Kind, body: Value, user: &User, namespace: Option<&str>) -> ApiResult<Value> {
    let mut review = body;
    if !review.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    review["kind"] = json!(kind.kind);
    review["apiVersion"] = json!(kind.api_version());
    let meta = object::metadata_mut(&mut review);
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    match kind.kind {
        "SelfSubjectReview" => {
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        "SelfSubjectRulesReview" => {
            review["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        "SelfSubjectAccessReview" => {
            check_attributes(kind, &review)?;
            review["status"] = json!({"allowed": true});
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            check_attributes(kind, &review)?;
            let spec = &review["spec"];
            let names_someone = ["user", "uid"]
                .iter()
                .any(|f| spec[f].as_str().is_some_and(|s| !s.is_empty()))
                || spec["groups"].as_array().is_some_and(|g| !g.is_empty());
            if !names_someone {
                return Err(invalid(
                    kind,
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            if kind.kind == "LocalSubjectAccessReview" {
                let asked = spec.pointer("/resourceAttributes/namespace").and_then(Value::as_str);
                if asked != namespace {
                    return Err(invalid(
                        kind,
                        "spec.resourceAttributes.namespace",
                        "Invalid value: \"\": must match metadata.namespace",
                    ));
                }
            }
            review["status"] = json!({"allowed": true});
        }
        other => return Err(ApiError::internal(format!("{other} is not a review"))),
    }
    Ok(review)
}

/// An access review asks about either a resource or a non-resource URL, not both, not neither.
fn check_attributes(kind: &Kind, review: &Value) -> ApiResult<()> {
    let spec = &review["spec"];
    match (
        spec.get("resourceAttributes").is_some(),
        spec.get("nonResourceAttributes").is_some(),
    ) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "Invalid value: \"\": cannot be specified in combination with nonResourceAttributes",
        )),
        (false, false) => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

fn invalid(kind: &Kind, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        kind,
        "",
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}
