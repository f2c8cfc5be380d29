//! Lease leader election (`styrman_runtime::LeaderElection`, what the controller manager and
//! scheduler use) against a running server: one leader at a time, takeover once a crashed
//! leader's lease expires, and an immediate handover when a leader stops cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use styrman_runtime::LeaderElection;
use styrman_testkit::Cluster;

fn candidate(client: &kube::Client) -> LeaderElection {
    let mut election = LeaderElection::new(client.clone(), "default", "test-leader");
    election.lease_duration = Duration::from_secs(2);
    election.renew_deadline = Duration::from_millis(1500);
    election.retry_period = Duration::from_millis(200);
    election
}

/// Runs a candidate whose leadership sets `leading`; stops (releasing the lease) when
/// `stop` fires.
fn run(
    election: LeaderElection,
    leading: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(election.run(
        async move {
            leading.store(true, Ordering::SeqCst);
            futures::future::pending().await
        },
        async move {
            let _ = stop.await;
        },
    ))
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lease(client: &kube::Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get("test-leader")
        .await
        .unwrap()
}

#[test]
fn one_leader_at_a_time_with_takeover_and_handover() {
    // Started from the test's own thread: its children die with the thread that started them.
    let cluster = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(leadership(cluster));
}

async fn leadership(cluster: Cluster) {
    let client = styrman_runtime::connect(&cluster.kubeconfig(), "leader-election-test")
        .await
        .unwrap();

    let a = candidate(&client);
    let a_id = a.identity().to_string();
    let a_leading = Arc::new(AtomicBool::new(false));
    let (_a_stop, a_stop_rx) = tokio::sync::oneshot::channel();
    let a_task = run(a, Arc::clone(&a_leading), a_stop_rx);
    eventually("A leads", || a_leading.load(Ordering::SeqCst)).await;

    let b = candidate(&client);
    let b_id = b.identity().to_string();
    let b_leading = Arc::new(AtomicBool::new(false));
    let (b_stop, b_stop_rx) = tokio::sync::oneshot::channel();
    let b_task = run(b, Arc::clone(&b_leading), b_stop_rx);
    // B keeps trying for several lease durations while A renews: it must not lead.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!b_leading.load(Ordering::SeqCst), "two leaders at once");
    assert_eq!(
        lease(&client).await.spec.unwrap().holder_identity.as_deref(),
        Some(a_id.as_str())
    );

    // A dies without a word: B takes over once A's lease has gone unrenewed.
    a_task.abort();
    eventually("B takes over", || b_leading.load(Ordering::SeqCst)).await;
    let spec = lease(&client).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(b_id.as_str()));
    assert_eq!(spec.lease_transitions, Some(1));

    // B stops cleanly: it releases the lease, so C need not wait for it to expire.
    b_stop.send(()).unwrap();
    b_task.await.unwrap().unwrap();
    let released = lease(&client).await.spec.unwrap();
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_duration_seconds, Some(1));
    let c = candidate(&client);
    let c_leading = Arc::new(AtomicBool::new(false));
    let (_c_stop, c_stop_rx) = tokio::sync::oneshot::channel();
    let _c_task = run(c, Arc::clone(&c_leading), c_stop_rx);
    eventually("C leads", || c_leading.load(Ordering::SeqCst)).await;
}
