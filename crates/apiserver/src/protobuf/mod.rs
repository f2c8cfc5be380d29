//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to the
//! same JSON a client would have sent. kubectl's imperative generators (`create deployment`,
//! `create namespace`, ...) send nothing else.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` envelope: the object's `apiVersion` and
//! `kind`, and its bytes. The object is decoded generically from the type schema
//! ([`crate::schema`]: every message's field numbers, JSON names and types). A few apimachinery types have their own JSON form:
//! `Time` (RFC 3339), `IntOrString`, `Quantity`, `RawExtension` (embedded JSON).

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::schema::{Field, Kind, schema};
use crate::status::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf request body to the object's JSON.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as protobuf: {why}"
        ))
    };
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the Kubernetes protobuf prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for item in Reader::new(envelope) {
        match item.map_err(|e| bad(&e))? {
            (1, Wire::Bytes(type_meta)) => {
                for meta in Reader::new(type_meta) {
                    match meta.map_err(|e| bad(&e))? {
                        (1, Wire::Bytes(v)) => api_version = utf8(v).map_err(|e| bad(&e))?,
                        (2, Wire::Bytes(v)) => kind = utf8(v).map_err(|e| bad(&e))?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(bad("the envelope names no apiVersion and kind"));
    }
    let name = schema()
        .message_for(&api_version, &kind)
        .map(|m| m.path)
        .ok_or_else(|| {
            ApiError::unsupported_media_type(
                &format!("application/vnd.kubernetes.protobuf ({api_version} {kind})"),
                &["application/json", "application/yaml"],
            )
        })?;
    let Value::Object(fields) = decode_message(name, raw).map_err(|e| bad(&e))?.unwrap_or(json!({})) else {
        return Err(bad("the object is not a message"));
    };
    let mut object = Map::new();
    object.insert("kind".into(), json!(kind));
    object.insert("apiVersion".into(), json!(api_version));
    object.extend(fields);
    Ok(Value::Object(object))
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

/// One message's JSON; `None` for a value JSON leaves out (an unset time).
fn decode_message(name: &'static str, bytes: &[u8]) -> Result<Option<Value>, String> {
    if let Some(special) = special(name, bytes)? {
        return Ok(special);
    }
    let message = schema()
        .message(name)
        .ok_or_else(|| format!("unknown message {name}"))?;
    let mut out = Map::new();
    for item in Reader::new(bytes) {
        let (tag, wire) = item?;
        let Some(field) = message.field(tag) else {
            continue;
        };
        let values = decode_field(field, wire)?;
        let Some(json) = field.json else {
            // Embedded struct: its fields are this object's.
            for value in values {
                if let Value::Object(inner) = value {
                    out.extend(inner);
                }
            }
            continue;
        };
        if let Kind::Map(_) = field.kind {
            let entry = out.entry(json).or_insert_with(|| json!({}));
            for value in values {
                if let (Value::Object(target), Value::Object(pair)) = (&mut *entry, value) {
                    target.extend(pair);
                }
            }
        } else if field.repeated {
            let entry = out.entry(json).or_insert_with(|| json!([]));
            if let Value::Array(items) = entry {
                items.extend(values);
            }
        } else if let Some(value) = values.into_iter().next_back() {
            // Go's encoder writes empty strings of plain fields; JSON omits them.
            if value != json!("") {
                out.insert(json.to_string(), value);
            }
        }
    }
    // ObjectMeta.generation is written as 0 when unset; it is the server's anyway.
    if name.ends_with("/ObjectMeta") && out.get("generation") == Some(&json!(0)) {
        out.remove("generation");
    }
    Ok(Some(Value::Object(out)))
}

/// The values one occurrence of a field carries (several for a packed repeated scalar, one
/// `{key: value}` object for a map entry).
fn decode_field(field: &Field, wire: Wire<'_>) -> Result<Vec<Value>, String> {
    Ok(match (&field.kind, wire) {
        (Kind::Map(value_kind), Wire::Bytes(entry)) => {
            let (mut key, mut value) = (String::new(), Value::Null);
            for item in Reader::new(entry) {
                match item? {
                    (1, Wire::Bytes(k)) => key = utf8(k)?,
                    (2, w) => value = scalar(value_kind, w)?.unwrap_or(Value::Null),
                    _ => {}
                }
            }
            if value.is_null() {
                value = match value_kind.as_ref() {
                    Kind::String | Kind::Bytes => json!(""),
                    _ => Value::Null,
                };
            }
            vec![json!({ key: value })]
        }
        (Kind::Int32 | Kind::Int64 | Kind::Bool, Wire::Bytes(packed)) => {
            let mut values = Vec::new();
            let mut rest = packed;
            while !rest.is_empty() {
                let (v, n) = varint(rest)?;
                rest = &rest[n..];
                values.push(scalar(&field.kind, Wire::Varint(v))?.unwrap_or(Value::Null));
            }
            values
        }
        (kind, wire) => scalar(kind, wire)?.into_iter().collect(),
    })
}

fn scalar(kind: &Kind, wire: Wire<'_>) -> Result<Option<Value>, String> {
    Ok(Some(match (kind, wire) {
        (Kind::String, Wire::Bytes(b)) => json!(utf8(b)?),
        (Kind::Bytes, Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Kind::Bool, Wire::Varint(v)) => json!(v != 0),
        (Kind::Int32, Wire::Varint(v)) => json!(v as i64 as i32),
        (Kind::Int64, Wire::Varint(v)) => json!(v as i64),
        (Kind::Double, Wire::Fixed64(v)) => json!(f64::from_bits(v)),
        (Kind::Message(name), Wire::Bytes(b)) => return decode_message(name, b),
        (kind, _) => return Err(format!("a {kind:?} field has the wrong wire type")),
    }))
}

/// The apimachinery types whose JSON is not an object of their fields.
fn special(name: &str, bytes: &[u8]) -> Result<Option<Option<Value>>, String> {
    let fields = || -> Result<HashMap<u32, Wire<'_>>, String> { Reader::new(bytes).collect() };
    let int = |w: Option<&Wire<'_>>| match w {
        Some(Wire::Varint(v)) => *v as i64,
        _ => 0,
    };
    let text = |w: Option<&Wire<'_>>| match w {
        Some(Wire::Bytes(b)) => utf8(b),
        _ => Ok(String::new()),
    };
    Ok(Some(match name {
        "apimachinery/pkg/apis/meta/v1/Time" | "apimachinery/pkg/apis/meta/v1/MicroTime" => {
            let f = fields()?;
            let (seconds, nanos) = (int(f.get(&1)), int(f.get(&2)));
            if seconds == 0 && nanos == 0 {
                return Ok(Some(None));
            }
            let ts = jiff::Timestamp::new(seconds, nanos as i32).map_err(|e| e.to_string())?;
            let format = if name.ends_with("MicroTime") {
                "%Y-%m-%dT%H:%M:%S%.6fZ"
            } else {
                "%Y-%m-%dT%H:%M:%SZ"
            };
            Some(json!(ts.strftime(format).to_string()))
        }
        "apimachinery/pkg/util/intstr/IntOrString" => {
            let f = fields()?;
            if int(f.get(&1)) == 1 {
                Some(json!(text(f.get(&3))?))
            } else {
                Some(json!(int(f.get(&2)) as i32))
            }
        }
        "apimachinery/pkg/api/resource/Quantity" => Some(json!(text(fields()?.get(&1))?)),
        "apimachinery/pkg/runtime/RawExtension" | "apimachinery/pkg/apis/meta/v1/FieldsV1" => {
            let raw = match fields()?.get(&1) {
                Some(Wire::Bytes(b)) => b.to_vec(),
                _ => return Ok(Some(None)),
            };
            Some(serde_json::from_slice(&raw).map_err(|e| format!("embedded JSON: {e}"))?)
        }
        "apimachinery/pkg/apis/meta/v1/Duration" => {
            let nanos = int(fields()?.get(&1));
            Some(json!(go_duration(nanos)))
        }
        _ => return Ok(None),
    }))
}

/// Go's `time.Duration.String()` for whole seconds and above (what API durations hold).
fn go_duration(nanos: i64) -> String {
    let secs = nanos / 1_000_000_000;
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A field's value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Skipped: no Kubernetes message has a 32-bit fixed field.
    Fixed32,
    Bytes(&'a [u8]),
}

/// The (field number, value) pairs of an encoded message.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read())
    }
}

impl<'a> Reader<'a> {
    fn read(&mut self) -> Result<(u32, Wire<'a>), String> {
        let (key, n) = varint(self.rest)?;
        self.rest = &self.rest[n..];
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range".to_string())?;
        let wire = match key & 7 {
            0 => {
                let (v, n) = varint(self.rest)?;
                self.rest = &self.rest[n..];
                Wire::Varint(v)
            }
            1 => {
                let bytes = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            }
            2 => {
                let (len, n) = varint(self.rest)?;
                self.rest = &self.rest[n..];
                let len = usize::try_from(len).map_err(|_| "length out of range".to_string())?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok((tag, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated message".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
}

fn varint(bytes: &[u8]) -> Result<(u64, usize), String> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err("bad varint".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(tag: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((tag << 3) | wire as u32) as u8];
        if wire == 2 {
            out.push(payload.len() as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, 2, api_version.as_bytes()), field(2, 2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, 2, &type_meta), field(2, 2, raw)].concat()
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        // metadata{name:"c1", generation:0}, data{"a":"b"}
        let meta = [field(1, 2, b"c1"), field(7, 0, &[0])].concat();
        let entry = [field(1, 2, b"a"), field(2, 2, b"b")].concat();
        let raw = [field(1, 2, &meta), field(2, 2, &entry)].concat();
        let object = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            object,
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c1"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn special_types_and_inline_structs() {
        // A Secret's data is bytes: base64 in JSON.
        let entry = [field(1, 2, b"k"), field(2, 2, b"v")].concat();
        let secret = decode(&envelope(
            "v1",
            "Secret",
            &[field(1, 2, &field(1, 2, b"s")), field(2, 2, &entry)].concat(),
        ))
        .unwrap();
        assert_eq!(secret["data"]["k"], "dg==");
        // IntOrString as a string, Quantity as its string.
        let port = [
            field(1, 2, b"http"),
            field(3, 0, &[80]),
            field(4, 2, &[field(1, 0, &[1]), field(3, 2, b"web")].concat()),
        ]
        .concat();
        let service_spec = field(1, 2, &port);
        let service = decode(&envelope("v1", "Service", &field(2, 2, &service_spec))).unwrap();
        assert_eq!(
            service["spec"]["ports"][0],
            json!({"name": "http", "port": 80, "targetPort": "web"})
        );
        // An env var source's embedded LocalObjectReference lands in the selector itself.
        let selector = [field(1, 2, &field(1, 2, b"cm")), field(2, 2, b"key")].concat();
        let selector_message = schema().message("api/core/v1/ConfigMapKeySelector").unwrap();
        assert!(selector_message.field(1).unwrap().json.is_none());
        let decoded = decode_message("api/core/v1/ConfigMapKeySelector", &selector)
            .unwrap()
            .unwrap();
        assert_eq!(decoded, json!({"name": "cm", "key": "key"}));
    }

    #[test]
    fn bad_bodies_are_400s() {
        assert_eq!(decode(b"{\"kind\":1}").unwrap_err().code, 400);
        assert_eq!(decode(&[MAGIC, &[0x0a, 0x05, 0x01]].concat()).unwrap_err().code, 400);
        assert_eq!(decode(&envelope("v1", "NoSuchKind", &[])).unwrap_err().code, 415);
    }

    #[test]
    fn the_schema_knows_the_generators_kinds() {
        for (gv, kind) in [
            ("apps/v1", "Deployment"),
            ("v1", "Namespace"),
            ("batch/v1", "CronJob"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("autoscaling/v1", "HorizontalPodAutoscaler"),
        ] {
            assert!(schema().message_for(gv, kind).is_some(), "{gv} {kind}");
        }
        let status = schema().message("api/core/v1/PodStatus").unwrap();
        assert_eq!(status.field(12).unwrap().json, Some("podIPs"));
    }
}
