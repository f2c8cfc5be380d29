//! The node lifecycle controller: a node whose kubelet goes silent (its Lease in
//! `kube-node-lease` and its Ready heartbeat both older than `--node-monitor-grace-period`)
//! has its conditions set Unknown, its pods marked not Ready and the `unreachable` taints put
//! on it (`not-ready` ones when the kubelet itself says Ready=False); the taints go when it
//! recovers. Conditions also bring the NoSchedule taints the scheduler reads (memory or disk
//! pressure, cordon). The taint eviction controller (`node_taint_eviction.rs`), run alongside,
//! deletes the pods that do not tolerate the NoExecute ones.
//!
//! "Silent" is judged on this process's clock: a node's probe time is when this controller
//! last saw its heartbeat or Lease change, as upstream does, so clock skew between nodes and
//! the control plane does not matter. After a restart every node gets a full grace period.
//!
//! As upstream, a zone with most of its nodes down is taken for a zone problem (no new
//! NoExecute taints there), and every node down for a control-plane problem (NoExecute taints
//! removed): evicting everything would not help. Upstream's eviction rate limit (one node per
//! 10 s) is not applied.

#[path = "node_events.rs"]
pub(crate) mod events;
#[path = "node_health.rs"]
mod health;
#[path = "node_taint_eviction.rs"]
mod taint_eviction;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use styrman_runtime::{Recorder, WorkQueue, reference_to};

use health::{Eviction, ZoneState};

const LEASE_NAMESPACE: &str = "kube-node-lease";
/// kube-controller-manager's `--node-startup-grace-period`: a node that never posted Ready
/// gets this long.
const STARTUP_GRACE: Duration = Duration::from_secs(60);
const WORKERS: usize = 5;

/// What this controller last saw of a node's signs of life, and when they last changed.
struct Health {
    probed: Instant,
    ready_heartbeat: Option<Time>,
    lease_renewed: Option<String>,
}

struct Controller {
    nodes: Store<Node>,
    leases: Store<Lease>,
    client: kube::Client,
    recorder: Recorder,
    grace: Duration,
    health: Mutex<HashMap<String, Health>>,
    /// Nodes whose pods could not all be marked not Ready: tried again next pass.
    pods_to_retry: Mutex<HashSet<String>>,
    disruption: Mutex<Disruption>,
}

/// The zones' states as of the last pass.
#[derive(Default)]
struct Disruption {
    /// Every zone fully disrupted ("master disruption mode" upstream).
    all_down: bool,
    zones: HashMap<String, ZoneState>,
}

pub async fn run(client: kube::Client, config: crate::Config) -> anyhow::Result<()> {
    tokio::select! {
        result = monitor(client.clone(), config) => result,
        result = taint_eviction::run(client) => result,
    }
}

async fn monitor(client: kube::Client, config: crate::Config) -> anyhow::Result<()> {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let (nodes, nodes_writer) = reflector::store();
    let (leases, leases_writer) = reflector::store();
    // Every change to a node or its Lease has the node looked at: a heartbeat is noticed
    // when it happens, not at the next period.
    let node_watch = reflector::reflector(
        nodes_writer,
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .boxed();
    let lease_watch = reflector::reflector(
        leases_writer,
        watcher::watcher(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .boxed();
    let watches = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move {
            let node_names = node_watch.filter_map(|e| async move { names(e) });
            let lease_names = lease_watch.filter_map(|e| async move { names(e) });
            let mut all = futures::stream::select(node_names.boxed(), lease_names.boxed());
            while let Some(names) = all.next().await {
                names.into_iter().for_each(|n| queue.add(n));
            }
        }
    });
    nodes.wait_until_ready().await.context("the node watch stopped")?;
    leases.wait_until_ready().await.context("the lease watch stopped")?;
    let controller = Arc::new(Controller {
        nodes,
        leases,
        recorder: events::recorder(client.clone(), "node-controller"),
        client,
        grace: config.node_monitor_grace_period,
        health: Mutex::new(HashMap::new()),
        pods_to_retry: Mutex::new(HashSet::new()),
        disruption: Mutex::new(Disruption::default()),
    });
    let workers = tokio::spawn(Arc::clone(&queue).run_workers(WORKERS, "node-lifecycle", {
        let controller = Arc::clone(&controller);
        move |name: String| {
            let controller = Arc::clone(&controller);
            async move { controller.sync(&name).await }
        }
    }));
    // The period catches the silence no event announces.
    let mut ticks = tokio::time::interval(config.node_monitor_period.max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !watches.is_finished() && !workers.is_finished() {
        ticks.tick().await;
        controller.assess_disruption();
        for node in controller.nodes.state() {
            queue.add(node.name_any());
        }
    }
    watches.abort();
    workers.abort();
    anyhow::bail!("the node lifecycle controller's watches ended")
}

/// The node a watch event concerns (a Lease is named after its node).
fn names<K: kube::Resource>(event: Result<Event<K>, watcher::Error>) -> Option<Vec<String>> {
    match event {
        Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => Some(vec![o.name_any()]),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "node lifecycle watch failed; retrying");
            None
        }
    }
}

fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(now.round(jiff::Unit::Second).unwrap_or(now))
}

impl Controller {
    /// Judges every zone by how many of its nodes are Ready, as upstream's handleDisruption.
    fn assess_disruption(&self) {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for node in self.nodes.state() {
            let (ready, not_ready) = counts.entry(health::zone_of(&node)).or_default();
            if health::ready_status(&node) == Some("True") {
                *ready += 1;
            } else {
                *not_ready += 1;
            }
        }
        let zones: HashMap<String, ZoneState> = counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| (zone, health::zone_state(ready, not_ready)))
            .collect();
        let all_down = !zones.is_empty() && zones.values().all(|s| *s == ZoneState::FullDisruption);
        let mut disruption = self.disruption.lock().expect("disruption lock");
        if all_down && !disruption.all_down {
            tracing::warn!("every node is not Ready: entering disruption mode, no evictions");
        } else if !all_down && disruption.all_down {
            tracing::info!("some nodes are Ready: leaving disruption mode");
            // As upstream: every node gets a full grace period from now.
            self.health.lock().expect("health lock").clear();
        }
        *disruption = Disruption { all_down, zones };
    }

    fn eviction(&self, node: &Node) -> Eviction {
        let disruption = self.disruption.lock().expect("disruption lock");
        if disruption.all_down {
            return Eviction::Stop;
        }
        match disruption.zones.get(&health::zone_of(node)) {
            Some(ZoneState::PartialDisruption) => Eviction::HoldNew,
            _ => Eviction::Normal,
        }
    }

    /// The controller's taints `node` should carry, within what the disruption allows.
    fn wanted_taints(&self, node: &Node) -> Vec<(&'static str, &'static str)> {
        let current = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
        health::limit_no_execute(health::wanted_taints(node), current, self.eviction(node))
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            self.health.lock().expect("health lock").remove(name);
            self.pods_to_retry.lock().expect("retry lock").remove(name);
            return Ok(());
        };
        let mut node = (*node).clone();
        if self.silent_too_long(&node) {
            node = self.mark_unknown(node).await?;
        }
        self.retry_pods_if_needed(&node).await;
        self.reconcile_taints(&node).await
    }

    fn lease_renewed(&self, name: &str) -> Option<String> {
        let lease = self.leases.get(&ObjectRef::new(name).within(LEASE_NAMESPACE))?;
        lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0.to_string())
    }

    /// Notes any new heartbeat or Lease renewal, and says whether the node has been silent
    /// longer than its grace period.
    fn silent_too_long(&self, node: &Node) -> bool {
        let heartbeat = health::condition(node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
        let renewed = self.lease_renewed(&node.name_any());
        let mut health = self.health.lock().expect("health lock");
        let seen = health.entry(node.name_any()).or_insert_with(|| Health {
            probed: Instant::now(),
            ready_heartbeat: heartbeat.clone(),
            lease_renewed: renewed.clone(),
        });
        if seen.ready_heartbeat != heartbeat || seen.lease_renewed != renewed {
            *seen = Health {
                probed: Instant::now(),
                ready_heartbeat: heartbeat,
                lease_renewed: renewed,
            };
        }
        let grace = if health::ready_status(node).is_none() {
            STARTUP_GRACE.max(self.grace)
        } else {
            self.grace
        };
        seen.probed.elapsed() > grace
    }

    /// Sets the node's conditions Unknown (on the newest node, so a heartbeat that just came in
    /// is not overwritten) and, if it was Ready, marks its pods not Ready. Returns the node as
    /// it now is.
    async fn mark_unknown(&self, seen: Node) -> anyhow::Result<Node> {
        let name = seen.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(mut node) = api.get_opt(&name).await.context("reading the node")? else {
            return Ok(seen);
        };
        let heartbeat = health::condition(&node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
        if heartbeat != health::condition(&seen, "Ready").and_then(|c| c.last_heartbeat_time.clone()) {
            // The kubelet spoke meanwhile; the next pass sees it.
            return Ok(node);
        }
        let was_ready = health::ready_status(&node) == Some("True");
        if !health::mark_unknown(&mut node, &now()) {
            return Ok(node);
        }
        // Carries the resourceVersion read above: a status the kubelet posted meanwhile makes
        // this fail rather than be overwritten.
        let node = api
            .replace_status(&name, &PostParams::default(), &node)
            .await
            .context("setting the node's conditions Unknown")?;
        tracing::info!(node = %name, "node stopped posting status; conditions set Unknown");
        if was_ready {
            events::node_status_change(&self.recorder, &node, "NodeNotReady");
            self.pods_to_retry.lock().expect("retry lock").insert(name);
        }
        Ok(node)
    }

    async fn retry_pods_if_needed(&self, node: &Node) {
        let name = node.name_any();
        if !self.pods_to_retry.lock().expect("retry lock").contains(&name) {
            return;
        }
        if health::ready_status(node) == Some("True") {
            self.pods_to_retry.lock().expect("retry lock").remove(&name);
            return;
        }
        match self.mark_pods_not_ready(&name).await {
            Ok(()) => {
                self.pods_to_retry.lock().expect("retry lock").remove(&name);
            }
            Err(e) => tracing::warn!(node = %name, error = %format!("{e:#}"), "cannot mark the node's pods not Ready"),
        }
    }

    /// Upstream's MarkPodsNotReady: the Ready condition of every pod on the node goes False
    /// (Services stop sending them traffic), with a NodeNotReady event on each.
    async fn mark_pods_not_ready(&self, node: &str) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .context("listing the node's pods")?;
        let mut failed = 0;
        for mut pod in list.items {
            let Some(ready) = pod
                .status
                .as_mut()
                .and_then(|s| s.conditions.as_mut())
                .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
            else {
                continue;
            };
            if ready.status == "False" {
                continue;
            }
            ready.status = "False".into();
            ready.last_transition_time = Some(now());
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            match api.replace_status(&pod.name_any(), &PostParams::default(), &pod).await {
                Ok(_) => self
                    .recorder
                    .warning(reference_to(&pod), "NodeNotReady", "Node is not ready".into()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot mark the pod not Ready");
                    failed += 1;
                }
            }
        }
        anyhow::ensure!(failed == 0, "{failed} pods could not be marked not Ready");
        Ok(())
    }

    /// Puts on the taints the node's conditions call for and removes the ones they no longer
    /// do, on the newest node (other writers' taints are kept).
    async fn reconcile_taints(&self, seen: &Node) -> anyhow::Result<()> {
        let current = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if health::reconcile_taints(&current(seen), &self.wanted_taints(seen), &now()).is_none() {
            return Ok(());
        }
        let name = seen.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(mut node) = api.get_opt(&name).await.context("reading the node")? else {
            return Ok(());
        };
        let Some(taints) = health::reconcile_taints(&current(&node), &self.wanted_taints(&node), &now()) else {
            return Ok(());
        };
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "updating the node's taints");
        node.spec.get_or_insert_with(Default::default).taints = (!taints.is_empty()).then_some(taints);
        match api.replace(&name, &PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).context("updating the node's taints"),
        }
    }
}
