//! Applying PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic
//! merge patch.

use serde_json::Value;

use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult};

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

pub const ACCEPTED: &[&str] = &[JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_MERGE_PATCH];

/// Applies a patch of `content_type` to `target`, an object of `kind`.
pub fn apply(kind: &Kind, content_type: &str, target: &mut Value, patch: &Value) -> ApiResult<()> {
    match content_type {
        JSON_PATCH => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(target, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })
        }
        MERGE_PATCH => {
            json_patch::merge(target, patch);
            Ok(())
        }
        STRATEGIC_MERGE_PATCH => crate::strategic::apply(kind.kind, target, patch),
        other => Err(ApiError::unsupported_media_type(other, ACCEPTED)),
    }
}
