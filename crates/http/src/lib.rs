//! HTTP pieces more than one component needs and no crate provides as Kubernetes does them.
//! Today: the upgrade-aware proxy that carries `exec`, `attach` and `port-forward` from the
//! API server to the kubelet and from the kubelet to the container runtime's stream server,
//! and the WebSocket tunnel kubectl's port-forward speaks SPDY in.

pub mod tunnel;
pub mod upgrade;
