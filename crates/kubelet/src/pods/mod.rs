//! The pods of this node, as the kubelet's pod workers and PLEG run them: one watch of the pods
//! bound to the node (`spec.nodeName=<node>`) keeps a cache; a relist of the runtime every
//! second notices containers that changed state; either queues the pod's uid, and a worker
//! brings the runtime in line with the pod and posts the pod's status ([`sync`]). A key is
//! never synced by two workers at once (the work queue's guarantee), which is what upstream's
//! per-pod worker goroutine gives.
//!
//! After a restart the cache is filled from the API before anything in the runtime is judged:
//! containers of pods that still exist are adopted as they are, and only those of pods gone
//! from the API are stopped and removed.

mod env;
mod handlers;
mod probes;
mod qos;
mod spec;
mod static_pods;
mod status;
mod sync;
mod volumes;

pub use qos::qos_class;

/// The labels that tie runtime objects to their pod.
pub mod labels {
    pub use super::spec::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
}

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use styrman_runtime::workqueue::WorkQueue;

use crate::agent::Layout;
use crate::cri::Runtime;

/// What the pod workers need.
pub struct Settings {
    pub client: kube::Client,
    pub runtime: Runtime,
    pub node_name: String,
    pub node_ip: String,
    pub layout: Layout,
    /// Run the local copy of an image when no registry can be reached.
    pub airgap: bool,
    /// Where pod cgroups go (`--cgroup-root`).
    pub cgroup_root: String,
    /// The static pods' manifests (`--pod-manifest-path`).
    pub pod_manifests: Option<std::path::PathBuf>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Pods synced at once (each mostly waits on the runtime).
const WORKERS: usize = 16;
/// How often the runtime is relisted (the kubelet's PLEG period).
const RELIST_EVERY: Duration = Duration::from_secs(1);

pub struct Manager {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    /// The pods bound to this node, by uid, as last seen; static pods among them.
    pods: Mutex<HashMap<String, Pod>>,
    /// The static pods' mirror pods in the API, by namespace/name.
    mirrors: Mutex<HashMap<String, Pod>>,
    /// Service account tokens of projected volumes.
    tokens: volumes::TokenCache,
    /// What the workers remember about each pod between syncs, by uid.
    memory: Mutex<HashMap<String, sync::PodMemory>>,
    recorder: styrman_runtime::events::Recorder,
    queue: Arc<WorkQueue<String>>,
    /// The cache holds every pod of the node (the watch's first list is in).
    synced: AtomicBool,
    prober: probes::Prober,
}

impl Manager {
    pub fn new(settings: Settings) -> Manager {
        let recorder = styrman_runtime::events::Recorder::new(settings.client.clone(), "kubelet").with_host();
        Manager {
            shared: Arc::new(Shared {
                settings,
                pods: Mutex::default(),
                mirrors: Mutex::default(),
                tokens: volumes::TokenCache::default(),
                memory: Mutex::default(),
                recorder,
                queue: WorkQueue::new(),
                synced: AtomicBool::new(false),
                prober: probes::Prober::default(),
            }),
        }
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let shared = Arc::clone(&self.shared);
        let workers = tokio::spawn(Arc::clone(&shared.queue).run_workers(WORKERS, "pod-worker", {
            let shared = Arc::clone(&shared);
            move |uid: String| {
                let shared = Arc::clone(&shared);
                async move {
                    let started = std::time::Instant::now();
                    let result = sync::sync(&shared, &uid).await;
                    shared.settings.metrics.synced(started.elapsed());
                    result
                }
            }
        }));
        let relist = tokio::spawn(relist(Arc::clone(&shared)));
        let static_pods = shared
            .settings
            .pod_manifests
            .clone()
            .map(|dir| tokio::spawn(static_pods::run(Arc::clone(&shared), dir)));
        let result = watch(Arc::clone(&shared)).await;
        workers.abort();
        relist.abort();
        if let Some(task) = static_pods {
            task.abort();
        }
        result
    }
}

async fn watch(shared: Arc<Shared>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(shared.settings.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.settings.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // The uids of a relist under way: pods missing from it were deleted while unwatched.
    let mut listing: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        // Mirror pods are not run: they show static pods, whose sync keeps them.
        if let Ok(Event::InitApply(pod) | Event::Apply(pod) | Event::Delete(pod)) = &event
            && static_pods::is_mirror(pod)
        {
            let mut mirrors = shared.mirrors.lock().expect("mirrors lock");
            if matches!(event, Ok(Event::Delete(_))) {
                mirrors.remove(&static_pods::key(pod));
            } else {
                mirrors.insert(static_pods::key(pod), pod.clone());
            }
            if let Some(uid) = static_pods::mirrored_uid(pod) {
                shared.queue.add(uid.clone());
            }
            continue;
        }
        match event {
            Ok(Event::Init) => {
                listing = Some(HashSet::new());
                shared.mirrors.lock().expect("mirrors lock").clear();
            }
            Ok(Event::InitApply(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(l) = listing.as_mut() {
                    l.insert(uid.clone());
                }
                shared.pods.lock().expect("pods lock").insert(uid.clone(), pod);
                shared.queue.add(uid);
            }
            Ok(Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                tracing::info!(pods = seen.len(), "pods of this node listed");
                let gone: Vec<String> = {
                    let mut pods = shared.pods.lock().expect("pods lock");
                    // Static pods come from files, not from this list.
                    let kept = |uid: &String, pod: &Pod| seen.contains(uid) || static_pods::is_static(pod);
                    let gone = pods
                        .iter()
                        .filter(|(u, p)| !kept(u, p))
                        .map(|(u, _)| u.clone())
                        .collect();
                    pods.retain(|u, p| kept(u, p));
                    gone
                };
                for uid in gone {
                    shared.queue.add(uid);
                }
                shared.synced.store(true, Ordering::SeqCst);
            }
            Ok(Event::Apply(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                shared.pods.lock().expect("pods lock").insert(uid.clone(), pod);
                shared.queue.add(uid);
            }
            Ok(Event::Delete(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                shared.pods.lock().expect("pods lock").remove(&uid);
                shared.queue.add(uid);
            }
            Err(e) => tracing::warn!(error = %e, "the pod watch failed; retrying"),
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// Lists the runtime's sandboxes and containers every second and queues each pod whose
/// runtime state changed, and every pod the runtime holds that the API does not (once the
/// cache is filled).
async fn relist(shared: Arc<Shared>) {
    let mut last: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    let mut ticks = tokio::time::interval(RELIST_EVERY);
    loop {
        ticks.tick().await;
        let mut runtime = shared.settings.runtime.runtime.clone();
        let sandboxes = runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await;
        let containers = runtime.list_containers(cri::ListContainersRequest::default()).await;
        let (Ok(sandboxes), Ok(containers)) = (sandboxes, containers) else {
            continue;
        };
        let mut now: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for s in sandboxes.into_inner().items {
            if let Some(uid) = s.labels.get(spec::POD_UID) {
                now.entry(uid.clone()).or_default().push((s.id, s.state));
            }
        }
        for c in containers.into_inner().containers {
            if let Some(uid) = c.labels.get(spec::POD_UID) {
                now.entry(uid.clone()).or_default().push((c.id, c.state));
            }
        }
        for states in now.values_mut() {
            states.sort();
        }
        let synced = shared.synced.load(Ordering::SeqCst);
        for (uid, states) in &now {
            let changed = last.get(uid) != Some(states);
            let orphan = synced && !shared.pods.lock().expect("pods lock").contains_key(uid);
            if changed || orphan {
                shared.queue.add(uid.clone());
            }
        }
        last = now;
    }
}
