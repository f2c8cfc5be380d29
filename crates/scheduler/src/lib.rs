//! `styrman scheduler`: places pods on nodes as kube-scheduler does. A separate process that
//! talks only to the API server: it watches nodes and pods into its [`cache`], keeps pending
//! pods in a [`queue`], runs the filter and score [`plugins`] for one pod at a time, and binds
//! through `pods/binding`, leader-elected on the Lease `kube-system/kube-scheduler`. One process
//! serves every [`profile`] of its [`config`] file, each under its own `schedulerName`.
//!
//! What users see is upstream's: a `Scheduled` event, or a `FailedScheduling` event and a
//! `PodScheduled=False` condition whose message counts the reasons ("0/3 nodes are available:
//! 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu.").

mod cache;
mod config;
mod image_locality;
mod metrics;
mod plugins;
mod pod_affinity_score;
mod preemption;
mod profile;
mod queue;
mod resource_scoring;
mod resources;
mod spread_selectors;
mod topology;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use cache::Cache;
use plugins::PodInfo;
pub use profile::Profile;
use queue::Queue;

/// What `styrman scheduler` is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: std::path::PathBuf,
    pub leader_elect: bool,
    /// The Lease to lead on: (namespace, name).
    pub lease: (String, String),
    /// One per schedulerName served; pods naming another `schedulerName` are left alone.
    pub profiles: Vec<Profile>,
    /// Where to serve `/metrics` (plain HTTP); None: not served.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The command line of `styrman scheduler`, before the configuration file is read.
pub struct Flags {
    pub kubeconfig: std::path::PathBuf,
    /// `--config`: a KubeSchedulerConfiguration file.
    pub config: Option<std::path::PathBuf>,
    /// `--leader-elect`, when given: it wins over the file's `leaderElection.leaderElect`, as
    /// upstream's explicitly set flags do.
    pub leader_elect: Option<bool>,
    /// `--scheduler-name`: the one profile's name when there is no file.
    pub scheduler_name: Option<String>,
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl Config {
    /// The configuration from the flags and the file they name; a bad file is an error that
    /// says what is wrong with it.
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let (profiles, file_leader_elect, lease) = match &flags.config {
            Some(path) => {
                anyhow::ensure!(
                    flags.scheduler_name.is_none(),
                    "--scheduler-name cannot be used with --config: name the profiles in the file (profiles[].schedulerName)"
                );
                let file = config::load(path)?;
                (file.profiles, file.leader_elect, file.lease)
            }
            None => {
                let name = flags.scheduler_name.as_deref().unwrap_or("default-scheduler");
                (
                    vec![Profile::named(name)],
                    None,
                    ("kube-system".into(), "kube-scheduler".into()),
                )
            }
        };
        Ok(Config {
            kubeconfig: flags.kubeconfig,
            leader_elect: flags.leader_elect.or(file_leader_elect).unwrap_or(true),
            lease,
            profiles,
            metrics_address: flags.metrics_address,
        })
    }
}

const USER_AGENT: &str = concat!(
    "kube-scheduler/v1.33.0 (linux/amd64) styrman/",
    env!("CARGO_PKG_VERSION")
);

pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = styrman_runtime::connect(&config.kubeconfig, USER_AGENT).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    if let Some(addr) = config.metrics_address {
        tokio::spawn(styrman_runtime::metrics::serve(addr, Arc::new(registry)));
    }
    let scheduling = schedule(client.clone(), config.profiles.clone(), metrics);
    if config.leader_elect {
        styrman_runtime::LeaderElection::new(client, &config.lease.0, &config.lease.1)
            .run(scheduling, styrman_runtime::shutdown_signal())
            .await
    } else {
        tokio::select! {
            result = scheduling => result,
            _ = styrman_runtime::shutdown_signal() => Ok(()),
        }
    }
}

