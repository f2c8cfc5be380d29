//! The node's own containerd: its configuration, generated under the agent's directory, and
//! the command that starts it. Every directory and socket is the agent's (root, state, the
//! gRPC and ttrpc sockets, runc's state, pod network namespaces), so a node never touches
//! another containerd on the machine, and `styrman cleanup` knows what to remove. The settings
//! are what this kind of machine needs: the cgroupfs driver (no systemd), runc (crun cannot run
//! on a hybrid cgroup layout), `restrict_oom_score_adj` (no CAP_SYS_RESOURCE to lower a
//! sandbox's OOM score) and Debian's CNI plugin directory.

use std::path::{Path, PathBuf};

/// Where one containerd keeps everything.
#[derive(Clone, Debug)]
pub struct ContainerdLayout {
    pub dir: PathBuf,
}

impl ContainerdLayout {
    pub fn new(dir: impl Into<PathBuf>) -> ContainerdLayout {
        ContainerdLayout { dir: dir.into() }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The gRPC socket: CRI and containerd's own API.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// runc's state directory for CRI's containers.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// The configuration file's text.
    pub fn config(&self, sandbox_image: &str) -> String {
        let r = self.dir.display();
        format!(
            r#"version = 2
root = "{r}/root"
state = "{r}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{r}/containerd.sock.ttrpc"
[debug]
  address = "{r}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # exec, attach and port-forward: the kubelet proxies to this stream server, on loopback
  # in the node's network namespace, plain HTTP, any free port.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which these machines do not grant.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /run/netns (which `ip netns`
  # re-mounts, shadowing them).
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
"#,
            socket = self.socket().display(),
            cni = self.cni_conf_dir().display(),
            runc = runc_binary().display(),
            runc_root = self.runc_root().display(),
        )
    }

    /// Writes the configuration; the command that runs containerd with it.
    pub fn prepare(&self, sandbox_image: &str) -> std::io::Result<std::process::Command> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::create_dir_all(self.cni_conf_dir())?;
        std::fs::write(self.config_file(), self.config(sandbox_image))?;
        let mut command = std::process::Command::new("containerd");
        command.arg("--config").arg(self.config_file());
        Ok(command)
    }
}

/// runc from Debian's package (`/usr/sbin/runc`), or the first on PATH.
fn runc_binary() -> PathBuf {
    let debian = Path::new("/usr/sbin/runc");
    if debian.exists() {
        return debian.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("runc"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("runc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_containerd_keeps_is_under_its_directory() {
        let layout = ContainerdLayout::new("/var/lib/styrman/agent/containerd");
        let config = layout.config("registry.k8s.io/pause:3.10");
        for line in config.lines().filter(|l| l.contains('/') && l.contains('=')) {
            let value = line.split_once('=').unwrap().1.trim().trim_matches('"');
            if value.starts_with('/') && !value.starts_with("/usr/") {
                assert!(value.starts_with("/var/lib/styrman/agent/containerd/"), "{line}");
            }
        }
        assert!(config.contains("restrict_oom_score_adj = true"));
        assert!(config.contains("SystemdCgroup = false"));
        assert!(config.contains(r#"sandbox_image = "registry.k8s.io/pause:3.10""#));
    }
}
