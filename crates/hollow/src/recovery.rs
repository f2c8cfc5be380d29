//! What a kubelet does when it finds the control plane gave up on its node: the node
//! lifecycle controller marks a node whose heartbeats stopped Ready=Unknown and its pods not
//! Ready; a kubelet that is alive again posts its own conditions, and its pods' readiness,
//! once more. One watch of Nodes serves every hollow node; it acts only on a node of this
//! process whose Ready condition is not True, so a healthy cluster costs nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::node::HollowNode;

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Watches the Nodes; posts a hollow node's conditions again when another writer changed its
/// Ready condition.
pub async fn run(client: kube::Client, nodes: Arc<Vec<HollowNode>>) {
    let by_name: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
    let recovering: Arc<Mutex<HashSet<usize>>> = Default::default();
    let mut events = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let node = match event {
            Ok(Event::Apply(node) | Event::InitApply(node)) => node,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        let Some(&i) = by_name.get(&node.name_any()) else {
            continue;
        };
        if ready(&node) || !recovering.lock().expect("recovering lock").insert(i) {
            continue;
        }
        let (client, nodes, recovering) = (client.clone(), Arc::clone(&nodes), Arc::clone(&recovering));
        tokio::spawn(async move {
            if let Err(e) = nodes[i].post_status(&client).await {
                tracing::warn!(node = %nodes[i].name, error = %format!("{e:#}"), "cannot post the node status");
            } else if let Err(e) = ready_pods_again(&client, &nodes[i].name).await {
                tracing::warn!(node = %nodes[i].name, error = %format!("{e:#}"), "cannot mark the node's pods ready");
            }
            recovering.lock().expect("recovering lock").remove(&i);
        });
    }
}

/// Marks the running pods of `node` that were marked not Ready (by the node lifecycle
/// controller, while the node was silent) Ready again.
pub async fn ready_pods_again(client: &kube::Client, node: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let now = jiff::Timestamp::now().round(jiff::Unit::Second)?.to_string();
    for pod in on_node.items {
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let not_ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status != "True"));
        if !running || !not_ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        ]}});
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        match api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
