//! Kinds served in more than one version keep one stored form (as kube-apiserver's storage
//! version) and are converted on the way in and out: HorizontalPodAutoscaler, stored as
//! `autoscaling/v2` and also served as `autoscaling/v1` (what `kubectl autoscale` sends); Event,
//! stored as core `v1` and also served as `events.k8s.io/v1`.
//!
//! A v1 write carries only what v1 can say: a v2-only setting (other metrics, `behavior`) is
//! not kept through a v1 update, where Kubernetes keeps it in annotations.

use bytes::Bytes;
use serde_json::{Value, json};
use styrman_store::Revision;

use crate::kinds::Kind;
use crate::object::{decode_from_storage, encode_for_storage};

struct Conversion {
    to_stored: fn(Value) -> Value,
    from_stored: fn(Value) -> Value,
}

fn conversion(kind: &Kind) -> Option<&'static Conversion> {
    static HPA_V1: Conversion = Conversion {
        to_stored: hpa_v1_to_v2,
        from_stored: hpa_v2_to_v1,
    };
    static EVENTS_V1: Conversion = Conversion {
        to_stored: event_to_core,
        from_stored: event_from_core,
    };
    match (kind.group, kind.version, kind.kind) {
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => Some(&HPA_V1),
        ("events.k8s.io", "v1", "Event") => Some(&EVENTS_V1),
        _ => None,
    }
}

/// Whether objects of this kind are stored in another version (so their bytes cannot be sent
/// as they are).
pub fn converts(kind: &Kind) -> bool {
    conversion(kind).is_some()
}

/// A stored object as `kind`'s version shows it, with its resource version.
pub fn decode(kind: &Kind, stored: &[u8], revision: Revision) -> Result<Value, serde_json::Error> {
    let object = decode_from_storage(stored, revision)?;
    Ok(match conversion(kind) {
        Some(c) => {
            let mut served = (c.from_stored)(object);
            crate::always_present::fill(&mut served);
            served
        }
        None => object,
    })
}

/// An object of `kind`'s version as it is stored.
pub fn encode(kind: &Kind, object: &Value) -> Bytes {
    match conversion(kind) {
        Some(c) => {
            let mut stored = (c.to_stored)(object.clone());
            crate::always_present::fill(&mut stored);
            encode_for_storage(&stored)
        }
        None => encode_for_storage(object),
    }
}

fn hpa_v1_to_v2(mut o: Value) -> Value {
    o["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
        );
    }
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut)
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
        );
    }
    o
}

fn cpu_utilization(metrics: Option<&Value>, field: &str) -> Option<Value> {
    metrics?
        .as_array()?
        .iter()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
        .and_then(|m| m["resource"][field].get("averageUtilization").cloned())
}

fn hpa_v2_to_v1(mut o: Value) -> Value {
    o["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        let target = cpu_utilization(spec.get("metrics"), "target");
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(t) = target {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
        let current = cpu_utilization(status.get("currentMetrics"), "current");
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = current {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    o
}

/// (core v1 name, events.k8s.io/v1 name) of the fields the two Event versions name differently.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(mut o: Value, api_version: &str, from_core: bool) -> Value {
    if let Some(map) = o.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        for (core, events) in EVENT_RENAMES {
            let (from, to) = if from_core { (core, events) } else { (events, core) };
            if let Some(v) = map.remove(*from) {
                map.insert(to.to_string(), v);
            }
        }
    }
    o
}

fn event_to_core(o: Value) -> Value {
    rename(o, "v1", false)
}

fn event_from_core(o: Value) -> Value {
    rename(o, "events.k8s.io/v1", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_through_v1() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        let v2 = hpa_v1_to_v2(v1.clone());
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        assert_eq!(hpa_v2_to_v1(v2), v1);
    }

    #[test]
    fn events_rename_fields_both_ways() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "Scheduled", "reason": "Scheduled", "reportingController": "styrman-scheduler"});
        let core = event_to_core(new.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "Scheduled");
        assert_eq!(core["reportingComponent"], "styrman-scheduler");
        let back = event_from_core(core);
        assert_eq!(back["regarding"], new["regarding"]);
        assert_eq!(back["note"], "Scheduled");
    }
}
