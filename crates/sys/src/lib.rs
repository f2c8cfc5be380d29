//! Small Linux helpers shared by styrman's components. The only `unsafe` in the workspace lives
//! here, each use explained.

/// Makes a child process get SIGKILL when the thread that started it ends, so a supervised
/// component (or a server a test started) never outlives the process that owns it, even when
/// that process was SIGKILLed and had no chance to clean up.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl with constant arguments is one, and it touches
    // no memory of the parent.
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_child_runs_normally() {
        let mut command = std::process::Command::new("true");
        super::die_with_parent(&mut command);
        assert!(command.status().unwrap().success());
    }
}
