//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! Foreground and Orphan deletion policies the API server records as finalizers.
//!
//! It watches the metadata of every listable, deletable resource the API server offers
//! (discovery), keeps the ownership [`graph`], and works through the objects the graph says
//! need a look, as upstream's garbage collector does:
//! - an object with owner references whose owners are gone is deleted (Background, or the
//!   policy its own finalizers ask for); references to gone owners beside a live one are
//!   removed instead ([`decide`]);
//! - an owner being deleted with the `orphan` finalizer has its reference removed from every
//!   dependent, then the finalizer;
//! - an owner being deleted with the `foregroundDeletion` finalizer has its blocking dependents
//!   (`blockOwnerDeletion: true`) deleted, and loses the finalizer once none is left.
//!
//! The graph only ever says where to look: before anything is deleted or changed, the object
//! and any owner missing from the graph are read from the API server, since watches of
//! different resources arrive in no common order.

mod decide;
mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::discovery::verbs;

use crate::discovery::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use styrman_runtime::WorkQueue;

use decide::{Action, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, OwnerState, Propagation, decide};
use graph::{Graph, Node, ResourceId};

/// Objects as the collector reads them: metadata only (`as=PartialObjectMetadata`).
type Metadata = PartialObjectMeta<DynamicObject>;

/// Workers deleting and patching at once (kube-controller-manager's `--concurrent-gc-syncs`).
const WORKERS: usize = 20;

/// Resources the collector leaves alone, as upstream does: events are never owners and are
/// numerous.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

struct Collector {
    client: kube::Client,
    /// The resources watched, one per group and resource at the group's preferred version.
    watched: Vec<Resource>,
    /// Every (apiVersion, kind) discovery offers, for reading owners by their references.
    by_kind: HashMap<(String, String), Resource>,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<String>>,
}

/// Runs the garbage collector until it fails.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let resources = crate::discovery::discover(&client).await?;
    let by_kind = resources.by_kind;
    let watched: Vec<Resource> = resources
        .preferred
        .into_iter()
        .filter(|r| r.supports(&[verbs::LIST, verbs::WATCH, verbs::DELETE]))
        .filter(|r| !IGNORED.contains(&(r.api.group.as_str(), r.api.plural.as_str())))
        .collect();
    tracing::info!(resources = watched.len(), "garbage collector watching");
    let collector = Arc::new(Collector {
        client,
        watched,
        by_kind,
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(),
    });
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(4096);
    for (id, resource) in collector.watched.iter().enumerate() {
        let api = Api::<Metadata>::all_with(collector.client.clone(), &resource.api);
        let tx = events_tx.clone();
        let plural = resource.api.plural.clone();
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if tx.send((id, event)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(resource = %plural, error = %e, "watch failed; retrying"),
                }
            }
        });
    }
    drop(events_tx);
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let builder = tokio::spawn(Arc::clone(&collector).build_graph(events_rx, synced_tx));
    // Nothing is judged before every resource has been listed once: an owner not listed yet
    // is not a gone owner.
    synced_rx
        .wait_for(|synced| *synced)
        .await
        .context("the graph builder stopped")?;
    tracing::info!("garbage collector synced");
    let workers = tokio::spawn(Arc::clone(&collector.queue).run_workers(WORKERS, "garbage-collector", {
        let collector = Arc::clone(&collector);
        move |uid: String| {
            let collector = Arc::clone(&collector);
            async move { collector.process(&uid).await }
        }
    }));
    builder.await.context("the graph builder failed")?;
    workers.abort();
    anyhow::bail!("the garbage collector's watches ended")
}

