//! The node controllers' events, through the runtime's [`Recorder`] (`kubectl describe node`
//! and `kubectl get events` show them). Their source also names the host the controller runs on.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use styrman_runtime::{Recorder, reference_to};

/// A recorder for the node controller `component` (upstream's `EventSource.Component`).
pub fn recorder(client: kube::Client, component: &str) -> Recorder {
    Recorder::new(client, component).with_host()
}

/// Upstream's RecordNodeStatusChange: "Node X status is now: S", reason S.
pub fn node_status_change(recorder: &Recorder, node: &Node, status: &str) {
    recorder.normal(
        reference_to(node),
        status,
        format!("Node {} status is now: {status}", node.name_any()),
    );
}
