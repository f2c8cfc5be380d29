//! The store interface's behaviour, checked identically against the embedded store and a real
//! etcd: each test below runs once per backend.

mod common;

use common::{Harness, assert_quiet, next_events, revisions, value};
use styrman_store::{EventKind, RangeRequest, Store, StoreError, keys};

macro_rules! for_each_backend {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Harness::embedded().await.store.clone()).await })*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let harness = super::Harness::etcd().await;
                super::$test(harness.store.clone()).await
            })*
        }
    };
}

for_each_backend!(
    create_then_get,
    create_of_existing_key_fails,
    update_is_compare_and_swap,
    delete_is_guarded_and_returns_the_value,
    range_pages_through_a_prefix,
    range_reads_a_past_revision,
    watch_replays_history_then_follows,
    watch_filters_by_prefix,
    compaction_refuses_older_revisions,
    future_revisions_are_refused,
);

/// (key, value) of each key a range returned.
fn key_values(read: &styrman_store::RangeResponse) -> Vec<(String, bytes::Bytes)> {
    read.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect()
}

async fn create_then_get(store: Store) {
    let start = store.current_revision().await.unwrap();
    assert!(store.get("/registry/pods/default/a").await.unwrap().is_none());
    let rev = store.create("/registry/pods/default/a", value("one")).await.unwrap();
    assert!(rev > start);
    assert_eq!(store.current_revision().await.unwrap(), rev);
    let kv = store.get("/registry/pods/default/a").await.unwrap().unwrap();
    assert_eq!(kv.key, "/registry/pods/default/a");
    assert_eq!(kv.value, value("one"));
    assert_eq!((kv.create_revision, kv.mod_revision), (rev, rev));
}

