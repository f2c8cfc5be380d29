//! What a controller is still waiting to see in its cache, as upstream's ControllerExpectations,
//! keyed by `namespace/name` of the owner. After creating or deleting pods, the informer lags the API server, and a sync that counted
//! pods from the cache before it caught up would create or delete them twice.
//!
//! Unlike upstream's counters, this remembers the pods themselves (names created, UIDs deleted)
//! and checks them against the cache, so a relist or a missed event cannot leave it stuck.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::informer::Cache;

/// After this long, expectations are given up and the controller syncs anyway (upstream's
/// ExpectationsTimeout).
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    pub fn expect_created(&self, owner: &str, pod: String) {
        let mut all = self.by_owner.lock().expect("expectations lock");
        let pending = all.entry(owner.to_string()).or_default();
        pending.created.insert(pod);
        pending.since.get_or_insert_with(Instant::now);
    }

    pub fn expect_deleted(&self, owner: &str, uid: String) {
        let mut all = self.by_owner.lock().expect("expectations lock");
        let pending = all.entry(owner.to_string()).or_default();
        pending.deleted.insert(uid);
        pending.since.get_or_insert_with(Instant::now);
    }

    /// The informer saw `pod` (added, changed or deleted): it no longer needs to be waited for.
    pub fn observed(&self, owner: &str, pod: &Pod, gone: bool) {
        let mut all = self.by_owner.lock().expect("expectations lock");
        let Some(pending) = all.get_mut(owner) else { return };
        if let Some(name) = &pod.metadata.name {
            pending.created.remove(name);
        }
        if (gone || pod.metadata.deletion_timestamp.is_some())
            && let Some(uid) = &pod.metadata.uid
        {
            pending.deleted.remove(uid);
        }
    }

    /// Whether the cache shows every pod created and none deleted; forgets what it has seen.
    pub fn satisfied(&self, owner: &str, pods: &Cache<Pod>) -> bool {
        let mut all = self.by_owner.lock().expect("expectations lock");
        let Some(pending) = all.get_mut(owner) else { return true };
        let namespace = owner.split_once('/').map_or("", |(ns, _)| ns);
        pending.created.retain(|name| pods.get(namespace, name).is_none());
        if !pending.deleted.is_empty() {
            let still_there: HashSet<String> = pods
                .list(namespace)
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            pending.deleted.retain(|uid| still_there.contains(uid));
        }
        let done = pending.created.is_empty() && pending.deleted.is_empty();
        let expired = pending.since.is_some_and(|t| t.elapsed() > TIMEOUT);
        if done || expired {
            all.remove(owner);
            return true;
        }
        false
    }

    pub fn forget(&self, owner: &str) {
        self.by_owner.lock().expect("expectations lock").remove(owner);
    }
}
