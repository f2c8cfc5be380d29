//! The type schema of the built-in API: every message (Kubernetes type) with its fields' numbers,
//! JSON names, types, optionality and descriptions. Generated into `protobuf/schema.txt` by
//! `scripts/gen-protobuf-schema` from the `k8s-pb` crate (structure and field numbers) and the
//! `k8s-openapi` crate (JSON names, descriptions, required fields), and read once at first use.
//! Protobuf decoding, the OpenAPI documents and field validation all derive from it.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug)]
pub enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message(&'static str),
    /// A map with string keys and values of this kind.
    Map(Box<Kind>),
}

#[derive(Debug)]
pub struct Field {
    /// `None`: an embedded struct whose fields are inlined into the parent's JSON.
    pub json: Option<&'static str>,
    pub kind: Kind,
    pub repeated: bool,
    pub required: bool,
    /// With `\n` escaped; see [`unescape`].
    pub description: &'static str,
}

#[derive(Debug)]
pub struct Message {
    /// `api/apps/v1/Deployment`
    pub path: &'static str,
    /// The upstream definition name, `io.k8s.api.apps.v1.Deployment`.
    pub definition: &'static str,
    pub description: &'static str,
    pub fields: Vec<Field>,
    by_tag: HashMap<u32, usize>,
    /// Every JSON property, embedded structs' included: worked out once, on first use (every
    /// write's validation walks them).
    properties: OnceLock<Vec<(&'static str, &'static Field)>>,
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&Field> {
        self.by_tag.get(&tag).map(|&i| &self.fields[i])
    }
}

pub struct Schema {
    messages: HashMap<&'static str, Message>,
}

impl Schema {
    pub fn message(&self, path: &str) -> Option<&Message> {
        self.messages.get(path)
    }

    /// The message of a kind: `api/<group's first label>/<version>/<Kind>`.
    pub fn message_for(&self, api_version: &str, kind: &str) -> Option<&Message> {
        self.message(&message_path(api_version, kind))
    }

    /// Every JSON property of a message, embedded structs' included.
    pub fn properties(&'static self, message: &'static Message) -> &'static [(&'static str, &'static Field)] {
        message.properties.get_or_init(|| {
            let mut out = Vec::new();
            for field in &message.fields {
                match (field.json, &field.kind) {
                    (Some(name), _) => out.push((name, field)),
                    (None, Kind::Message(inner)) => {
                        if let Some(inner) = self.message(inner) {
                            out.extend_from_slice(self.properties(inner));
                        }
                    }
                    (None, _) => {}
                }
            }
            out
        })
    }
}

pub fn message_path(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        None => format!("api/core/{api_version}/{kind}"),
        Some(("meta.k8s.io", version)) => format!("apimachinery/pkg/apis/meta/{version}/{kind}"),
        Some((group, version)) => {
            let short = group.split('.').next().unwrap_or(group);
            format!("api/{short}/{version}/{kind}")
        }
    }
}

pub fn unescape(text: &str) -> String {
    text.replace("\\n", "\n")
}

pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(include_str!("protobuf/schema.txt")))
}

fn scalar_kind(name: &'static str) -> Kind {
    match name {
        "string" => Kind::String,
        "bytes" => Kind::Bytes,
        "bool" => Kind::Bool,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "double" => Kind::Double,
        message => Kind::Message(message),
    }
}

fn parse(text: &'static str) -> Schema {
    let mut messages = HashMap::new();
    let mut current: Option<Message> = None;
    let finish = |message: Option<Message>, messages: &mut HashMap<&'static str, Message>| {
        if let Some(m) = message {
            messages.insert(m.path, m);
        }
    };
    for line in text.lines() {
        if let Some(description) = line.strip_prefix("D ") {
            if let Some(message) = current.as_mut() {
                match message.fields.last_mut() {
                    Some(field) => field.description = description,
                    None => message.description = description,
                }
            }
            continue;
        }
        let parts: Vec<&'static str> = line.split(' ').collect();
        match parts.as_slice() {
            ["M", path, definition] => {
                finish(current.take(), &mut messages);
                current = Some(Message {
                    path,
                    definition,
                    description: "",
                    fields: Vec::new(),
                    by_tag: HashMap::new(),
                    properties: OnceLock::new(),
                });
            }
            ["F", tag, json, kind, rest @ ..] => {
                let Some(message) = current.as_mut() else { continue };
                let Ok(tag) = tag.parse() else { continue };
                let repeated = kind.ends_with('*');
                let required = rest.last() == Some(&"!");
                let kind = kind.trim_end_matches('*');
                let kind = match (kind, rest.first()) {
                    ("message", Some(path)) => Kind::Message(path),
                    ("map", Some(spec)) => {
                        let value = spec.split_once(',').map_or("string", |(_, v)| v);
                        Kind::Map(Box::new(scalar_kind(value)))
                    }
                    (scalar, _) => scalar_kind(scalar),
                };
                let json = (*json != "-").then_some(*json);
                message.by_tag.insert(tag, message.fields.len());
                message.fields.push(Field {
                    json,
                    kind,
                    repeated,
                    required,
                    description: "",
                });
            }
            _ => {}
        }
    }
    finish(current.take(), &mut messages);
    Schema { messages }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_built_in_kinds() {
        let s = schema();
        for kind in crate::kinds::KINDS {
            assert!(
                s.message_for(&kind.api_version(), kind.kind).is_some(),
                "no schema for {}",
                kind.kind
            );
        }
        let spec = s.message("api/apps/v1/DeploymentSpec").unwrap();
        let selector = spec.fields.iter().find(|f| f.json == Some("selector")).unwrap();
        assert!(selector.required);
        assert!(selector.description.starts_with("Label selector for pods"));
        assert_eq!(spec.definition, "io.k8s.api.apps.v1.DeploymentSpec");
        let volume = s.message("api/core/v1/Volume").unwrap();
        let names: Vec<_> = s.properties(volume).iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"name") && names.contains(&"configMap") && names.contains(&"emptyDir"),
            "{names:?}"
        );
    }
}
