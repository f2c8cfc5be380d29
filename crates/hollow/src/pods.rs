//! The pods bound to hollow nodes: started (Running and Ready, with IPs and container
//! statuses) as soon as they are bound, and gone as soon as they are deleted (a graceful
//! deletion completes at once: nothing runs to stop).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::node::HollowNode;

/// Status writes and deletions in flight at once.
const IN_FLIGHT: usize = 64;

/// `image_size`: what every pulled image weighs (None: made up from its name).
pub async fn run(client: kube::Client, nodes: Arc<Vec<HollowNode>>, image_size: Option<i64>) -> anyhow::Result<()> {
    let by_name: Arc<HashMap<String, usize>> =
        Arc::new(nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect());
    // Pods being started or deleted, by uid: a watch event for one is not acted on twice.
    let busy: Arc<Mutex<HashSet<String>>> = Default::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| by_name.get(n))
        else {
            continue;
        };
        let node = *node;
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let started = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if started && !deleting {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        if !busy.lock().expect("busy lock").insert(uid.clone()) {
            continue;
        }
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let (client, nodes, busy) = (client.clone(), Arc::clone(&nodes), Arc::clone(&busy));
        tokio::spawn(async move {
            let result = if deleting {
                finish_deletion(&client, &pod).await
            } else {
                start(&client, &nodes[node], &pod, image_size).await
            };
            if let Err(e) = result {
                tracing::warn!(pod = %pod.name_any(), error = %format!("{e:#}"), "hollow pod update failed");
            }
            busy.lock().expect("busy lock").remove(&uid);
            drop(permit);
        });
    }
    anyhow::bail!("the pod watch ended")
}

/// Marks `pod` Running and Ready on `node`, as a kubelet reports a started pod; its images are
/// the node's from now on.
async fn start(client: &kube::Client, node: &HollowNode, pod: &Pod, image_size: Option<i64>) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second)?.to_string();
    let ip = node.pod_ip();
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<serde_json::Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "ready": true, "started": true, "restartCount": 0,
                "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("hollow://{}-{}", pod.uid().unwrap_or_default(), c.name),
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let status = json!({"status": {
        "phase": "Running",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"),
                       condition("ContainersReady"), condition("PodScheduled")],
        "hostIP": node.ip, "hostIPs": [{"ip": node.ip}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": containers,
        "qosClass": styrman_kubelet::pods::qos_class(&spec),
    }});
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(status))
        .await
    {
        Ok(_) => {
            let images = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .filter_map(|c| c.image.as_deref());
            node.images.pulled(images, image_size);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Completes a graceful deletion: the pod's containers are "stopped" at once.
async fn finish_deletion(client: &kube::Client, pod: &Pod) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
