//! Opens each backend for a test: the embedded store in a temp dir, or a real etcd child process.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use styrman_store::{Event, Revision, Store, StoreConfig, WatchStream};
use styrman_testkit::EtcdServer;

pub struct Harness {
    pub store: Store,
    pub dir: Option<tempfile::TempDir>,
    pub etcd: Option<EtcdServer>,
}

impl Harness {
    pub async fn embedded() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::Embedded {
            data_dir: dir.path().to_path_buf(),
        };
        let store = styrman_store::open(&config).await.unwrap();
        Harness {
            store,
            dir: Some(dir),
            etcd: None,
        }
    }

    pub async fn etcd() -> Harness {
        let etcd = EtcdServer::start().expect("start etcd");
        let config = StoreConfig::Etcd {
            endpoints: vec![etcd.url().to_string()],
        };
        let store = styrman_store::open(&config).await.unwrap();
        Harness {
            store,
            dir: None,
            etcd: Some(etcd),
        }
    }
}

pub fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Reads events from a watch until `n` have arrived; fails the test after a generous timeout.
pub async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next_batch())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of {n} events: {events:?}", events.len()))
            .expect("watch ended early")
            .expect("watch failed");
        events.extend(batch.iter().cloned());
    }
    events
}

/// Asserts no event arrives within a short while.
pub async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next_batch()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

pub fn revisions(events: &[Event]) -> Vec<Revision> {
    events.iter().map(|e| e.revision()).collect()
}