struct Scheduler {
    client: kube::Client,
    /// By schedulerName.
    profiles: HashMap<String, Arc<Profile>>,
    cache: Mutex<Cache>,
    /// What selects each pod, for default spread constraints (empty when no profile has any).
    selectors: Arc<Mutex<spread_selectors::Selectors>>,
    queue: Arc<Queue>,
    /// Where the next search for a feasible node starts (upstream rotates it so nodes share
    /// the load of being looked at first).
    next_start: Mutex<usize>,
    /// Pods that preempted others, by uid: the node they wait for and the pod. Lower or
    /// equal priority pods see these as already on the node, so the room made stays theirs.
    nominated: Mutex<HashMap<String, (String, Arc<Pod>)>>,
    metrics: Arc<metrics::Metrics>,
    /// The host name, for the reportingInstance of events (`<scheduler name>-<host>`; read once,
    /// not per event).
    host: String,
}

async fn schedule(client: kube::Client, profiles: Vec<Profile>, metrics: Arc<metrics::Metrics>) -> anyhow::Result<()> {
    let spreads_by_default = profiles.iter().any(Profile::spreads_by_default);
    let scheduler = Arc::new(Scheduler {
        client,
        profiles: profiles
            .into_iter()
            .map(|p| (p.scheduler_name.clone(), Arc::new(p)))
            .collect(),
        cache: Mutex::new(Cache::default()),
        selectors: Default::default(),
        queue: Queue::new(),
        next_start: Mutex::new(0),
        nominated: Mutex::new(HashMap::new()),
        metrics,
        host: styrman_runtime::hostname(),
    });
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(0u8);
    // Only profiles with default spread constraints need to know what selects each pod.
    let watches = if spreads_by_default {
        spread_selectors::watch(&scheduler.client, &scheduler.selectors, &synced_tx)
    } else {
        Vec::new()
    };
    let listings = 2 + watches.len() as u8;
    let nodes = tokio::spawn(Arc::clone(&scheduler).watch_nodes(synced_tx.clone()));
    let pods = tokio::spawn(Arc::clone(&scheduler).watch_pods(synced_tx));
    // Decide nothing before everything watched has been listed once.
    synced_rx.wait_for(|n| *n >= listings).await?;
    let names: Vec<&String> = scheduler.profiles.keys().collect();
    tracing::info!(profiles = ?names, "scheduler synced; scheduling");
    let flusher = tokio::spawn({
        let (queue, metrics) = (Arc::clone(&scheduler.queue), Arc::clone(&scheduler.metrics));
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                queue.flush();
                let (active, backoff, unschedulable) = queue.depth();
                for (name, n) in [
                    ("active", active),
                    ("backoff", backoff),
                    ("unschedulable", unschedulable),
                ] {
                    let labels = metrics::QueueLabels { queue: name.into() };
                    metrics.pending.get_or_create(&labels).set(n as i64);
                }
            }
        }
    });
    loop {
        if nodes.is_finished() || pods.is_finished() || watches.iter().any(|w| w.is_finished()) {
            flusher.abort();
            anyhow::bail!("the scheduler's watches ended");
        }
        let pod = tokio::select! {
            pod = scheduler.queue.pop() => pod,
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        Arc::clone(&scheduler).schedule_one(pod);
    }
}