impl Collector {
    /// Feeds watch events into the graph and queues what they say needs a look.
    async fn build_graph(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::Receiver<(ResourceId, Event<Metadata>)>,
        synced: tokio::sync::watch::Sender<bool>,
    ) {
        // Per resource, the uids seen since its (re-)list began.
        let mut listing: HashMap<ResourceId, HashSet<String>> = HashMap::new();
        let mut listed: HashSet<ResourceId> = HashSet::new();
        while let Some((id, event)) = events.recv().await {
            let look = {
                let mut graph = self.graph.lock().expect("graph lock");
                match event {
                    Event::Init => {
                        listing.insert(id, HashSet::new());
                        Vec::new()
                    }
                    Event::InitApply(object) | Event::Apply(object) => match node_of(id, object.metadata) {
                        Some(node) => {
                            if let Some(seen) = listing.get_mut(&id) {
                                seen.insert(node.uid.clone());
                            }
                            graph.upsert(node)
                        }
                        None => Vec::new(),
                    },
                    Event::InitDone => {
                        // Objects deleted while the watch was down are not in the new list.
                        let seen = listing.remove(&id).unwrap_or_default();
                        let mut look = Vec::new();
                        for uid in graph.uids_of(id) {
                            if !seen.contains(&uid) {
                                look.extend(graph.remove(&uid));
                            }
                        }
                        listed.insert(id);
                        if listed.len() == self.watched.len() {
                            synced.send_replace(true);
                        }
                        look
                    }
                    Event::Delete(object) => match object.metadata.uid {
                        Some(uid) => graph.remove(&uid),
                        None => Vec::new(),
                    },
                }
            };
            for uid in look {
                self.queue.add(uid);
            }
        }
    }

    async fn process(&self, uid: &str) -> anyhow::Result<()> {
        let Some(node) = self.graph.lock().expect("graph lock").get(uid).cloned() else {
            return Ok(());
        };
        if node.being_deleted && node.has_finalizer(ORPHAN_FINALIZER) {
            return self.orphan_dependents(&node).await;
        }
        if node.waits_for_dependents() {
            return self.delete_blocking_dependents(&node).await;
        }
        if node.being_deleted || node.owners.is_empty() {
            return Ok(());
        }
        self.collect_if_unowned(&node).await
    }

    /// Removes `owner` from its dependents' owner references, then its `orphan` finalizer.
    async fn orphan_dependents(&self, owner: &Node) -> anyhow::Result<()> {
        let dependents: Vec<Node> = {
            let graph = self.graph.lock().expect("graph lock");
            graph.dependents_of(&owner.uid).into_iter().cloned().collect()
        };
        for dependent in &dependents {
            self.remove_references(dependent, std::slice::from_ref(&owner.uid))
                .await?;
        }
        self.remove_finalizer(owner, ORPHAN_FINALIZER).await
    }

    /// Deletes `owner`'s blocking dependents; once none is left, removes its
    /// `foregroundDeletion` finalizer (and the API server deletes it).
    async fn delete_blocking_dependents(&self, owner: &Node) -> anyhow::Result<()> {
        let blocking: Vec<String> = {
            let graph = self.graph.lock().expect("graph lock");
            graph
                .dependents_of(&owner.uid)
                .into_iter()
                .filter(|d| {
                    d.reference_to(&owner.uid)
                        .is_some_and(|r| r.block_owner_deletion == Some(true))
                })
                .map(|d| d.uid.clone())
                .collect()
        };
        if blocking.is_empty() {
            return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
        }
        // Each dependent now finds its owner waiting and goes; its deletion brings the owner
        // back here.
        for uid in blocking {
            self.queue.add(uid);
        }
        Ok(())
    }

    /// Deletes `node` if no owner of it is left, or drops its references to gone owners.
    async fn collect_if_unowned(&self, node: &Node) -> anyhow::Result<()> {
        let from_graph: Vec<Option<OwnerState>> = {
            let graph = self.graph.lock().expect("graph lock");
            node.owners.iter().map(|r| owner_in_graph(&graph, node, r)).collect()
        };
        if from_graph.iter().all(|s| *s == Some(OwnerState::Solid)) {
            return Ok(());
        }
        // About to act: judge the object as it is now, not as the graph last saw it.
        let Some(latest) = self.read_latest(node).await? else {
            return Ok(());
        };
        if latest.being_deleted && !latest.waits_for_dependents() {
            return Ok(());
        }
        let mut owners = Vec::new();
        for reference in &latest.owners {
            owners.push((reference.uid.clone(), self.owner_state(&latest, reference).await?));
        }
        let has_dependents = self.graph.lock().expect("graph lock").has_dependents(&latest.uid);
        match decide(&owners, has_dependents, &latest.finalizers) {
            Action::Keep => Ok(()),
            Action::RemoveReferences(uids) => self.remove_references(&latest, &uids).await,
            Action::Delete(policy) => self.delete(&latest, policy).await,
        }
    }

