//! Helpers for objects held as `serde_json::Value`: the generic REST code never needs the typed
//! structs, only metadata.

use serde_json::{Map, Value};
use styrman_store::Revision;

pub fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let root = object.as_object_mut().expect("objects are JSON objects");
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn name(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or("")
}

pub fn set_resource_version(object: &mut Value, revision: Revision) {
    metadata_mut(object).insert("resourceVersion".into(), Value::String(revision.to_string()));
}

/// The object as stored: compact JSON without `resourceVersion` (the store's revision is the
/// resource version; keeping it out of the bytes means it can never disagree).
pub fn encode_for_storage(object: &Value) -> bytes::Bytes {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    bytes::Bytes::from(serde_json::to_vec(&copy).expect("JSON values always encode"))
}

/// A stored object with its resource version filled in.
pub fn decode_from_storage(bytes: &[u8], revision: Revision) -> Result<Value, serde_json::Error> {
    let mut object: Value = serde_json::from_slice(bytes)?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

/// Writes a stored object to `out` with its resource version spliced into its top-level
/// `metadata`, without parsing it: what lists and watches send thousands of times.
pub fn write_with_resource_version(stored: &[u8], revision: Revision, out: &mut Vec<u8>) -> Result<(), String> {
    let at = top_level_metadata(stored).ok_or("a stored object has no metadata object")?;
    out.extend_from_slice(&stored[..at]);
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    out.extend_from_slice(rv.as_bytes());
    // `{` then `}` (empty metadata) takes no comma.
    if stored.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at..]);
    Ok(())
}

/// The offset just after the `{` that opens the value of the top-level `"metadata"` key.
fn top_level_metadata(json: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && &json[start..=i.min(json.len() - 1)] == b"\"metadata\"" {
                    let mut j = i + 1;
                    while j < json.len() && (json[j] == b':' || json[j].is_ascii_whitespace()) {
                        j += 1;
                    }
                    return (json.get(j) == Some(&b'{')).then_some(j + 1);
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Everything outside `metadata` and `status`: what a change of bumps `generation`.
pub fn spec_part(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Current time as Kubernetes writes `metav1.Time`: RFC 3339, UTC, whole seconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Labels as a map (empty when absent).
pub fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// How long ago a timestamp was, as kubectl shows ages: `45s`, `5m`, `3h`, `2d`, ...
pub fn age(timestamp: Option<&str>) -> String {
    let Some(ts) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    human_duration(secs)
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 { format!("{m}m") } else { format!("{m}m{s}s") }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 { format!("{h}h") } else { format!("{h}h{mm}m") }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let hh = h % 24;
        if hh == 0 { format!("{d}d") } else { format!("{d}d{hh}h") }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let dy = d % 365;
        if dy == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{dy}d", d / 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86_400), "30d");
    }

    #[test]
    fn splicing_the_resource_version_matches_decoding() {
        for object in [
            serde_json::json!({"spec": {"template": {"metadata": {"labels": {"a": "\"metadata\""}}}}, "metadata": {"name": "x"}}),
            serde_json::json!({"kind": "ConfigMap", "metadata": {}, "data": {"k": "v"}}),
        ] {
            let stored = encode_for_storage(&object);
            let mut out = Vec::new();
            write_with_resource_version(&stored, 42, &mut out).unwrap();
            let spliced: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(spliced, decode_from_storage(&stored, 42).unwrap());
        }
        assert!(write_with_resource_version(b"{\"a\":1}", 1, &mut Vec::new()).is_err());
    }

    #[test]
    fn storage_drops_the_resource_version() {
        let object = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let stored = encode_for_storage(&object);
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let back = decode_from_storage(&stored, 9).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "9");
    }
}