impl Scheduler {
    async fn watch_nodes(self: Arc<Self>, synced: tokio::sync::watch::Sender<u8>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut listing: Option<HashSet<String>> = None;
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(HashSet::new()),
                Ok(Event::InitApply(node) | Event::Apply(node)) => {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(node.name_any());
                    }
                    self.cache.lock().expect("cache lock").set_node(node);
                    self.queue.cluster_changed();
                }
                Ok(Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    let mut cache = self.cache.lock().expect("cache lock");
                    let gone: Vec<String> = cache.nodes.keys().filter(|n| !seen.contains(*n)).cloned().collect();
                    for name in gone {
                        cache.remove_node(&name);
                    }
                    drop(cache);
                    synced.send_modify(|n| *n += 1);
                }
                Ok(Event::Delete(node)) => {
                    self.cache.lock().expect("cache lock").remove_node(&node.name_any());
                }
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            }
        }
    }

    async fn watch_pods(self: Arc<Self>, synced: tokio::sync::watch::Sender<u8>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut listing: Option<HashSet<String>> = None;
        let mut first_sync = true;
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(HashSet::new()),
                Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.uid()) {
                        seen.insert(uid);
                    }
                    self.pod_changed(pod);
                }
                Ok(Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    let mut cache = self.cache.lock().expect("cache lock");
                    for uid in cache.placed_uids() {
                        if !seen.contains(&uid) {
                            cache.remove_pod(&uid);
                        }
                    }
                    drop(cache);
                    if first_sync {
                        first_sync = false;
                        synced.send_modify(|n| *n += 1);
                    }
                }
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = pod.uid() {
                        self.nominated.lock().expect("nominated lock").remove(&uid);
                        self.cache.lock().expect("cache lock").remove_pod(&uid);
                    }
                    self.queue.remove(&queue::key(&pod));
                    self.queue.cluster_changed();
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }

    fn pod_changed(&self, pod: Pod) {
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound {
            if let Some(uid) = pod.uid() {
                self.nominated.lock().expect("nominated lock").remove(&uid);
            }
            self.queue.remove(&queue::key(&pod));
            let finished_now = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            self.cache.lock().expect("cache lock").set_pod(pod);
            if finished_now {
                self.queue.cluster_changed();
            }
            return;
        }
        let spec = pod.spec.as_ref();
        let ours = self.profile_of(&pod).is_some();
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if !ours || gated || pod.metadata.deletion_timestamp.is_some() {
            self.queue.remove(&queue::key(&pod));
            if ours && gated && pod.metadata.deletion_timestamp.is_none() && !reported_gated(&pod) {
                let client = self.client.clone();
                tokio::spawn(async move { report_gated(&client, &pod).await });
            }
            return;
        }
        self.queue.upsert(pod);
    }

    /// The profile that schedules the pod, if it is one of ours.
    fn profile_of(&self, pod: &Pod) -> Option<Arc<Profile>> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        self.profiles.get(name).cloned()
    }

    /// One scheduling cycle for `pod`; the binding (or the preemption) runs on its own task.
    fn schedule_one(self: Arc<Self>, pod: Arc<Pod>) {
        let Some(profile) = self.profile_of(&pod) else { return };
        let key = queue::key(&pod);
        let info = PodInfo::new(Arc::clone(&pod));
        let started = std::time::Instant::now();
        let own_constraints = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        let default_selector = if profile.spreads_by_default() && !own_constraints {
            self.selectors.lock().expect("selectors lock").default_selector(&pod)
        } else {
            None
        };
        let decision = {
            let mut cache = self.cache.lock().expect("cache lock");
            let prepared = topology::Prepared::new(&info, &cache, &profile, default_selector);
            let nominated = self.nominated_for(&info);
            match self.find_node(&info, &profile, &prepared, &cache, &nominated) {
                Ok(node) => {
                    cache.assume(&pod, &node);
                    Ok(node)
                }
                Err(failure) => Err(self.post_filter(&info, &prepared, &cache, &nominated, failure)),
            }
        };
        match decision {
            Ok(node) => {
                tokio::spawn(async move {
                    match self.bind(&pod, &node).await {
                        Ok(()) => {
                            self.metrics
                                .attempt(&profile.scheduler_name, "scheduled", started.elapsed().as_secs_f64());
                            self.queue.remove(&key);
                            let message = format!("Successfully assigned {key} to {node}");
                            self.record_event(&pod, "Normal", "Scheduled", "Binding", &message)
                                .await;
                        }
                        Err(e) => {
                            tracing::warn!(pod = %key, node = %node, error = %format!("{e:#}"), "binding failed");
                            self.metrics
                                .attempt(&profile.scheduler_name, "error", started.elapsed().as_secs_f64());
                            if let Some(uid) = pod.uid() {
                                self.cache.lock().expect("cache lock").forget(&uid);
                            }
                            self.queue.failed(&key);
                        }
                    }
                });
            }
            Err((message, preemption)) => {
                self.metrics.attempt(
                    &profile.scheduler_name,
                    "unschedulable",
                    started.elapsed().as_secs_f64(),
                );
                self.queue.unschedulable(&key);
                tokio::spawn(async move {
                    self.record_event(&pod, "Warning", "FailedScheduling", "Scheduling", &message)
                        .await;
                    self.set_unschedulable(&pod, &message).await;
                    if let Some(candidate) = preemption {
                        self.preempt(&pod, candidate).await;
                    }
                });
            }
        }
    }

    /// The pods nominated to each node that this pod must leave room for: those of at least
    /// its priority, other than itself. Taken once per cycle.
    fn nominated_for(&self, pod: &PodInfo) -> Nominated {
        let own = pod.pod.uid().unwrap_or_default();
        let mut by_node: Nominated = HashMap::new();
        for (uid, (node, other)) in self.nominated.lock().expect("nominated lock").iter() {
            let priority = other.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            if *uid != own && priority >= pod.priority {
                by_node
                    .entry(node.clone())
                    .or_default()
                    .push((uid.clone(), Arc::clone(other)));
            }
        }
        by_node
    }

    /// The best feasible node for the pod, or why there is none.
    fn find_node(
        &self,
        pod: &PodInfo,
        profile: &Profile,
        prepared: &topology::Prepared,
        cache: &Cache,
        nominated: &Nominated,
    ) -> Result<String, Failure> {
        let nodes: Vec<&cache::NodeInfo> = cache.nodes.values().collect();
        if nodes.is_empty() {
            return Err(Failure::default());
        }
        let wanted = nodes_to_find(nodes.len(), profile.percentage_of_nodes_to_score);
        let start = *self.next_start.lock().expect("start lock") % nodes.len();
        let mut feasible = Vec::new();
        let mut failure = Failure {
            total: Some(nodes.len()),
            ..Default::default()
        };
        let mut looked = 0;
        for i in 0..nodes.len() {
            let node = nodes[(start + i) % nodes.len()];
            looked += 1;
            let with_nominated = with_nominated(nominated, node);
            match plugins::filter(pod, prepared, with_nominated.as_ref().unwrap_or(node)) {
                None => {
                    feasible.push(node);
                    if feasible.len() >= wanted {
                        break;
                    }
                }
                Some(rejection) => {
                    if !rejection.unresolvable {
                        failure.resolvable.push(node.name().to_string());
                    }
                    for reason in rejection.reasons {
                        *failure.reasons.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        *self.next_start.lock().expect("start lock") = (start + looked) % nodes.len();
        if feasible.is_empty() {
            return Err(failure);
        }
        let scores = plugins::scores(pod, prepared, &feasible, profile, cache);
        let best = scores.iter().copied().max().unwrap_or(0);
        let top: Vec<&&cache::NodeInfo> = feasible
            .iter()
            .zip(&scores)
            .filter(|(_, s)| **s == best)
            .map(|(n, _)| n)
            .collect();
        let chosen = top[rand::random_range(0..top.len())];
        Ok(chosen.name().to_string())
    }

    /// After a failed search: preemption (upstream's PostFilter). The message users read, and
    /// the evictions to make, if any.
    fn post_filter(
        &self,
        pod: &PodInfo,
        prepared: &topology::Prepared,
        cache: &Cache,
        nominated: &Nominated,
        failure: Failure,
    ) -> (String, Option<preemption::Candidate>) {
        let Some(total) = failure.total else {
            return ("no nodes available to schedule pods".into(), None);
        };
        let mut counted: Vec<String> = failure.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        counted.sort();
        let fit = format!("0/{total} nodes are available: {}.", counted.join(", "));
        if let Some(why) = preemption::ineligible(pod, cache) {
            return (format!("{fit} preemption: {why}"), None);
        }
        if let Some(candidate) = preemption::find(pod, prepared, cache, &failure.resolvable, |node| {
            with_nominated(nominated, node)
        }) {
            if let Some(uid) = pod.pod.uid() {
                self.nominated
                    .lock()
                    .expect("nominated lock")
                    .insert(uid, (candidate.node.clone(), Arc::clone(&pod.pod)));
            }
            return (fit, Some(candidate));
        }
        let resolvable = failure.resolvable.len();
        let mut parts = Vec::new();
        if total > resolvable {
            parts.push(format!(
                "{} Preemption is not helpful for scheduling",
                total - resolvable
            ));
        }
        if resolvable > 0 {
            parts.push(format!("{resolvable} No preemption victims found for incoming pod"));
        }
        parts.sort();
        (
            format!("{fit} preemption: 0/{total} nodes are available: {}.", parts.join(", ")),
            None,
        )
    }

    /// Evicts the victims and nominates the node for the pod, which is tried again once they
    /// are gone.
    async fn preempt(&self, pod: &Pod, candidate: preemption::Candidate) {
        self.metrics.preemption_attempts.inc();
        self.metrics.preemption_victims.observe(candidate.victims.len() as f64);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let nominate = json!({"status": {"nominatedNodeName": candidate.node}});
        if let Err(e) = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(nominate))
            .await
        {
            tracing::warn!(error = %e, "cannot nominate a node");
        }
        for victim in &candidate.victims {
            let victims: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace().unwrap_or_default());
            let now = jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now());
            let condition = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "PreemptionByScheduler", "lastTransitionTime": now.to_string(),
                "message": format!("{}: preempting to accommodate a higher priority pod", scheduler_name(pod))}]}});
            let _ = victims
                .patch_status(
                    &victim.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(condition),
                )
                .await;
            let message = format!(
                "Preempted by pod {} on node {}",
                pod.uid().unwrap_or_default(),
                candidate.node
            );
            self.record_event(victim, "Normal", "Preempted", "Preempting", &message)
                .await;
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: victim.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = victims.delete(&victim.name_any(), &params).await {
                tracing::warn!(error = %e, victim = %victim.name_any(), "cannot preempt");
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let binding = Binding {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        // The answer is a Status, not a Pod.
        api.create_subresource::<Binding, serde_json::Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await?;
        Ok(())
    }

    async fn record_event(&self, pod: &Pod, type_: &str, reason: &str, action: &str, note: &str) {
        let namespace = pod.namespace().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let name = scheduler_name(pod);
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", pod.name_any(), now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(name.to_string()),
            reporting_instance: Some(format!("{name}-{}", self.host)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.into()),
            type_: Some(type_.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "cannot record an event");
        }
    }

    async fn set_unschedulable(&self, pod: &Pod, message: &str) {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": now.to_string(),
        }]}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        if let Err(e) = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(error = %e, "cannot set the PodScheduled condition");
        }
    }
}

