//! The watch cache: one store watch per resource, fanned out to every client watch of it, with
//! a window of recent events so clients can resume from a recent resource version without a
//! store watch of their own (on etcd, each store watch is a stream to the cluster).
//!
//! A client watch from revision N is served here when the window reaches back to N; older
//! ones go to the store directly (which answers "compacted" when they are too old). A client
//! that falls behind the live feed has its watch closed, as kube-apiserver's cacher does: it
//! resumes from the last resource version it saw.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use styrman_store::{Event, EventBatch, Revision, Store, StoreError, WatchStream};
use tokio::sync::broadcast;

/// Events kept per resource for resuming watches.
const WINDOW: usize = 10_000;
/// Batches buffered per client before a slow one is dropped.
const LIVE_BUFFER: usize = 4096;

pub struct WatchCache {
    store: Store,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
}

struct Feed {
    live: broadcast::Sender<EventBatch>,
    window: Mutex<Window>,
}

/// The recent events of one resource: every event after `start` is in `events`.
struct Window {
    start: Revision,
    events: VecDeque<Event>,
}

impl WatchCache {
    pub fn new(store: Store) -> WatchCache {
        WatchCache {
            store,
            feeds: Mutex::new(HashMap::new()),
        }
    }

    /// Every change under `prefix` (a namespace's part of `resource_prefix`, or all of it)
    /// after `after`.
    pub async fn watch(&self, resource_prefix: &str, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let feed = self.feed(resource_prefix).await?;
        // Subscribe before reading the window, so nothing falls between the two.
        let live = feed.live.subscribe();
        let replay: Option<Vec<Event>> = {
            let window = feed.window.lock().expect("window lock");
            (after >= window.start).then(|| {
                window
                    .events
                    .iter()
                    .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect()
            })
        };
        let Some(replay) = replay else {
            return self.store.watch(prefix, after).await;
        };
        let last = replay.last().map_or(after, Event::revision);
        let state = Client {
            live,
            prefix: prefix.to_string(),
            last,
            replay: Some(replay),
        };
        Ok(WatchStream::from_stream(futures::stream::unfold(
            state,
            |mut client| async move {
                let batch = client.next().await?;
                Some((Ok(batch), client))
            },
        )))
    }

    async fn feed(&self, resource_prefix: &str) -> Result<Arc<Feed>, StoreError> {
        if let Some(feed) = self.feeds.lock().expect("feeds lock").get(resource_prefix) {
            return Ok(feed.clone());
        }
        let start = self.store.current_revision().await?;
        let stream = self.store.watch(resource_prefix, start).await?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let feed = Arc::new(Feed {
            live,
            window: Mutex::new(Window {
                start,
                events: VecDeque::new(),
            }),
        });
        let mut feeds = self.feeds.lock().expect("feeds lock");
        // Another request may have made it meanwhile: keep the first.
        if let Some(existing) = feeds.get(resource_prefix) {
            return Ok(existing.clone());
        }
        feeds.insert(resource_prefix.to_string(), feed.clone());
        tokio::spawn(pump(
            self.store.clone(),
            resource_prefix.to_string(),
            feed.clone(),
            stream,
            start,
        ));
        Ok(feed)
    }
}

/// Follows the store's watch of one resource, filling the window and the live feed; restarts
/// the store watch when it fails.
async fn pump(store: Store, prefix: String, feed: Arc<Feed>, mut stream: WatchStream, mut position: Revision) {
    loop {
        while let Some(item) = stream.next().await {
            match item {
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        position = last.revision();
                    }
                    {
                        let mut window = feed.window.lock().expect("window lock");
                        window.events.extend(batch.iter().cloned());
                        while window.events.len() > WINDOW {
                            let dropped = window.events.pop_front().expect("non-empty");
                            window.start = dropped.revision();
                        }
                    }
                    let _ = feed.live.send(batch);
                }
                Err(StoreError::Compacted { .. }) => {
                    // History the feed still needed is gone: start over at the head, and let
                    // older watchers go to the store (which will tell them it is compacted).
                    match store.current_revision().await {
                        Ok(head) => {
                            let mut window = feed.window.lock().expect("window lock");
                            window.events.clear();
                            window.start = head;
                            position = head;
                        }
                        Err(e) => tracing::warn!(error = %e, "watch cache cannot read the store revision"),
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, prefix, "watch cache lost its store watch; resuming");
                    break;
                }
            }
        }
        loop {
            match store.watch(&prefix, position).await {
                Ok(s) => {
                    stream = s;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, prefix, "watch cache cannot watch the store; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// One client watch served from a feed.
struct Client {
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    last: Revision,
    replay: Option<Vec<Event>>,
}

impl Client {
    /// The next batch for this client; `None` ends the watch (fell behind, or the cache went).
    async fn next(&mut self) -> Option<EventBatch> {
        if let Some(replay) = self.replay.take().filter(|r| !r.is_empty()) {
            return Some(replay.into());
        }
        loop {
            let batch = match self.live.recv().await {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return None,
            };
            let wanted = |e: &Event| e.revision() > self.last && e.kv.key.starts_with(&self.prefix);
            let matching = batch.iter().filter(|e| wanted(e)).count();
            if matching == 0 {
                continue;
            }
            let out: EventBatch = if matching == batch.len() {
                batch
            } else {
                batch.iter().filter(|e| wanted(e)).cloned().collect()
            };
            self.last = out.last().map_or(self.last, Event::revision);
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_revisions(stream: &mut WatchStream, n: usize) -> Vec<Revision> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.next_batch())
                .await
                .expect("in time")
                .expect("open")
                .expect("no error");
            out.extend(batch.iter().map(Event::revision));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_share_one_feed_and_resume_from_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = Arc::new(styrman_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let before_cache = store.create("/registry/configmaps/a/old", "x".into()).await.unwrap();
        let cache = WatchCache::new(store.clone());
        let all = "/registry/configmaps/";
        let head = store.current_revision().await.unwrap();
        let mut everything = cache.watch(all, all, head).await.unwrap();
        let mut only_b = cache.watch(all, "/registry/configmaps/b/", head).await.unwrap();
        assert_eq!(cache.feeds.lock().unwrap().len(), 1, "one feed per resource");

        let r1 = store.create("/registry/configmaps/a/x", "1".into()).await.unwrap();
        let r2 = store.create("/registry/configmaps/b/y", "2".into()).await.unwrap();
        assert_eq!(next_revisions(&mut everything, 2).await, [r1, r2]);
        assert_eq!(next_revisions(&mut only_b, 1).await, [r2]);

        // A late watch from inside the window replays from it.
        let mut late = cache.watch(all, all, r1).await.unwrap();
        assert_eq!(next_revisions(&mut late, 1).await, [r2]);
        // One from before the window goes to the store and still sees everything.
        let mut old = cache.watch(all, all, before_cache - 1).await.unwrap();
        assert_eq!(next_revisions(&mut old, 3).await, [before_cache, r1, r2]);
    }
}
