use std::process::{Child, Command};

/// A child process (hollow nodes, a standby component, a benchmark's load), killed with
/// SIGKILL and reaped when dropped: it dies as a crashed component would, without a chance to
/// clean up.
pub struct ChildProcess(Child);

impl ChildProcess {
    pub fn spawn(command: &mut Command) -> std::io::Result<ChildProcess> {
        command.spawn().map(ChildProcess)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
