//! kube-rs, the Rust client controllers are written with, against a running server: a
//! `Controller` that owns what it makes (server-side apply, owner references, the garbage
//! collector cleaning up), a reflector that stays equal to the server's state, and a watcher
//! that carries on across an API server kill -9.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use styrman_testkit::Cluster;

/// Starts a cluster from the test's own thread (its children die with the thread that
/// started them) and runs `test` on a runtime with a client for it.
fn with_cluster<F, Fut>(test: F)
where
    F: FnOnce(Cluster, kube::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cluster = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = styrman_runtime::connect(&cluster.kubeconfig(), "kube-client-test")
            .await
            .unwrap();
        test(cluster, client).await
    });
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

struct Context {
    client: kube::Client,
    reconciles: AtomicUsize,
}

/// Keeps `<name>-mirror` equal to every ConfigMap labelled `mirror=true`, owned by it.
async fn reconcile(source: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let namespace = source.namespace().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = source.controller_owner_ref(&()).unwrap();
    let mirror = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{}-mirror", source.name_any())),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: source.data.clone(),
        ..Default::default()
    };
    let patch =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": mirror.metadata, "data": mirror.data});
    api.patch(
        &mirror.name_any(),
        &PatchParams::apply("mirror-controller").force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(Action::await_change())
}

fn on_error(_: Arc<ConfigMap>, error: &kube::Error, _: Arc<Context>) -> Action {
    panic!("reconcile failed: {error}");
}

#[test]
fn a_controller_owns_what_it_makes() {
    with_cluster(|cluster, client| async move {
        controller_owns_what_it_makes(client).await;
        drop(cluster);
    });
}

async fn controller_owns_what_it_makes(client: kube::Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default().labels("mirror=true"))
        .owns(api.clone(), watcher::Config::default())
        .run(reconcile, on_error, Arc::clone(&ctx))
        .for_each(|_| async {});
    tokio::spawn(controller);

    api.create(
        &PostParams::default(),
        &config_map("a", &[("mirror", "true")], &[("x", "1")]),
    )
    .await
    .unwrap();
    let mirror_data = |want: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt("a-mirror")
                .await
                .unwrap()
                .and_then(|m| m.data)
                .is_some_and(|d| d.get("x").map(String::as_str) == Some(want))
        }
    };
    eventually("the mirror is made", || mirror_data("1")).await;
    let mirror = api.get("a-mirror").await.unwrap();
    let owner = &mirror.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ConfigMap", "a", Some(true))
    );
    assert_eq!(mirror.managed_fields()[0].manager.as_deref(), Some("mirror-controller"));

    // A change to the source is mirrored.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"x": "2"}})),
    )
    .await
    .unwrap();
    eventually("the change is mirrored", || mirror_data("2")).await;

    // A deleted mirror is made again: the controller watches what it owns.
    api.delete("a-mirror", &DeleteParams::default()).await.unwrap();
    eventually("the mirror is made again", || mirror_data("2")).await;

    // Deleting the source lets the garbage collector take the mirror.
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("the mirror is collected", || {
        let api = api.clone();
        async move { api.get_opt("a-mirror").await.unwrap().is_none() }
    })
    .await;
    assert!(ctx.reconciles.load(Ordering::SeqCst) >= 3);
}

#[test]
fn reflectors_and_watchers_survive_an_api_server_kill() {
    with_cluster(|cluster, client| async move { watchers_survive_a_kill(cluster, client).await });
}

async fn watchers_survive_a_kill(mut cluster: Cluster, client: kube::Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let seen: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Default::default();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("app=kept")),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(object) = stream.next().await {
                if let Ok(cm) = object {
                    let value = cm.data.as_ref().and_then(|d| d.get("v")).cloned().unwrap_or_default();
                    seen.lock().unwrap().insert(cm.name_any(), value);
                }
            }
        }
    });
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("before-{i}"), &[("app", "kept")], &[("v", "1")]),
        )
        .await
        .unwrap();
    }
    eventually("the watcher sees every object", || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().len() == 5 }
    })
    .await;

    tokio::task::block_in_place(|| cluster.kill_component("apiserver")).expect("restart the API server");

    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("after-{i}"), &[("app", "kept")], &[("v", "2")]),
        )
        .await
        .unwrap();
    }
    api.patch(
        "before-0",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    api.delete("before-1", &DeleteParams::default()).await.unwrap();
    eventually("the watcher carries on after the restart", || {
        let seen = Arc::clone(&seen);
        async move {
            let seen = seen.lock().unwrap();
            seen.len() == 10 && seen.get("before-0").map(String::as_str) == Some("3")
        }
    })
    .await;
    // The reflector's cache equals the server's state, deletion included.
    let server: Vec<String> = {
        let mut names: Vec<String> = api
            .list(&kube::api::ListParams::default().labels("app=kept"))
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| c.name_any())
            .collect();
        names.sort();
        names
    };
    eventually("the reflector matches the server", || {
        let reader = reader.clone();
        let server = server.clone();
        async move {
            let mut cached: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
            cached.sort();
            cached == server
        }
    })
    .await;
    assert_eq!(server.len(), 9);
}

#[test]
fn no_acknowledged_create_is_lost_when_the_api_server_is_killed() {
    with_cluster(|cluster, client| async move { create_storm_across_a_kill(cluster, client).await });
}

/// Four clients create ConfigMaps as fast as they can while the API server is SIGKILLed and
/// restarted; a watcher follows along.
async fn create_storm_across_a_kill(mut cluster: Cluster, client: kube::Client) {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 150;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let watched: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>> = Default::default();
    tokio::spawn({
        let watched = Arc::clone(&watched);
        let stream = watcher(api.clone(), watcher::Config::default().labels("storm=yes"))
            .default_backoff()
            .applied_objects();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(object) = stream.next().await {
                if let Ok(cm) = object {
                    watched.lock().unwrap().insert(cm.name_any());
                }
            }
        }
    });
    let created = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let api = api.clone();
        let created = Arc::clone(&created);
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..PER_CLIENT {
                let name = format!("storm-{c}-{i}");
                let payload = "x".repeat(512);
                let object = config_map(&name, &[("storm", "yes")], &[("name", &name), ("payload", &payload)]);
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => {
                        acknowledged.push(name);
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    // The API server is down: this one is not acknowledged; carry on shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            acknowledged
        }));
    }
    eventually("the storm is under way", || {
        let created = Arc::clone(&created);
        async move { created.load(Ordering::SeqCst) >= 100 }
    })
    .await;
    tokio::task::block_in_place(|| cluster.kill_component("apiserver")).expect("restart the API server");
    let before_restart = created.load(Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert!(
        acknowledged.len() > before_restart,
        "the storm went on after the restart: {} acknowledged, {before_restart} before it",
        acknowledged.len()
    );

    let stored = api
        .list(&kube::api::ListParams::default().labels("storm=yes"))
        .await
        .unwrap()
        .items;
    let stored_names: std::collections::BTreeSet<String> = stored.iter().map(|c| c.name_any()).collect();
    for name in &acknowledged {
        assert!(stored_names.contains(name), "{name} was acknowledged but is gone");
    }
    for cm in &stored {
        let data = cm.data.as_ref().expect("whole objects only");
        assert_eq!(data.get("name"), Some(&cm.name_any()), "a half-written object: {cm:?}");
        assert_eq!(data.get("payload").map(String::len), Some(512), "a half-written object");
    }
    eventually("the watcher has seen everything stored", || {
        let watched = Arc::clone(&watched);
        let stored_names = stored_names.clone();
        async move { *watched.lock().unwrap() == stored_names }
    })
    .await;
}
