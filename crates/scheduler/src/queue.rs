//! The scheduling queue, as kube-scheduler's: pending pods wait in the active queue (highest
//! priority first, then oldest), a pod that failed waits out a backoff (1 s doubling to 10 s), and
//! an unschedulable pod waits until a cluster event (a node added or changed, a pod deleted)
//! might make room, or at most five minutes.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits without a cluster event before it is tried again.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    /// Being scheduled; `updated` says the pod changed meanwhile.
    InFlight {
        updated: bool,
    },
}

struct Entry {
    pod: Arc<Pod>,
    place: Place,
    attempts: u32,
    /// When it may be tried again (backoff), or when it became unschedulable.
    since: Instant,
    ready_at: Instant,
    order: (Reverse<i32>, u64),
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    active: BTreeSet<((Reverse<i32>, u64), String)>,
    sequence: u64,
}

#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    ready: Notify,
}

pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether an update may change where (or whether) the pod fits: its spec, labels or
/// annotations. Status changes (the scheduler's own PodScheduled condition among them) do not.
fn could_change_placement(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl State {
    fn activate(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Active;
            self.active.insert((e.order, key.to_string()));
        }
    }
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue::default())
    }

    /// A pending pod, new or changed.
    pub fn upsert(&self, pod: Pod) {
        let key = key(&pod);
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let mut state = self.state.lock().expect("queue lock");
        let now = Instant::now();
        let activate = match state.entries.get_mut(&key) {
            Some(e) => {
                let relevant = could_change_placement(&e.pod, &pod);
                e.pod = Arc::new(pod);
                if !relevant {
                    return;
                }
                match e.place {
                    Place::InFlight { .. } => {
                        e.place = Place::InFlight { updated: true };
                        false
                    }
                    // A change may make it schedulable: try it once its backoff is over.
                    Place::Unschedulable => {
                        e.place = Place::Backoff;
                        false
                    }
                    Place::Active | Place::Backoff => false,
                }
            }
            None => {
                state.sequence += 1;
                let order = (Reverse(priority), state.sequence);
                state.entries.insert(
                    key.clone(),
                    Entry {
                        pod: Arc::new(pod),
                        place: Place::Active,
                        attempts: 0,
                        since: now,
                        ready_at: now,
                        order,
                    },
                );
                true
            }
        };
        if activate {
            state.activate(&key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// The pod is bound or gone.
    pub fn remove(&self, key: &str) {
        let mut state = self.state.lock().expect("queue lock");
        if let Some(e) = state.entries.remove(key) {
            state.active.remove(&(e.order, key.to_string()));
        }
    }

    /// The next pod to schedule; waits while there is none.
    pub async fn pop(&self) -> Arc<Pod> {
        loop {
            {
                let mut state = self.state.lock().expect("queue lock");
                if let Some((order, key)) = state.active.pop_first() {
                    let e = state.entries.get_mut(&key).expect("active entries exist");
                    debug_assert_eq!(order, e.order);
                    e.place = Place::InFlight { updated: false };
                    return Arc::clone(&e.pod);
                }
            }
            self.ready.notified().await;
        }
    }

    /// Scheduling found no node: wait for a cluster event (or a change to the pod).
    pub fn unschedulable(&self, key: &str) {
        self.after_attempt(key, Place::Unschedulable);
    }

    /// Scheduling or binding failed for another reason: try again after the backoff.
    pub fn failed(&self, key: &str) {
        self.after_attempt(key, Place::Backoff);
    }

    fn after_attempt(&self, key: &str, place: Place) {
        let mut state = self.state.lock().expect("queue lock");
        let Some(e) = state.entries.get_mut(key) else { return };
        e.attempts += 1;
        let now = Instant::now();
        let backoff = INITIAL_BACKOFF
            .saturating_mul(2u32.saturating_pow(e.attempts.saturating_sub(1).min(16)))
            .min(MAX_BACKOFF);
        e.ready_at = now + backoff;
        e.since = now;
        e.place = match (e.place, place) {
            (Place::InFlight { updated: true }, _) => Place::Backoff,
            (_, p) => p,
        };
    }

    /// Something changed that may make unschedulable pods fit: they go back to be tried (after
    /// their backoff).
    pub fn cluster_changed(&self) {
        let mut state = self.state.lock().expect("queue lock");
        for e in state.entries.values_mut() {
            if e.place == Place::Unschedulable {
                e.place = Place::Backoff;
            }
        }
    }

    /// Moves pods whose backoff is over, and pods unschedulable for too long, to the active
    /// queue. Call periodically.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("queue lock");
        let due: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| match e.place {
                Place::Backoff => e.ready_at <= now,
                Place::Unschedulable => now.duration_since(e.since) >= MAX_UNSCHEDULABLE,
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        let any = !due.is_empty();
        for key in due {
            state.activate(&key);
        }
        drop(state);
        if any {
            self.ready.notify_one();
        }
    }

    /// (active, backoff, unschedulable) counts.
    pub fn depth(&self) -> (usize, usize, usize) {
        let state = self.state.lock().expect("queue lock");
        let count = |p: Place| state.entries.values().filter(|e| e.place == p).count();
        (state.active.len(), count(Place::Backoff), count(Place::Unschedulable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": []}}))
        .unwrap()
    }

    #[tokio::test]
    async fn higher_priority_first_then_oldest() {
        let q = Queue::new();
        q.upsert(pod("low", 0));
        q.upsert(pod("high", 100));
        q.upsert(pod("low2", 0));
        let names: Vec<String> = futures::future::join_all((0..3).map(|_| q.pop()))
            .await
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["high", "low", "low2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_cluster_event_and_their_backoff() {
        let q = Queue::new();
        q.upsert(pod("p", 0));
        let p = q.pop().await;
        q.unschedulable(&key(&p));
        q.flush();
        assert_eq!(q.depth(), (0, 0, 1));
        q.cluster_changed();
        q.flush();
        assert_eq!(q.depth(), (0, 1, 0), "still in its backoff");
        tokio::time::advance(Duration::from_millis(1100)).await;
        q.flush();
        assert_eq!(q.depth(), (1, 0, 0));
    }
}
