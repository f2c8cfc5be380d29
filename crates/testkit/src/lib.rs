//! Support for tests and benchmarks: the real parts (etcd today; the API server, containerd and
//! kubectl later) started as child processes on loopback, in temporary directories, and stopped
//! when their handle is dropped.

mod etcd;
mod ports;

pub use etcd::EtcdServer;
pub use ports::free_port;
