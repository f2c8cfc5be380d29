//! Support for tests and benchmarks: the real parts (etcd today; the API server, containerd and
//! kubectl later) started as child processes on loopback, in temporary directories, and stopped
//! when their handle is dropped.

mod cluster;
mod etcd;
mod ports;

pub use cluster::Cluster;
pub use etcd::EtcdServer;
pub use ports::free_port;

/// Makes a child process get SIGKILL when the thread that started it ends, so a test that is
/// killed (timeout, panic in another thread, SIGKILL) leaves no server behind.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl with constant arguments is async-signal-safe and touches no memory of the
    // parent, which is all a pre_exec closure may do.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