async fn create_of_existing_key_fails(store: Store) {
    let rev = store.create("/registry/pods/default/a", value("one")).await.unwrap();
    let err = store
        .create("/registry/pods/default/a", value("two"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/registry/pods/default/a"),
        "{err}"
    );
    // The failed write changed nothing and took no revision.
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert_eq!(
        store.get("/registry/pods/default/a").await.unwrap().unwrap().value,
        value("one")
    );
}

async fn update_is_compare_and_swap(store: Store) {
    let key = "/registry/configmaps/default/c";
    let created = store.create(key, value("v1")).await.unwrap();
    let updated = store.update(key, value("v2"), created).await.unwrap();
    assert!(updated > created);

    // A writer still holding the first revision loses, and learns the current value.
    let err = store.update(key, value("stale"), created).await.unwrap_err();
    match err {
        StoreError::Conflict { expected, current, .. } => {
            assert_eq!(expected, created);
            assert_eq!(current.mod_revision, updated);
            assert_eq!(current.value, value("v2"));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (value("v2"), created, updated)
    );

    let err = store
        .update("/registry/configmaps/default/missing", value("x"), updated)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn delete_is_guarded_and_returns_the_value(store: Store) {
    let key = "/registry/secrets/default/s";
    let created = store.create(key, value("secret")).await.unwrap();
    let err = store.delete(key, Some(created + 100)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        store.get(key).await.unwrap().is_some(),
        "a failed delete must not delete"
    );

    let deleted = store.delete(key, Some(created)).await.unwrap();
    assert!(deleted.revision > created);
    assert_eq!(deleted.prev.value, value("secret"));
    assert_eq!(deleted.prev.mod_revision, created);
    assert!(store.get(key).await.unwrap().is_none());

    let err = store.delete(key, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    // Unconditional delete; then the key can be created again, with a new create revision.
    let again = store.create(key, value("again")).await.unwrap();
    assert!(again > deleted.revision);
    store.delete(key, None).await.unwrap();
    assert!(store.get(key).await.unwrap().is_none());
}

async fn range_pages_through_a_prefix(store: Store) {
    for i in 0..7 {
        store
            .create(&keys::object_key("pods", Some("default"), &format!("p{i}")), value("x"))
            .await
            .unwrap();
    }
    // Neighbours that must not show up: a longer namespace name and another resource.
    store.create("/registry/pods/default2/p0", value("y")).await.unwrap();
    store
        .create("/registry/podtemplates/default/p0", value("z"))
        .await
        .unwrap();

    let prefix = keys::prefix("pods", Some("default"));
    let all = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = all
        .kvs
        .iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision().await.unwrap());

    // Pages of 3 at the first page's revision, as a paginated LIST does.
    let mut seen = Vec::new();
    let mut start = None;
    let mut at = None;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: prefix.clone(),
                start: start.clone(),
                limit: 3,
                revision: at,
            })
            .await
            .unwrap();
        assert!(page.kvs.len() <= 3);
        at = Some(page.revision);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        start = Some(keys::after(&page.kvs.last().unwrap().key));
        // Writes between pages do not leak into later pages.
        store
            .create(
                &keys::object_key("pods", Some("default"), &format!("p{}a", seen.len())),
                value("n"),
            )
            .await
            .unwrap();
    }
    assert_eq!(seen, all.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>());

    // An exact page: `more` is false when nothing follows.
    let cluster = store
        .range(RangeRequest {
            prefix: "/registry/podtemplates/".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((cluster.kvs.len(), cluster.more), (1, false));
}

async fn range_reads_a_past_revision(store: Store) {
    let p = |n: &str| format!("/registry/pods/ns/{n}");
    let a = store.create(&p("a"), value("a1")).await.unwrap();
    store.create(&p("b"), value("b1")).await.unwrap();
    let c = store.create(&p("c"), value("c1")).await.unwrap();
    let snapshot = store.current_revision().await.unwrap();

    // Change everything after the snapshot: update, delete, create (before and after others).
    store.update(&p("a"), value("a2"), a).await.unwrap();
    store.delete(&p("b"), None).await.unwrap();
    store.update(&p("c"), value("c2"), c).await.unwrap();
    store.create(&p("0"), value("new-first")).await.unwrap();
    store.create(&p("d"), value("new-last")).await.unwrap();
    let c2 = store.get(&p("c")).await.unwrap().unwrap().mod_revision;
    store.update(&p("c"), value("c3"), c2).await.unwrap();

    let old = store
        .range(RangeRequest {
            prefix: "/registry/pods/ns/".into(),
            revision: Some(snapshot),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = key_values(&old);
    assert_eq!(
        got,
        [(p("a"), value("a1")), (p("b"), value("b1")), (p("c"), value("c1"))]
    );
    assert_eq!(old.revision, snapshot);

    // Paging at the old revision, starting after "a".
    let page = store
        .range(RangeRequest {
            prefix: "/registry/pods/ns/".into(),
            start: Some(keys::after(&p("a"))),
            limit: 1,
            revision: Some(snapshot),
        })
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 1);
    assert_eq!(page.kvs[0].key, p("b"));
    assert!(page.more);

    let now = store
        .range(RangeRequest {
            prefix: "/registry/pods/ns/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = key_values(&now);
    assert_eq!(
        got,
        [
            (p("0"), value("new-first")),
            (p("a"), value("a2")),
            (p("c"), value("c3")),
            (p("d"), value("new-last"))
        ]
    );
}

async fn watch_replays_history_then_follows(store: Store) {
    let key = "/registry/deployments/default/web";
    let before = store.current_revision().await.unwrap();
    let r1 = store.create(key, value("v1")).await.unwrap();
    let r2 = store.update(key, value("v2"), r1).await.unwrap();

    let mut watch = store.watch("/registry/deployments/", before).await.unwrap();
    let history = next_events(&mut watch, 2).await;
    assert_eq!(revisions(&history), [r1, r2]);
    assert_eq!(history[0].kind, EventKind::Put);
    assert!(history[0].prev.is_none(), "a creation has no previous value");
    assert_eq!(history[1].kv.value, value("v2"));
    assert_eq!(history[1].prev.as_ref().unwrap().value, value("v1"));
    assert_eq!(history[1].kv.create_revision, r1);

    // Live changes follow, including a deletion carrying the deleted value.
    let deleted = store.delete(key, Some(r2)).await.unwrap();
    let live = next_events(&mut watch, 1).await;
    assert_eq!(live[0].kind, EventKind::Delete);
    assert_eq!(live[0].revision(), deleted.revision);
    assert_eq!(live[0].kv.key, key);
    assert_eq!(live[0].prev.as_ref().unwrap().value, value("v2"));
    assert_quiet(&mut watch).await;

    // Watching from the newest revision sees only what comes next.
    let mut fresh = store.watch("/registry/deployments/", deleted.revision).await.unwrap();
    let r4 = store.create(key, value("v3")).await.unwrap();
    assert_eq!(revisions(&next_events(&mut fresh, 1).await), [r4]);
}

async fn watch_filters_by_prefix(store: Store) {
    let from = store.current_revision().await.unwrap();
    let mut watch = store.watch("/registry/pods/default/", from).await.unwrap();
    store
        .create("/registry/pods/default2/x", value("other ns"))
        .await
        .unwrap();
    store
        .create("/registry/services/default/x", value("other resource"))
        .await
        .unwrap();
    let mine = store.create("/registry/pods/default/x", value("mine")).await.unwrap();
    let events = next_events(&mut watch, 1).await;
    assert_eq!(revisions(&events), [mine]);
    assert_quiet(&mut watch).await;
}

async fn compaction_refuses_older_revisions(store: Store) {
    let key = "/registry/leases/kube-node-lease/n1";
    let mut rev = store.create(key, value("0")).await.unwrap();
    let first = rev;
    for i in 1..5 {
        rev = store.update(key, value(&i.to_string()), rev).await.unwrap();
    }
    let other = store
        .create("/registry/leases/kube-node-lease/n2", value("kept"))
        .await
        .unwrap();
    let horizon = rev; // the revision of the last update of n1
    store.compact(horizon).await.unwrap();

    let err = store
        .range(RangeRequest {
            prefix: "/registry/leases/".into(),
            revision: Some(first),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    let err = store
        .watch("/registry/leases/", first)
        .await
        .err()
        .expect("watch below the horizon must fail");
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    let err = store.compact(horizon).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "compacting twice: {err}");

    // At the horizon, reads and watches still work, and every key keeps its newest value.
    let at = store
        .range(RangeRequest {
            prefix: "/registry/leases/".into(),
            revision: Some(horizon),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at.kvs.len(), 1);
    assert_eq!(at.kvs[0].value, value("4"));
    let mut watch = store.watch("/registry/leases/", horizon - 1).await.unwrap();
    let replay = next_events(&mut watch, 2).await;
    assert_eq!(revisions(&replay), [horizon, other]);
    // etcd drops a previous value that lies below the horizon; the embedded store keeps it.
    if let Some(prev) = &replay[0].prev {
        assert_eq!(prev.value, value("3"));
    }
    let now = store.get(key).await.unwrap().unwrap();
    assert_eq!(now.value, value("4"));
    // Writing on after compaction: the watch sees it with its previous value.
    let next = store.update(key, value("5"), now.mod_revision).await.unwrap();
    let live = next_events(&mut watch, 1).await;
    assert_eq!(live[0].revision(), next);
    assert_eq!(live[0].prev.as_ref().unwrap().value, value("4"));
}

async fn future_revisions_are_refused(store: Store) {
    store.create("/registry/pods/default/a", value("x")).await.unwrap();
    let current = store.current_revision().await.unwrap();
    let err = store
        .range(RangeRequest {
            prefix: "/registry/pods/".into(),
            revision: Some(current + 10),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
    let err = store.compact(current + 10).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
}
