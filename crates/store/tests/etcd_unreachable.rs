//! An etcd that cannot be reached gives a clear, retryable error, never a panic; a client that
//! waits for it connects once it comes up.

use std::time::{Duration, Instant};

use styrman_store::etcd::EtcdStore;
use styrman_store::{Backend, StoreError};
use styrman_testkit::{EtcdServer, free_port};

#[tokio::test]
async fn connecting_to_nothing_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let started = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&url))
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&url), "the error names the endpoint: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_etcd_fails_requests_cleanly() {
    let etcd = EtcdServer::start().unwrap();
    let store = EtcdStore::connect(&[etcd.url().to_string()]).await.unwrap();
    store.create("/registry/pods/default/a", "x".into()).await.unwrap();
    drop(etcd);
    let err = store.get("/registry/pods/default/a").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_retry_waits_for_etcd() {
    // Start the waiting client first, then etcd: the client must connect once etcd is up.
    let etcd_dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let waiting = tokio::spawn({
        let url = url.clone();
        async move { EtcdStore::connect_with_retry(&[url]).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiting.is_finished(), "it must keep waiting while etcd is down");
    let _etcd = EtcdServer::start_at(etcd_dir.path(), port).unwrap();
    let store = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("connected in time")
        .unwrap()
        .unwrap();
    store.create("/registry/pods/default/a", "x".into()).await.unwrap();
}
