//! Support for tests and benchmarks: the real parts (etcd, `styrman server` with kubectl,
//! containerd) started as child processes on loopback, in temporary directories, and stopped
//! when their handle is dropped; and what tests of them share (waiting for a condition,
//! reading kubectl's JSON).

mod cluster;
mod containerd;
mod etcd;
mod node;
mod ports;
mod process;
mod wait;

pub use cluster::Cluster;
pub use containerd::{Containerd, build_images};
pub use etcd::EtcdServer;
pub use node::Node;
pub use ports::free_port;
pub use process::ChildProcess;
pub use wait::{Outcome, eventually, json};

pub use styrman_sys::die_with_parent;
