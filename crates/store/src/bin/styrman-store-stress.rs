//! Test helper, not a user tool: hammers an embedded store with writes and prints one line per
//! acknowledged write, so the crash test can kill -9 it mid-storm and then check that every
//! acknowledged write survived.
//!
//! Usage: `styrman-store-stress DATA_DIR WRITERS`. Output lines:
//! `created KEY REVISION` and `updated KEY VALUE REVISION`.

use std::io::Write;

use bytes::Bytes;
use styrman_store::{Backend, embedded::EmbeddedStore};

/// The value stored under `key`: deterministic, so the checker can recompute it, and about the
/// size of a small pod object.
fn value_for(key: &str) -> Bytes {
    Bytes::from(key.repeat(2048 / key.len().max(1) + 1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: styrman-store-stress DATA_DIR WRITERS");
    let writers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(8);
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.as_ref()).expect("open store"));
    let round = store.current_revision().await.unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let counter = format!("/registry/crash/counters/r{round}-w{w}");
            let mut counter_rev = store.create(&counter, Bytes::from_static(b"0")).await.unwrap();
            for n in 0u64.. {
                let key = format!("/registry/crash/objects/r{round}-w{w}-{n}");
                let rev = store.create(&key, value_for(&key)).await.unwrap();
                writeln!(out.lock().unwrap(), "created {key} {rev}").unwrap();
                counter_rev = store
                    .update(&counter, Bytes::from((n + 1).to_string()), counter_rev)
                    .await
                    .unwrap();
                writeln!(out.lock().unwrap(), "updated {counter} {} {counter_rev}", n + 1).unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
