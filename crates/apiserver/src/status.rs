//! API errors as Kubernetes `Status` objects, encoded as kube-apiserver encodes them (Go field
//! order, compact, trailing newline): clients parse them, and some compare them byte for byte.

use serde::Serialize;
use styrman_store::StoreError;

use crate::kinds::Kind;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Cause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural) for most errors, the Kind for validation errors: as upstream.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// A failed request: an HTTP code, a machine-readable reason, a message for humans.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel through every `Result` of the request path, and most have none.
    pub details: Option<Box<Details>>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, kind: &Kind, name: &str) -> ApiError {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: kind.group.to_string(),
            kind: kind.plural.to_string(),
            ..Details::default()
        }));
        self
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_plural()),
        )
        .about(kind, name)
    }

    /// An unknown URL.
    pub fn route_not_found() -> ApiError {
        ApiError {
            details: Some(Box::default()),
            ..ApiError::new(404, "NotFound", "the server could not find the requested resource")
        }
    }

    pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_plural()),
        )
        .about(kind, name)
    }

    pub fn conflict(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_plural()
            ),
        )
        .about(kind, name)
    }

    /// A write lost to a concurrent one (the store's compare-and-swap failed): what a write
    /// without a precondition retries on a fresh read, as upstream's GuaranteedUpdate does. An
    /// apply conflict (which names fields) is not one.
    pub fn is_write_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict" && self.details.as_ref().is_none_or(|d| d.causes.is_empty())
    }

    /// A server-side apply conflict: the causes name each field and the manager owning it.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> ApiError {
        ApiError {
            details: Some(Box::new(Details {
                causes,
                ..Details::default()
            })),
            ..ApiError::new(409, "Conflict", message)
        }
    }

    pub fn invalid(kind: &Kind, name: &str, causes: Vec<Cause>) -> ApiError {
        let problems: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let listed = if problems.len() == 1 {
            problems[0].clone()
        } else {
            format!("[{}]", problems.join(", "))
        };
        ApiError {
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: kind.group.to_string(),
                kind: kind.kind.to_string(),
                causes,
                ..Details::default()
            })),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {listed}", kind.qualified_kind()),
            )
        }
    }

    /// A bad request option (`fieldValidation`, `resourceVersionMatch`, ...): 422 against the
    /// options kind, as upstream reports it.
    pub fn invalid_option(options_kind: &str, field: &str, message: String) -> ApiError {
        ApiError {
            details: Some(Box::new(Details {
                group: "meta.k8s.io".into(),
                kind: options_kind.into(),
                causes: vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: message.clone(),
                    field: field.into(),
                }],
                ..Details::default()
            })),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{options_kind}.meta.k8s.io \"\" is invalid: {field}: {message}"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(kind: &Kind, name: &str, why: &str) -> ApiError {
        let subject = if name.is_empty() {
            kind.qualified_plural()
        } else {
            format!("{} \"{name}\"", kind.qualified_plural())
        };
        ApiError::new(403, "Forbidden", format!("{subject} is forbidden: {why}")).about(kind, name)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
        .with_cause(format!("unsupported content type {content_type:?}"))
    }

    pub fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            "the server was unable to respond with a content type that the client supports",
        )
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            details: Some(Box::new(Details {
                retry_after_seconds: Some(1),
                ..Details::default()
            })),
            ..ApiError::new(504, "Timeout", message)
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        let message = message.to_string();
        ApiError {
            details: Some(Box::new(Details {
                causes: vec![Cause {
                    message: message.clone(),
                    ..Cause::default()
                }],
                ..Details::default()
            })),
            ..ApiError::new(500, "InternalError", format!("Internal error occurred: {message}"))
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    fn with_cause(mut self, message: String) -> ApiError {
        let details = self.details.get_or_insert_with(Box::default);
        details.causes.push(Cause {
            message,
            ..Cause::default()
        });
        self
    }

    /// A store error on an object of `kind` named `name`.
    pub fn from_store(e: StoreError, kind: &Kind, name: &str) -> ApiError {
        match e {
            StoreError::AlreadyExists { .. } => ApiError::already_exists(kind, name),
            StoreError::NotFound { .. } => ApiError::not_found(kind, name),
            StoreError::Conflict { .. } => ApiError::conflict(kind, name),
            StoreError::Compacted { .. } => ApiError::expired("The resourceVersion for the provided list is too old."),
            StoreError::FutureRevision { .. } => ApiError::timeout("Too large resource version"),
            StoreError::Unavailable(m) => ApiError::unavailable(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::internal(other),
        }
    }

    /// The `Status` object, as JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let status = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        };
        let mut out = serde_json::to_vec(&status).expect("a Status always encodes");
        out.push(b'\n');
        out
    }

    /// The Status as a JSON value (for watch ERROR events).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.to_json()).expect("a Status always decodes")
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    code: u16,
}

/// A successful `Status` (what DELETE returns for most kinds).
pub fn success(kind: &Kind, name: &str, uid: &str) -> Vec<u8> {
    let details = Details {
        name: name.to_string(),
        group: kind.group.to_string(),
        kind: kind.plural.to_string(),
        uid: uid.to_string(),
        ..Details::default()
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    });
    let mut out = serde_json::to_vec(&body).expect("a Status always encodes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    #[test]
    fn not_found_matches_the_upstream_bytes() {
        let deployments = kinds::find("apps", "v1", "deployments").unwrap();
        let body = String::from_utf8(ApiError::not_found(deployments, "x").to_json()).unwrap();
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"x\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"x\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"
        );
    }

    #[test]
    fn unknown_route_has_empty_details() {
        let body = String::from_utf8(ApiError::route_not_found().to_json()).unwrap();
        assert!(
            body.contains("\"reason\":\"NotFound\",\"details\":{},\"code\":404}"),
            "{body}"
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let pods = kinds::find("", "v1", "pods").unwrap();
        let cause = |f: &str, m: &str| Cause {
            reason: "FieldValueRequired".into(),
            message: m.into(),
            field: f.into(),
        };
        let one = ApiError::invalid(pods, "p", vec![cause("spec.containers", "Required value")]);
        assert_eq!(one.message, "Pod \"p\" is invalid: spec.containers: Required value");
        let two = ApiError::invalid(pods, "p", vec![cause("a", "x"), cause("b", "y")]);
        assert_eq!(two.message, "Pod \"p\" is invalid: [a: x, b: y]");
        assert_eq!(two.code, 422);
    }
}
