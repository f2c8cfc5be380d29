//! The node agent (kubelet), growing in steps. Today: the CRI client it runs pods through
//! ([`cri`]), proven against a real containerd. Next: node registration and status shared with
//! the hollow nodes, pod workers, volumes, streaming and stats (issue 12).

pub mod cri;
