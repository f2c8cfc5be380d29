//! OpenAPI v3 documents, derived from the kind table: the index (`/openapi/v3`) and one document
//! per group-version with every path and operation, tagged with
//! `x-kubernetes-group-version-kind` and `x-kubernetes-action`, and the query parameters each
//! takes. kubectl reads these before `create -f`, `apply`, `replace`, `edit` and `diff`: the
//! `fieldValidation` parameter on a kind's patch operation tells it the server validates fields.
//!
//! Component schemas come from the type schema ([`crate::schema`]): each message a
//! group-version's kinds reach, with descriptions (what `kubectl explain` prints), required
//! fields, and the list semantics (`x-kubernetes-patch-strategy`, `-patch-merge-key`,
//! `-list-type`, `-list-map-keys`) that strategic merge patch uses.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::discovery::GIT_VERSION;
use crate::kinds::{self, Kind};
use crate::schema;

/// Key of a group-version in the index: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A document and the hash clients cache it under.
pub struct Document {
    pub body: Vec<u8>,
    pub hash: String,
}

/// Every group-version's document, built once at start.
pub struct OpenApi {
    documents: Vec<(String, Document)>,
}

impl OpenApi {
    pub fn build() -> OpenApi {
        let documents = kinds::group_versions()
            .into_iter()
            .map(|(group, version, kinds)| {
                let doc = group_version_document(&kinds);
                let body = serde_json::to_vec(&doc).expect("JSON encodes");
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                body.hash(&mut hasher);
                (
                    gv_path(group, version),
                    Document {
                        hash: format!("{:016X}", hasher.finish()),
                        body,
                    },
                )
            })
            .collect();
        OpenApi { documents }
    }

    /// `/openapi/v3`: where each group-version's document is.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .documents
            .iter()
            .map(|(path, doc)| {
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// The document at `/openapi/v3/<gv path>`.
    pub fn document(&self, path: &str) -> Option<&Document> {
        self.documents.iter().find(|(p, _)| p == path).map(|(_, d)| d)
    }
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ]
    .iter()
    .map(|n| param(n, ""))
    .collect()
}

fn operation(gvk: &Value, action: &str, id: String, mut params: Vec<Value>, body: bool) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
    });
    if body {
        op["requestBody"] = json!({"content": {"*/*": {"schema": {"type": "object"}}}, "required": true});
    }
    params.push(param("pretty", "If 'true', then the output is pretty printed."));
    op["parameters"] = Value::Array(params);
    op
}

