//! `styrman hollow-nodes`: many simulated nodes in one process, as kubemark and KWOK do for
//! Kubernetes. Each node registers a Node (capacity, allocatable, addresses, conditions,
//! nodeInfo), renews its Lease in `kube-node-lease`, marks the pods bound to it Running and
//! Ready, reports the images of the pods it ran in its status ([`images`]), and completes their
//! graceful deletion, and posts its status again when the control plane gave up on it
//! ([`recovery`]). Nothing runs: scale tests and benchmarks get a cluster of thousands of
//! nodes on one machine.
//!
//! One pod watch serves every node (kubelets each watch their own pods; here that would be a
//! watch per node for no gain).

mod images;
mod node;
mod pods;
mod recovery;

pub use images::{parse_images, parse_size};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

/// What `styrman hollow-nodes` is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: std::path::PathBuf,
    pub count: usize,
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
    /// `key[=value]:Effect`
    pub taints: Vec<String>,
    /// Images every node holds from the start: (reference, size in bytes).
    pub images: Vec<(String, i64)>,
    /// The size every pulled image reports; None: a size made up from its name.
    pub image_size: Option<i64>,
}

/// How often each node renews its Lease (the kubelet's default).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How many nodes register or renew at once.
const CONCURRENCY: usize = 32;

/// Runs the nodes until the process is stopped or the API server fails them for good.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = styrman_runtime::connect(&config.kubeconfig, "kubelet/v1.33.0 (linux/amd64) styrman-hollow").await?;
    let taints = config
        .taints
        .iter()
        .map(|t| node::parse_taint(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nodes: Arc<Vec<node::HollowNode>> = Arc::new(
        (0..config.count)
            .map(|i| node::HollowNode::new(&config, i, taints.clone()))
            .collect(),
    );
    tracing::info!(count = nodes.len(), prefix = %config.prefix, "registering hollow nodes");
    futures::stream::iter(nodes.iter())
        .map(|n| n.register(&client))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .context("registering the hollow nodes")?;
    tracing::info!(count = nodes.len(), "hollow nodes registered");
    let leases = tokio::spawn(renew_leases(client.clone(), Arc::clone(&nodes)));
    let images = tokio::spawn(images::report(client.clone(), Arc::clone(&nodes)));
    let recovery = tokio::spawn(recovery::run(client.clone(), Arc::clone(&nodes)));
    let result = pods::run(client, Arc::clone(&nodes), config.image_size).await;
    leases.abort();
    images.abort();
    recovery.abort();
    result
}

async fn renew_leases(client: kube::Client, nodes: Arc<Vec<node::HollowNode>>) {
    let mut ticks = tokio::time::interval(LEASE_RENEW);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        futures::stream::iter(0..nodes.len())
            .map(|i| {
                let (client, nodes) = (client.clone(), Arc::clone(&nodes));
                async move {
                    if let Err(e) = nodes[i].renew_lease(&client).await {
                        tracing::warn!(node = %nodes[i].name, error = %format!("{e:#}"), "cannot renew the node lease");
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}
