//! HTTP pieces more than one component needs and no crate provides as Kubernetes does them.
//! Today: the upgrade-aware proxy that carries `exec`, `attach` and `port-forward` from the
//! API server to the kubelet and from the kubelet to the container runtime's stream server,
//! the WebSocket tunnel kubectl's port-forward speaks SPDY in, and the translator from
//! WebSocket `v5.channel.k8s.io` to SPDY (with the SPDY/3.1 client end it needs).

pub mod spdy;
pub mod translate;
pub mod tunnel;
pub mod upgrade;
