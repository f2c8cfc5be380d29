//! Property tests, against both backends: random operation sequences behave like a simple model
//! (a map plus a revision counter); revisions strictly increase; a watch from any revision sees
//! every later change exactly once, in order, with the right previous value; a range at any past
//! revision sees the state of that revision; compare-and-swap loses no update under concurrent
//! writers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{Harness, value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use styrman_store::{Event, EventKind, RangeRequest, Revision, Store, StoreError, keys};

#[derive(Clone, Debug)]
enum Op {
    Create { key: u8, value: u8 },
    Update { key: u8, value: u8, stale: bool },
    Delete { key: u8, guarded: bool, stale: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<u8>()).prop_map(|(key, value)| Op::Create { key, value }),
        (0u8..5, any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(key, value, stale)| Op::Update {
            key,
            value,
            stale
        }),
        (0u8..5, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(key, guarded, stale)| { Op::Delete { key, guarded, stale } }),
    ]
}

/// What the model says a key holds: (value, create revision, mod revision).
type State = BTreeMap<String, (Bytes, Revision, Revision)>;

/// What a watch must report for one successful write.
#[derive(Debug, PartialEq)]
struct Expected {
    kind: EventKind,
    key: String,
    value: Bytes,
    revision: Revision,
    prev: Option<Bytes>,
}

impl Expected {
    fn of(event: &Event) -> Expected {
        Expected {
            kind: event.kind,
            key: event.kv.key.clone(),
            value: event.kv.value.clone(),
            revision: event.revision(),
            prev: event.prev.as_ref().map(|p| p.value.clone()),
        }
    }
}

async fn check_against_model(store: &Store, prefix: &str, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let start = store.current_revision().await.unwrap();
    let mut state = State::new();
    let mut snapshots = vec![(start, state.clone())];
    let mut expected = Vec::new();
    let mut last = start;
    let key_of = |k: u8| format!("{prefix}k{k}");

    for op in ops {
        let result = match &op {
            Op::Create { key, value } => {
                let key = key_of(*key);
                let v = Bytes::from(vec![*value]);
                match (store.create(&key, v.clone()).await, state.contains_key(&key)) {
                    (Ok(rev), false) => {
                        state.insert(key.clone(), (v.clone(), rev, rev));
                        expected.push(Expected {
                            kind: EventKind::Put,
                            key,
                            value: v,
                            revision: rev,
                            prev: None,
                        });
                        Some(rev)
                    }
                    (Err(StoreError::AlreadyExists { .. }), true) => None,
                    (other, exists) => {
                        return Err(TestCaseError::fail(format!("{op:?} (exists: {exists}) gave {other:?}")));
                    }
                }
            }
            Op::Update { key, value, stale } => {
                let key = key_of(*key);
                let v = Bytes::from(vec![*value]);
                let current = state.get(&key).cloned();
                let guess = match &current {
                    Some((_, _, m)) if *stale => m - 1,
                    Some((_, _, m)) => *m,
                    None => last,
                };
                match (store.update(&key, v.clone(), guess).await, current) {
                    (Ok(rev), Some((old, create, _))) if !stale => {
                        state.insert(key.clone(), (v.clone(), create, rev));
                        expected.push(Expected {
                            kind: EventKind::Put,
                            key,
                            value: v,
                            revision: rev,
                            prev: Some(old),
                        });
                        Some(rev)
                    }
                    (Err(StoreError::Conflict { current: now, .. }), Some((old, _, m))) if *stale => {
                        prop_assert_eq!((now.value, now.mod_revision), (old, m));
                        None
                    }
                    (Err(StoreError::NotFound { .. }), None) => None,
                    (other, cur) => {
                        return Err(TestCaseError::fail(format!("{op:?} (state {cur:?}) gave {other:?}")));
                    }
                }
            }
            Op::Delete { key, guarded, stale } => {
                let key = key_of(*key);
                let current = state.get(&key).cloned();
                let guard = match &current {
                    Some((_, _, m)) if *guarded && *stale => Some(m - 1),
                    Some((_, _, m)) if *guarded => Some(*m),
                    _ if *guarded => Some(last),
                    _ => None,
                };
                match (store.delete(&key, guard).await, current) {
                    (Ok(done), Some((old, _, _))) if !(*guarded && *stale) => {
                        prop_assert_eq!(&done.prev.value, &old);
                        state.remove(&key);
                        expected.push(Expected {
                            kind: EventKind::Delete,
                            key,
                            value: Bytes::new(),
                            revision: done.revision,
                            prev: Some(old),
                        });
                        Some(done.revision)
                    }
                    (Err(StoreError::Conflict { .. }), Some(_)) if *guarded && *stale => None,
                    (Err(StoreError::NotFound { .. }), None) => None,
                    (other, cur) => {
                        return Err(TestCaseError::fail(format!("{op:?} (state {cur:?}) gave {other:?}")));
                    }
                }
            }
        };
        if let Some(rev) = result {
            prop_assert!(rev > last, "revision {} after {}", rev, last);
            last = rev;
            snapshots.push((rev, state.clone()));
        }
        prop_assert_eq!(store.current_revision().await.unwrap(), last);
    }

    // Every past revision reads as the model had it then.
    // (Revision 0, an empty store's, cannot be asked for: 0 means "newest", as on etcd.)
    for (rev, snapshot) in snapshots.iter().filter(|(rev, _)| *rev > 0) {
        let got = state_at(store, prefix, *rev).await.unwrap();
        prop_assert_eq!(&got, snapshot, "range at revision {}", rev);
    }

    // A watch from the start, and one from the middle, see exactly the expected changes. A
    // sentinel write marks the end, so anything extra would show up before it.
    let sentinel = store.create(&format!("{prefix}~end"), value("end")).await.unwrap();
    let middle = snapshots[snapshots.len() / 2].0;
    for from in [start, middle] {
        let seen = watch_until(store, prefix, from, sentinel).await;
        let want: Vec<_> = expected.iter().filter(|e| e.revision > from).collect();
        prop_assert_eq!(seen.iter().collect::<Vec<_>>(), want, "watch from {}", from);
    }

    // Compact at the middle: older revisions are gone, newer ones read and replay as before.
    if middle > 0 {
        store.compact(middle).await.unwrap();
        for (rev, snapshot) in snapshots.iter().filter(|(rev, _)| *rev > 0) {
            let read = state_at(store, prefix, *rev).await;
            if *rev < middle {
                let compacted = matches!(read, Err(StoreError::Compacted { .. }));
                prop_assert!(compacted, "range at {} after compacting at {}: {:?}", rev, middle, read);
            } else {
                prop_assert_eq!(
                    &read.unwrap(),
                    snapshot,
                    "range at {} after compacting at {}",
                    rev,
                    middle
                );
            }
        }
        let seen = watch_until(store, prefix, middle, sentinel).await;
        let want: Vec<_> = expected.iter().filter(|e| e.revision > middle).collect();
        prop_assert_eq!(
            seen.iter().collect::<Vec<_>>(),
            want,
            "watch from {} after compacting there",
            middle
        );
    }
    Ok(())
}

