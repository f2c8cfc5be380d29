//! The node IPAM controller (upstream's range allocator): every node gets a `spec.podCIDR` and
//! `spec.podCIDRs`, one subnet of each `--cluster-cidr`, never one another node holds. A node
//! that has podCIDRs keeps them; a deleted node's go back to the pool. The map of what is
//! taken is rebuilt from the nodes themselves at every (re)list, so it survives restarts.

#[path = "node_cidr_set.rs"]
mod cidr_set;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use styrman_runtime::{Recorder, WorkQueue};

use crate::node_lifecycle::events;
use cidr_set::{Allocator, RangeFull};

/// kube-controller-manager's range allocator runs this many workers.
const WORKERS: usize = 30;

struct State {
    allocator: Allocator,
    /// Nodes that found the range full: tried again when a subnet is freed.
    waiting: BTreeSet<String>,
}

pub async fn run(client: kube::Client, config: crate::Config) -> anyhow::Result<()> {
    let allocator = Allocator::new(&config.cluster_cidr, config.node_cidr_mask_size).context("node IPAM")?;
    let state = Arc::new(Mutex::new(State {
        allocator,
        waiting: BTreeSet::new(),
    }));
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let recorder = events::recorder(client.clone(), "cidrAllocator");
    let nodes: Api<Node> = Api::all(client.clone());
    let mut events = watcher::watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<HashSet<String>> = None;
    let mut workers = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitApply(node)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.insert(node.name_any());
                }
                observe(&state, &queue, &node);
            }
            Ok(Event::InitDone) => {
                let present = listing.take().unwrap_or_default();
                let freed = {
                    let mut state = state.lock().expect("ipam lock");
                    state.allocator.keep_only(&present);
                    std::mem::take(&mut state.waiting)
                };
                freed.into_iter().for_each(|n| queue.add(n));
                // Allocation waits for the first full list: until every node's podCIDR is
                // known, a "free" subnet may be one a node not yet listed holds.
                if workers.is_none() {
                    let (nodes, state, recorder) = (nodes.clone(), Arc::clone(&state), recorder.clone());
                    workers = Some(tokio::spawn(Arc::clone(&queue).run_workers(
                        WORKERS,
                        "node-ipam",
                        move |name: String| {
                            let (nodes, state, recorder) = (nodes.clone(), Arc::clone(&state), recorder.clone());
                            async move { sync(&nodes, &state, &recorder, &name).await }
                        },
                    )));
                }
            }
            Ok(Event::Apply(node)) => observe(&state, &queue, &node),
            Ok(Event::Delete(node)) => {
                let waiting = {
                    let mut state = state.lock().expect("ipam lock");
                    state.allocator.release_node(&node.name_any());
                    state.waiting.remove(&node.name_any());
                    std::mem::take(&mut state.waiting)
                };
                waiting.into_iter().for_each(|n| queue.add(n));
            }
            Err(e) => tracing::warn!(error = %e, "node IPAM watch failed; retrying"),
        }
    }
    if let Some(workers) = workers {
        workers.abort();
    }
    anyhow::bail!("the node IPAM watch ended")
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(cidrs), _) if !cidrs.is_empty() => cidrs.clone(),
        (_, Some(cidr)) if !cidr.is_empty() => vec![cidr.clone()],
        _ => Vec::new(),
    }
}

/// A node with podCIDRs marks them taken; one without is queued for allocation.
fn observe(state: &Mutex<State>, queue: &WorkQueue<String>, node: &Node) {
    let cidrs = pod_cidrs(node);
    if cidrs.is_empty() {
        queue.add(node.name_any());
    } else {
        state
            .lock()
            .expect("ipam lock")
            .allocator
            .occupy(&node.name_any(), &cidrs);
    }
}

async fn sync(nodes: &Api<Node>, state: &Mutex<State>, recorder: &Recorder, name: &str) -> anyhow::Result<()> {
    // The newest node, not the watch's: it may have been given podCIDRs meanwhile.
    let Some(node) = nodes.get_opt(name).await.context("reading the node")? else {
        return Ok(());
    };
    let existing = pod_cidrs(&node);
    if !existing.is_empty() {
        state.lock().expect("ipam lock").allocator.occupy(name, &existing);
        return Ok(());
    }
    let allocated = {
        let mut state = state.lock().expect("ipam lock");
        match state.allocator.allocate(name) {
            Ok(cidrs) => {
                state.waiting.remove(name);
                Ok(cidrs)
            }
            Err(RangeFull) => Err(state.waiting.insert(name.to_string())),
        }
    };
    let cidrs = match allocated {
        Ok(cidrs) => cidrs,
        Err(newly_waiting) => {
            // Once per wait, not on every status update of the node.
            if newly_waiting {
                tracing::warn!(node = name, "no pod CIDR left for the node");
                events::node_status_change(recorder, &node, "CIDRNotAvailable");
            }
            return Ok(());
        }
    };
    // The resourceVersion makes the patch conditional: if the node changed since it was
    // read (someone else set its podCIDRs), this fails and the next sync reads it again.
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
    });
    match nodes
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = name, cidrs = ?cidrs, "pod CIDRs allocated");
            Ok(())
        }
        Err(e) => {
            state.lock().expect("ipam lock").allocator.release_node(name);
            match e {
                kube::Error::Api(s) if s.code == 404 => Ok(()),
                e => Err(e).context("setting the node's podCIDRs"),
            }
        }
    }
}