fn group_version_document(kinds: &[&Kind]) -> Value {
    let mut paths = Map::new();
    for kind in kinds {
        let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
        let base = format!("/{}", gv_path(kind.group, kind.version));
        let scope = if kind.namespaced {
            format!("{base}/namespaces/{{namespace}}")
        } else {
            base.clone()
        };
        let mut common = vec![];
        if kind.namespaced {
            common.push(path_param("namespace"));
        }
        let id = |verb: &str| format!("{verb}{}", kind.kind);

        let collection = format!("{scope}/{}", kind.plural);
        let mut ops = Map::new();
        for (verb, method, op) in [
            ("list", "get", operation(&gvk, "list", id("list"), list_params(), false)),
            (
                "create",
                "post",
                operation(&gvk, "post", id("create"), write_params(), true),
            ),
            (
                "deletecollection",
                "delete",
                operation(&gvk, "deletecollection", id("deletecollection"), list_params(), true),
            ),
        ] {
            if kind.takes(verb) {
                ops.insert(method.into(), op);
            }
        }
        ops.insert("parameters".into(), Value::Array(common.clone()));
        paths.insert(collection.clone(), Value::Object(ops));
        let mut item_params = common.clone();
        item_params.insert(0, path_param("name"));
        let mut ops = Map::new();
        for (verb, method, op) in [
            ("get", "get", operation(&gvk, "get", id("read"), vec![], false)),
            (
                "update",
                "put",
                operation(&gvk, "put", id("replace"), write_params(), true),
            ),
            (
                "patch",
                "patch",
                operation(&gvk, "patch", id("patch"), patch_params(), true),
            ),
            (
                "delete",
                "delete",
                operation(
                    &gvk,
                    "delete",
                    id("delete"),
                    vec![
                        param("dryRun", ""),
                        param("gracePeriodSeconds", ""),
                        param("propagationPolicy", ""),
                    ],
                    true,
                ),
            ),
        ] {
            if kind.takes(verb) {
                ops.insert(method.into(), op);
            }
        }
        if !ops.is_empty() {
            ops.insert("parameters".into(), Value::Array(item_params.clone()));
            paths.insert(format!("{collection}/{{name}}"), Value::Object(ops));
        }
        for sub in kind.subresources {
            let sub_gvk = json!({"group": sub.group, "version": sub.version, "kind": sub.kind});
            let mut ops = Map::new();
            for verb in sub.verbs {
                let (method, action, params, body) = match *verb {
                    "get" => ("get", "get", vec![], false),
                    "update" => ("put", "put", write_params(), true),
                    "patch" => ("patch", "patch", patch_params(), true),
                    "create" => ("post", "post", write_params(), true),
                    _ => continue,
                };
                ops.insert(
                    method.into(),
                    operation(
                        &sub_gvk,
                        action,
                        format!("{action}{}{}", kind.kind, sub.name),
                        params,
                        body,
                    ),
                );
            }
            ops.insert("parameters".into(), Value::Array(item_params.clone()));
            if kind.namespaced || !ops.is_empty() {
                paths.insert(format!("{collection}/{{name}}/{}", sub.name), Value::Object(ops));
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": component_schemas(kinds)},
    })
}

const SCHEMAS: &str = "#/components/schemas/";

/// The schemas of the kinds and of every type they reach.
fn component_schemas(kinds: &[&Kind]) -> Map<String, Value> {
    let schema = schema::schema();
    let mut todo: Vec<(&str, Option<&Kind>)> = Vec::new();
    for kind in kinds {
        if let Some(m) = schema.message_for(&kind.api_version(), kind.kind) {
            todo.push((m.path, Some(kind)));
        }
    }
    let mut out = Map::new();
    let mut seen = std::collections::HashSet::new();
    while let Some((path, kind)) = todo.pop() {
        if !seen.insert(path) {
            continue;
        }
        let Some(message) = schema.message(path) else { continue };
        for field in &message.fields {
            let referenced = match &field.kind {
                schema::Kind::Message(p) => Some(*p),
                schema::Kind::Map(v) => match v.as_ref() {
                    schema::Kind::Message(p) => Some(*p),
                    _ => None,
                },
                _ => None,
            };
            if let Some(p) = referenced {
                todo.push((p, None));
            }
        }
        out.insert(message.definition.to_string(), message_schema(schema, message, kind));
    }
    out
}

fn message_schema(schema: &'static schema::Schema, message: &'static schema::Message, kind: Option<&Kind>) -> Value {
    if let Some(special) = special_schema(message.path) {
        return special;
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    if kind.is_some() {
        properties.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": API_VERSION_DOC}),
        );
        properties.insert("kind".into(), json!({"type": "string", "description": KIND_DOC}));
    }
    for &(name, field) in schema.properties(message) {
        let mut property = field_schema(schema, message, name, field);
        if !field.description.is_empty() {
            property["description"] = json!(schema::unescape(field.description));
        }
        if field.required {
            required.push(name);
        }
        properties.insert(name.to_string(), property);
    }
    let mut out = json!({"type": "object", "properties": properties});
    if !message.description.is_empty() {
        out["description"] = json!(schema::unescape(message.description));
    }
    if !required.is_empty() {
        out["required"] = json!(required);
    }
    if let Some(kind) = kind {
        out["x-kubernetes-group-version-kind"] =
            json!([{"group": kind.group, "kind": kind.kind, "version": kind.version}]);
    }
    out
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

fn scalar_schema(schema: &schema::Schema, kind: &schema::Kind) -> Value {
    match kind {
        schema::Kind::String => json!({"type": "string"}),
        schema::Kind::Bytes => json!({"type": "string", "format": "byte"}),
        schema::Kind::Bool => json!({"type": "boolean"}),
        schema::Kind::Int32 => json!({"type": "integer", "format": "int32"}),
        schema::Kind::Int64 => json!({"type": "integer", "format": "int64"}),
        schema::Kind::Double => json!({"type": "number", "format": "double"}),
        schema::Kind::Message(path) => match schema.message(path) {
            Some(m) => json!({"allOf": [{"$ref": format!("{SCHEMAS}{}", m.definition)}]}),
            None => json!({"type": "object"}),
        },
        schema::Kind::Map(value) => json!({"type": "object", "additionalProperties": scalar_schema(schema, value)}),
    }
}

fn field_schema(schema: &schema::Schema, message: &schema::Message, name: &str, field: &schema::Field) -> Value {
    let item = scalar_schema(schema, &field.kind);
    if !field.repeated {
        return item;
    }
    let mut array = json!({"type": "array", "items": item});
    let in_service_spec = message.path == "api/core/v1/ServiceSpec";
    match crate::strategic::list_strategy(name, in_service_spec) {
        crate::strategic::ListStrategy::MergeOnKey(key) => {
            array["x-kubernetes-patch-strategy"] = json!("merge");
            array["x-kubernetes-patch-merge-key"] = json!(key);
            array["x-kubernetes-list-type"] = json!("map");
            array["x-kubernetes-list-map-keys"] = json!([key]);
        }
        crate::strategic::ListStrategy::MergeSet => {
            array["x-kubernetes-patch-strategy"] = json!("merge");
            array["x-kubernetes-list-type"] = json!("set");
        }
        crate::strategic::ListStrategy::Replace => {
            array["x-kubernetes-list-type"] = json!("atomic");
        }
    }
    array
}

/// The apimachinery types whose JSON is not an object of their fields.
fn special_schema(path: &str) -> Option<Value> {
    Some(match path {
        "apimachinery/pkg/apis/meta/v1/Time" | "apimachinery/pkg/apis/meta/v1/MicroTime" => json!({
            "type": "string", "format": "date-time",
            "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.",
        }),
        "apimachinery/pkg/util/intstr/IntOrString" => json!({
            "type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true,
            "description": "IntOrString is a type that can hold an int32 or a string.",
        }),
        "apimachinery/pkg/api/resource/Quantity" => json!({
            "type": "string",
            "description": "Quantity is a fixed-point representation of a number, written as a string such as 100m, 1Gi or 2.5.",
        }),
        "apimachinery/pkg/runtime/RawExtension" => {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        }
        "apimachinery/pkg/apis/meta/v1/FieldsV1" => json!({"type": "object"}),
        "apimachinery/pkg/apis/meta/v1/Duration" => json!({"type": "string"}),
        _ => return None,
    })
}

fn patch_params() -> Vec<Value> {
    let mut params = write_params();
    params.push(param("force", "Force is going to \"force\" Apply requests."));
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_advertises_field_validation_on_patch() {
        // Reviews take create only: they have no patch operation at all.
        let review = kinds::find("authentication.k8s.io", "v1", "selfsubjectreviews").unwrap();
        let doc: Value =
            serde_json::from_slice(&OpenApi::build().document("apis/authentication.k8s.io/v1").unwrap().body).unwrap();
        assert!(doc["paths"]["/apis/authentication.k8s.io/v1/selfsubjectreviews"]["post"].is_object());
        assert!(
            doc["paths"]
                .get("/apis/authentication.k8s.io/v1/selfsubjectreviews/{name}")
                .is_none()
        );
        assert!(!review.takes("patch"));
        let openapi = OpenApi::build();
        let index = openapi.index();
        for (group, version, kinds) in kinds::group_versions() {
            let path = gv_path(group, version);
            let url = index["paths"][&path]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{path}?hash=")));
            let doc: Value = serde_json::from_slice(&openapi.document(&path).unwrap().body).unwrap();
            for kind in kinds.iter().filter(|k| k.takes("patch")) {
                let patch = doc["paths"]
                    .as_object()
                    .unwrap()
                    .values()
                    .filter_map(|p| p.get("patch"))
                    .find(|op| op["x-kubernetes-group-version-kind"]["kind"] == kind.kind)
                    .unwrap_or_else(|| panic!("no patch operation for {}", kind.kind));
                assert!(
                    patch["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation")
                );
            }
        }
    }
}
