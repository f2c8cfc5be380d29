//! The node agent (kubelet), growing in steps. Today: the CRI client it runs pods through
//! ([`cri`]), proven against a real containerd, and the node's registration, status and Lease
//! ([`node_status`]), which the hollow nodes run too. Next: the agent itself, pod workers,
//! volumes, streaming and stats (issue 12).

pub mod cni;
pub mod containerd;
pub mod cri;
pub mod machine;
pub mod node_status;
