//! Support for tests and benchmarks: the real parts (etcd, `styrman server` with kubectl; later
//! containerd) started as child processes on loopback, in temporary directories, and stopped
//! when their handle is dropped.

mod cluster;
mod etcd;
mod ports;

pub use cluster::Cluster;
pub use etcd::EtcdServer;
pub use ports::free_port;

pub use styrman_sys::die_with_parent;