/// The keys under `prefix` as of `revision`, in the model's shape.
async fn state_at(store: &Store, prefix: &str, revision: Revision) -> Result<State, StoreError> {
    let request = RangeRequest {
        prefix: prefix.to_string(),
        revision: Some(revision),
        ..Default::default()
    };
    let read = store.range(request).await?;
    Ok(read
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.create_revision, kv.mod_revision)))
        .collect())
}

/// Everything a watch from `from` reports before the `sentinel` revision.
async fn watch_until(store: &Store, prefix: &str, from: Revision, sentinel: Revision) -> Vec<Expected> {
    let mut watch = store.watch(prefix, from).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next_batch())
            .await
            .expect("watch timed out")
            .expect("watch ended")
            .expect("watch failed");
        for event in batch.iter() {
            if event.revision() == sentinel {
                return seen;
            }
            seen.push(Expected::of(event));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run_model_check(harness: &Harness, rt: &tokio::runtime::Runtime, cases: u32) {
    let case = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            // Each case gets a fresh prefix, so the model starts empty on a shared store.
            let prefix = keys::prefix("prop", Some(&format!("case{}", case.fetch_add(1, Ordering::Relaxed))));
            rt.block_on(check_against_model(&harness.store, &prefix, ops))
        })
        .unwrap();
}

#[test]
fn embedded_behaves_like_the_model() {
    let rt = runtime();
    let harness = rt.block_on(Harness::embedded());
    run_model_check(&harness, &rt, 64);
}

#[test]
fn etcd_behaves_like_the_model() {
    let rt = runtime();
    let harness = rt.block_on(Harness::etcd());
    run_model_check(&harness, &rt, 24);
}

/// Writers racing to increment one counter with get + compare-and-swap, retrying on conflict:
/// the final count is exact, and a watch sees every increment once, in order.
async fn concurrent_increments(store: Store) {
    const WRITERS: usize = 8;
    const EACH: usize = 30;
    let key = "/registry/configmaps/default/counter";
    let start = store.create(key, value("0")).await.unwrap();
    let mut watch = store.watch(key, start).await.unwrap();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            let mut current = store.get(key).await.unwrap().unwrap();
            for _ in 0..EACH {
                loop {
                    let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                    match store
                        .update(key, value(&(n + 1).to_string()), current.mod_revision)
                        .await
                    {
                        Ok(_) => {
                            current = store.get(key).await.unwrap().unwrap();
                            break;
                        }
                        Err(StoreError::Conflict { current: now, .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            current = *now;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = WRITERS * EACH;
    let last = store.get(key).await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&last.value).unwrap(), total.to_string());
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "the writers never raced; the test proves nothing"
    );

    let events = common::next_events(&mut watch, total).await;
    assert_eq!(events.len(), total);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(std::str::from_utf8(&event.kv.value).unwrap(), (i + 1).to_string());
        assert_eq!(
            std::str::from_utf8(&event.prev.as_ref().unwrap().value).unwrap(),
            i.to_string()
        );
    }
    assert!(events.windows(2).all(|w| w[0].revision() < w[1].revision()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_compare_and_swap_loses_no_update() {
    concurrent_increments(Harness::embedded().await.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compare_and_swap_loses_no_update() {
    let harness = Harness::etcd().await;
    concurrent_increments(harness.store.clone()).await;
}
