//! The work queue a controller's workers take keys from, with client-go's workqueue semantics:
//! a key is queued at most once however often it is added; a key being processed is never
//! handed to a second worker, and one added meanwhile is processed again after [`WorkQueue::done`];
//! a key whose processing failed comes back after a per-key exponential backoff.
//!
//! Keys, not objects, go through the queue: a worker reads the newest state when it gets to a
//! key, so a burst of changes to one object costs one reconcile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// First and largest retry delay (client-go's default per-item rate limiter: 5 ms doubling to
/// 1000 s).
const FIRST_RETRY: Duration = Duration::from_millis(5);
const MAX_RETRY: Duration = Duration::from_secs(1000);

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    /// Added while being processed: queued again by `done`.
    again: HashSet<K>,
    /// Waiting out a coalescing window (`add_coalesced`).
    coalescing: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<WorkQueue<K>> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                again: HashSet::new(),
                coalescing: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        })
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: K) {
        let mut state = self.state.lock().expect("work queue lock");
        if state.queued.contains(&key) {
            return;
        }
        if state.processing.contains(&key) {
            state.again.insert(key);
            return;
        }
        state.queued.insert(key.clone());
        state.queue.push_back(key);
        drop(state);
        self.ready.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` once `window` has passed, however often it is added meanwhile: a burst of
    /// changes (10 000 pods of one ReplicaSet becoming ready) costs one reconcile per window
    /// instead of one per change, each of which reads every pod.
    pub fn add_coalesced(self: &Arc<Self>, key: K, window: Duration) {
        {
            let mut state = self.state.lock().expect("work queue lock");
            if state.queued.contains(&key) || !state.coalescing.insert(key.clone()) {
                return;
            }
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            queue.state.lock().expect("work queue lock").coalescing.remove(&key);
            queue.add(key);
        });
    }

    /// Queues `key` again after its backoff, which doubles with each failure in a row.
    pub fn retry(self: &Arc<Self>, key: K) {
        let failures = {
            let mut state = self.state.lock().expect("work queue lock");
            let n = state.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, backoff(failures));
    }

    /// Forgets `key`'s failures: its next retry starts from the shortest backoff.
    pub fn forget(&self, key: &K) {
        self.state.lock().expect("work queue lock").failures.remove(key);
    }

    /// The next key to process; waits while there is none. Call [`WorkQueue::done`] after.
    pub async fn next(&self) -> K {
        loop {
            {
                let mut state = self.state.lock().expect("work queue lock");
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.processing.insert(key.clone());
                    return key;
                }
            }
            // notify_one keeps a permit when nobody waits, so an add between the check above
            // and this await is not missed.
            self.ready.notified().await;
        }
    }

    /// Ends processing `key`; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut state = self.state.lock().expect("work queue lock");
        state.processing.remove(key);
        if state.again.remove(key) {
            state.queued.insert(key.clone());
            state.queue.push_back(key.clone());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Runs `workers` workers until the process ends: each takes a key, runs `process` on it,
    /// forgets its failures on success and retries it with backoff on error.
    pub async fn run_workers<F, Fut>(self: Arc<Self>, workers: usize, name: &'static str, process: F)
    where
        F: Fn(K) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
        K: std::fmt::Display + Sync,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let queue = Arc::clone(&self);
            let process = process.clone();
            tasks.spawn(async move {
                loop {
                    let key = queue.next().await;
                    let result = process(key.clone()).await;
                    queue.done(&key);
                    match result {
                        Ok(()) => queue.forget(&key),
                        Err(e) => {
                            tracing::warn!(controller = name, key = %key, error = %format!("{e:#}"), "sync failed; will retry");
                            queue.retry(key);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// How many keys wait to be processed.
    pub fn len(&self) -> usize {
        self.state.lock().expect("work queue lock").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processed_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add("a");
        let key = q.next().await;
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker while processed");
        q.done(&key);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_on_add() {
        let q = WorkQueue::new();
        let worker = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.add(7);
        assert_eq!(worker.await.unwrap(), 7);
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(40));
        assert_eq!(backoff(100), MAX_RETRY);
    }
}