/// The schedulerName a pod asks for (the profile that schedules it, for its events).
fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

/// How many feasible nodes to find before scoring: all of a small cluster, else the profile's
/// percentageOfNodesToScore or upstream's adaptive share (from 50% down to 5% of a large
/// cluster), at least 100.
fn nodes_to_find(total: usize, percentage: Option<u32>) -> usize {
    if total < 100 {
        return total;
    }
    let percent = match percentage {
        Some(p) => p as usize,
        None => (50usize.saturating_sub(total / 125)).max(5),
    };
    (total * percent / 100).max(100)
}

/// Pods nominated to nodes, by node name: (uid, pod).
type Nominated = HashMap<String, Vec<(String, Arc<Pod>)>>;

/// The node with its nominated pods counted as if there; None when it has none.
fn with_nominated(nominated: &Nominated, node: &cache::NodeInfo) -> Option<cache::NodeInfo> {
    let pods = nominated.get(node.name())?;
    let mut copy = node.clone();
    for (uid, pod) in pods {
        copy.add(uid, Arc::clone(pod));
    }
    Some(copy)
}

/// Why no node fits: the reasons counted over all nodes, and the nodes where evicting pods
/// could help. `total` is None when there are no nodes at all.
#[derive(Default)]
struct Failure {
    total: Option<usize>,
    reasons: BTreeMap<String, usize>,
    resolvable: Vec<String>,
}

/// Whether the pod already says it waits for its scheduling gates.
fn reported_gated(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
}

/// SchedulingGates' PreEnqueue: a gated pod is not scheduled, and says why.
async fn report_gated(client: &kube::Client, pod: &Pod) {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "SchedulingGated", "message": "Scheduling is blocked due to non-empty scheduling gates",
        "lastProbeTime": null, "lastTransitionTime": now.to_string()}]}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    if let Err(e) = api
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        tracing::debug!(error = %e, "cannot report a gated pod");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_clusters_score_a_share_of_their_nodes() {
        assert_eq!(nodes_to_find(50, None), 50);
        assert_eq!(nodes_to_find(1000, None), 420);
        assert_eq!(nodes_to_find(5000, None), 500);
        assert_eq!(nodes_to_find(100, None), 100);
        // A configured share, still at least 100 nodes.
        assert_eq!(nodes_to_find(1000, Some(70)), 700);
        assert_eq!(nodes_to_find(1000, Some(1)), 100);
        assert_eq!(nodes_to_find(50, Some(1)), 50);
    }
}
