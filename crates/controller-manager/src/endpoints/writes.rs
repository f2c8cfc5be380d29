//! The controller's own writes that its informer cache has not shown yet (upstream's
//! EndpointSliceTracker, reduced to what it is for).
//!
//! A sync decides from the cache; right after a write the cache may still show the object as
//! it was, and a sync then would write again from stale state (a second slice for the same
//! pods, a create that conflicts). So each write is remembered until its watch event
//! arrives, a Service with writes outstanding is synced a little later, and the echo of the
//! controller's own write does not wake the Service again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this an outstanding write is given up on (its event was lost to a re-list, or
/// someone else's write overtook it), so a Service is never held back for good.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// The object at this resourceVersion.
    Version(String),
    Gone,
}

#[derive(Default)]
pub struct OwnWrites {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Service key → object name → what the cache should show next, and since when.
    pending: HashMap<String, HashMap<String, (Expect, Instant)>>,
    /// Service key → object name → the version the cache holds. The watch event of a write
    /// may arrive before the API server's answer to it; then the write is no longer
    /// outstanding when it is recorded.
    cached: HashMap<String, HashMap<String, String>>,
}

impl OwnWrites {
    /// Records a create or update; the API server's answer carries the version to expect.
    pub fn wrote(&self, service: &str, name: &str, resource_version: Option<String>) {
        let Some(version) = resource_version else {
            return;
        };
        let mut state = self.state.lock().expect("own writes lock");
        if state.cached.get(service).and_then(|c| c.get(name)) == Some(&version) {
            return;
        }
        state.record(service, name, Expect::Version(version));
    }

    /// Records a deletion of an object the cache held.
    pub fn deleted(&self, service: &str, name: &str) {
        let mut state = self.state.lock().expect("own writes lock");
        if !state.cached.get(service).is_some_and(|c| c.contains_key(name)) {
            return;
        }
        state.record(service, name, Expect::Gone);
    }

    /// Records a change the cache took in for object `name` of `service` (`resource_version`
    /// `None`: it was deleted). Says whether it was the echo of this controller's own write.
    pub fn observed(&self, service: &str, name: &str, resource_version: Option<&str>) -> bool {
        let mut state = self.state.lock().expect("own writes lock");
        match resource_version {
            Some(version) => {
                state
                    .cached
                    .entry(service.to_string())
                    .or_default()
                    .insert(name.to_string(), version.to_string());
            }
            None => {
                if let Some(cached) = state.cached.get_mut(service) {
                    cached.remove(name);
                    if cached.is_empty() {
                        state.cached.remove(service);
                    }
                }
            }
        }
        let Some(objects) = state.pending.get_mut(service) else {
            return false;
        };
        let echo = match (objects.get(name), resource_version) {
            (Some((Expect::Version(v), _)), Some(seen)) => v == seen,
            (Some((Expect::Gone, _)), None) => true,
            _ => false,
        };
        if echo {
            objects.remove(name);
            if objects.is_empty() {
                state.pending.remove(service);
            }
        }
        echo
    }

    /// Whether the cache may not show `service`'s objects as this controller last wrote them.
    pub fn outstanding(&self, service: &str) -> bool {
        let mut state = self.state.lock().expect("own writes lock");
        let Some(objects) = state.pending.get_mut(service) else {
            return false;
        };
        objects.retain(|_, (_, since)| since.elapsed() < PATIENCE);
        if objects.is_empty() {
            state.pending.remove(service);
            return false;
        }
        true
    }

    /// Forgets the writes waited for: after a re-list the cache is as new as the API server.
    pub fn clear(&self) {
        self.state.lock().expect("own writes lock").pending.clear();
    }
}

impl State {
    fn record(&mut self, service: &str, name: &str, expect: Expect) {
        self.pending
            .entry(service.to_string())
            .or_default()
            .insert(name.to_string(), (expect, Instant::now()));
    }
}

/// Whether a create failed because the namespace is being deleted: nothing to retry, the
/// namespace's content is going anyway.
pub fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_outstanding_until_its_echo() {
        let writes = OwnWrites::default();
        writes.observed("ns/web", "web-old", Some("3"));
        writes.wrote("ns/web", "web-abc", Some("7".into()));
        writes.deleted("ns/web", "web-old");
        assert!(writes.outstanding("ns/web"));
        assert!(
            !writes.observed("ns/web", "web-abc", Some("6")),
            "an older version is not the echo"
        );
        assert!(writes.observed("ns/web", "web-abc", Some("7")));
        assert!(writes.outstanding("ns/web"));
        assert!(writes.observed("ns/web", "web-old", None));
        assert!(!writes.outstanding("ns/web"));
        assert!(!writes.observed("ns/web", "web-abc", Some("8")), "someone else's write");
    }

    #[test]
    fn an_echo_before_the_answer_leaves_nothing_outstanding() {
        let writes = OwnWrites::default();
        assert!(!writes.observed("ns/web", "web-abc", Some("7")));
        writes.wrote("ns/web", "web-abc", Some("7".into()));
        assert!(!writes.outstanding("ns/web"));
        assert!(!writes.observed("ns/web", "web-abc", None));
        writes.deleted("ns/web", "web-abc");
        assert!(!writes.outstanding("ns/web"));
    }
}
