//! Events a controller records about the objects it acts on, as client-go's event recorder
//! writes them: `core/v1` Events named `<object>.<hex time>`, shown by `kubectl describe` and
//! `kubectl get events`. Recording never blocks or fails the caller: an event is best effort.
//!
//! As client-go's recorder, a source may say only so much about one object: each (component,
//! object) pair has a token bucket of 25 events refilled one per five minutes, and events
//! beyond it are dropped. A ReplicaSet scaled to 10 000 gets 25 `SuccessfulCreate` events, not
//! 10 000 writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    /// The component, as `source.component` and `reportingController` (e.g. `replicaset-controller`).
    component: String,
    instance: String,
    /// `source.host`, for components that name the machine they run on.
    host: Option<String>,
    spam: Arc<Mutex<SpamFilter>>,
}

/// client-go's EventSourceObjectSpamFilter defaults.
const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);
/// Buckets kept before full ones (which a fresh bucket equals) are forgotten.
const MAX_BUCKETS: usize = 4096;

#[derive(Default)]
struct SpamFilter {
    /// Per object: tokens left and when they were counted.
    buckets: HashMap<String, (f64, Instant)>,
}

impl SpamFilter {
    /// Takes a token for `object`, if it has one left.
    fn allow(&mut self, object: String, now: Instant) -> bool {
        if self.buckets.len() >= MAX_BUCKETS {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() / REFILL_EVERY.as_secs_f64() < BURST
            });
        }
        let (tokens, at) = self.buckets.entry(object).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() / REFILL_EVERY.as_secs_f64()).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return true;
        }
        false
    }
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            instance: crate::hostname(),
            host: None,
            spam: Arc::default(),
        }
    }

    /// Also names this host as the events' `source.host` (`kubectl describe` shows it after the
    /// component).
    pub fn with_host(mut self) -> Recorder {
        self.host = Some(self.instance.clone()).filter(|h| !h.is_empty());
        self
    }

    /// Records a `Normal` event.
    pub fn normal(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.record(regarding, "Normal", reason, message);
    }

    /// Records a `Warning` event.
    pub fn warning(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.record(regarding, "Warning", reason, message);
    }

    /// Cluster-scoped objects (Nodes) have no namespace: their events go to `default`, as
    /// client-go files them.
    fn record(&self, regarding: ObjectReference, type_: &str, reason: &str, message: String) {
        let object = format!(
            "{}/{}/{}/{}",
            regarding.kind.as_deref().unwrap_or(""),
            regarding.namespace.as_deref().unwrap_or(""),
            regarding.name.as_deref().unwrap_or(""),
            regarding.uid.as_deref().unwrap_or("")
        );
        if !self
            .spam
            .lock()
            .expect("spam filter lock")
            .allow(object, Instant::now())
        {
            return;
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(reason.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}

/// A reference to `object` for an event's `involvedObject`.
pub fn reference_to<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_a_burst_then_one_event_per_five_minutes() {
        let mut filter = SpamFilter::default();
        let start = Instant::now();
        let allowed = (0..100).filter(|_| filter.allow("rs/a".into(), start)).count();
        assert_eq!(allowed, 25);
        assert!(filter.allow("rs/b".into(), start), "another object has its own bucket");
        assert!(!filter.allow("rs/a".into(), start + Duration::from_secs(200)));
        assert!(filter.allow("rs/a".into(), start + Duration::from_secs(301)));
    }
}
