//! The node agent (kubelet): registers the node, runs the pods bound to it on containerd
//! through CRI, and serves their logs and streams (exec, attach, port-forward) to the API server. [`agent`] starts everything;
//! [`pods`] runs pods; [`node_status`] is shared with the hollow nodes.

pub mod agent;
pub mod cgroups;
pub mod cleanup;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod images;
pub mod logs;
pub mod machine;
pub mod metrics;
pub mod node_status;
pub mod pods;
pub mod server;
pub mod stats;
pub mod streaming;
