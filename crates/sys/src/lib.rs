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

/// Asks the process `pid` to stop (SIGTERM), so it can clean up (a leader releases its lease)
/// before its supervisor would have to kill it.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    signal(pid, libc::SIGTERM)
}

/// Kills the process `pid` (SIGKILL): for what must not run on, such as a stopped node's
/// containers.
pub fn kill(pid: u32) -> std::io::Result<()> {
    signal(pid, libc::SIGKILL)
}

fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let result = unsafe { libc::kill(pid, signal) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The size and free space, in bytes, of the filesystem holding `path` (statvfs(3)): what a
/// node reports as `ephemeral-storage` and watches for disk pressure.
pub fn filesystem_space(path: &std::path::Path) -> std::io::Result<FilesystemSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points to
    // writable memory of the right type, which statvfs fills when it returns 0.
    #[allow(unsafe_code)]
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stat.assume_init()
    };
    let block = stat.f_frsize as u64;
    Ok(FilesystemSpace {
        total: stat.f_blocks as u64 * block,
        available: stat.f_bavail as u64 * block,
    })
}

/// See [`filesystem_space`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilesystemSpace {
    pub total: u64,
    /// What an unprivileged writer may still use.
    pub available: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_filesystem_has_a_size() {
        let space = super::filesystem_space(std::path::Path::new("/")).unwrap();
        assert!(space.total > 0 && space.available <= space.total, "{space:?}");
        assert!(super::filesystem_space(std::path::Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn the_child_runs_normally() {
        let mut command = std::process::Command::new("true");
        super::die_with_parent(&mut command);
        assert!(command.status().unwrap().success());
    }

    #[test]
    fn terminate_stops_a_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        super::terminate(child.id()).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
