//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation: when the oldest change
//! that this write of a Service's endpoints reflects happened, so that the latency from a pod
//! becoming ready to its address being published can be measured (upstream's
//! TriggerTimeTracker).
//!
//! A change is a pod's Ready condition moving (its lastTransitionTime) or the Service being
//! made (its creationTimestamp). The tracker remembers, per Service, the times it saw at the
//! last sync; the annotation carries the earliest time that is newer than what it saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use super::pods;

pub const ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Default)]
pub struct TriggerTimes {
    services: Mutex<HashMap<String, Seen>>,
}

#[derive(Default)]
struct Seen {
    pods: HashMap<String, Timestamp>,
    service: Option<Timestamp>,
}

impl TriggerTimes {
    /// The trigger time for syncing `service` (key `key`) with `pods`; `None` when nothing
    /// changed since the last sync. Records what it saw.
    pub fn compute(&self, key: &str, service: &Service, pods: &[Arc<Pod>]) -> Option<Timestamp> {
        let mut services = self.services.lock().expect("trigger times lock");
        let known = services.contains_key(key);
        let seen = services.entry(key.to_string()).or_default();
        let mut earliest: Option<Timestamp> = None;
        let mut now_seen = HashMap::new();
        for pod in pods {
            let (Some(name), Some(time)) = (pod.metadata.name.as_ref(), pods::ready_transition(pod)) else {
                continue;
            };
            if seen.pods.get(name).is_none_or(|before| time > *before) {
                earliest = Some(earliest.map_or(time, |e| e.min(time)));
            }
            now_seen.insert(name.clone(), time);
        }
        let created = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(created) = created
            && seen.service.is_none_or(|before| created > before)
        {
            earliest = Some(earliest.map_or(created, |e| e.min(created)));
        }
        seen.pods = now_seen;
        seen.service = created;
        if !known {
            // A Service seen for the first time: its endpoints start with it.
            return created;
        }
        earliest
    }

    pub fn forget(&self, key: &str) {
        self.services.lock().expect("trigger times lock").remove(key);
    }
}

/// Go's RFC 3339 with nanoseconds, as the annotation is written: UTC, no trailing zeros.
pub fn format(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::pods::tests::{pod, service};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn ready_since(name: &str, seconds: i64) -> Arc<Pod> {
        let mut p = pod(name, "10.0.0.1", true, &[]);
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(at(seconds)));
        Arc::new(p)
    }

    #[test]
    fn the_earliest_unseen_change_is_the_trigger() {
        let tracker = TriggerTimes::default();
        let mut svc = service(&[]);
        svc.metadata.creation_timestamp = Some(Time(at(0)));
        assert_eq!(
            tracker.compute("default/web", &svc, &[ready_since("a", 5)]),
            Some(at(0))
        );
        // Nothing new.
        assert_eq!(tracker.compute("default/web", &svc, &[ready_since("a", 5)]), None);
        // Two pods changed: the earlier one counts.
        let pods = [ready_since("a", 9), ready_since("b", 7)];
        assert_eq!(tracker.compute("default/web", &svc, &pods), Some(at(7)));
        tracker.forget("default/web");
        assert_eq!(tracker.compute("default/web", &svc, &pods), Some(at(0)));
    }

    #[test]
    fn formatted_as_go_writes_rfc3339_nano() {
        assert_eq!(format(at(0)), "2023-11-14T22:13:20Z");
        let fraction = at(0).checked_add(jiff::SignedDuration::from_millis(250)).unwrap();
        assert_eq!(format(fraction), "2023-11-14T22:13:20.25Z");
    }
}