    /// How `reference` of `item` stands, from the graph or else from the API server.
    async fn owner_state(&self, item: &Node, reference: &OwnerReference) -> anyhow::Result<OwnerState> {
        let known = owner_in_graph(&self.graph.lock().expect("graph lock"), item, reference);
        if let Some(state) = known {
            return Ok(state);
        }
        let resource = self
            .by_kind
            .get(&(reference.api_version.clone(), reference.kind.clone()))
            .with_context(|| format!("owner kind {} {} is not served", reference.api_version, reference.kind))?;
        if resource.namespaced && item.namespace.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return Ok(OwnerState::Dangling);
        }
        let api = self.api(resource, item.namespace.as_deref());
        let owner = api
            .get_opt(&reference.name)
            .await
            .with_context(|| format!("reading owner {} {}", reference.kind, reference.name))?;
        Ok(match owner {
            Some(o) if o.metadata.uid.as_deref() == Some(reference.uid.as_str()) => {
                let waiting = o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND_FINALIZER);
                if waiting {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        })
    }

    /// `node` as the API server has it now; None when it is gone (or replaced by a namesake).
    async fn read_latest(&self, node: &Node) -> anyhow::Result<Option<Node>> {
        let api = self.api(&self.watched[node.resource], node.namespace.as_deref());
        let latest = api
            .get_opt(&node.name)
            .await
            .with_context(|| format!("reading {}", node.name))?;
        Ok(latest
            .and_then(|o| node_of(node.resource, o.metadata))
            .filter(|n| n.uid == node.uid))
    }

    async fn delete(&self, node: &Node, policy: Propagation) -> anyhow::Result<()> {
        let resource = &self.watched[node.resource];
        tracing::info!(
            kind = %resource.api.kind, namespace = node.namespace.as_deref().unwrap_or(""), name = %node.name,
            ?policy, "deleting an object whose owners are gone"
        );
        let params = DeleteParams {
            propagation_policy: Some(policy.as_kube()),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(resource, node.namespace.as_deref())
            .delete(&node.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or a namesake replaced it (the uid precondition failed).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", node.name)),
        }
    }

    /// Removes the owner references with these uids from `node`.
    async fn remove_references(&self, node: &Node, owner_uids: &[String]) -> anyhow::Result<()> {
        let deletions: Vec<_> = owner_uids
            .iter()
            .map(|u| json!({"$patch": "delete", "uid": u}))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": deletions, "uid": node.uid}});
        self.patch(node, patch).await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> anyhow::Result<()> {
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer], "uid": node.uid}});
        self.patch(node, patch).await
    }

    async fn patch(&self, node: &Node, patch: serde_json::Value) -> anyhow::Result<()> {
        let api = self.api(&self.watched[node.resource], node.namespace.as_deref());
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("patching {}", node.name)),
        }
    }

    fn api(&self, resource: &Resource, namespace: Option<&str>) -> Api<Metadata> {
        match (resource.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource.api),
            _ => Api::all_with(self.client.clone(), &resource.api),
        }
    }
}

/// How `reference` of `item` stands by the graph alone; None when the owner is not in it.
fn owner_in_graph(graph: &Graph, item: &Node, reference: &OwnerReference) -> Option<OwnerState> {
    let owner = graph.get(&reference.uid)?;
    if owner.namespace.is_some() && owner.namespace != item.namespace {
        // References name owners in the dependent's own namespace.
        return Some(OwnerState::Dangling);
    }
    Some(if owner.waits_for_dependents() {
        OwnerState::Waiting
    } else {
        OwnerState::Solid
    })
}

fn node_of(resource: ResourceId, metadata: ObjectMeta) -> Option<Node> {
    Some(Node {
        resource,
        uid: metadata.uid?,
        name: metadata.name?,
        namespace: metadata.namespace,
        owners: metadata.owner_references.unwrap_or_default(),
        finalizers: metadata.finalizers.unwrap_or_default(),
        being_deleted: metadata.deletion_timestamp.is_some(),
    })
}
