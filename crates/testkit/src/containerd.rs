//! A real containerd (Debian's `containerd` and `runc`) with its root, state, sockets and runc
//! state in a temporary directory, configured exactly as the node agent configures its own
//! (`styrman_kubelet::containerd`). Dropping it removes
//! every task and container it ran, stops it, ends any shim it left and unmounts what it
//! mounted: a test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use styrman_kubelet::containerd::ContainerdLayout;

/// The containerd namespace the CRI plugin keeps pods and images in.
const CRI_NAMESPACE: &str = "k8s.io";

pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    /// The containerd namespace this handle's `ctr` calls use (one per test, so that runc's
    /// state under /run/containerd/runc/<namespace> is never shared).
    namespace: String,
    /// The network namespace it runs in, when it has one of its own.
    netns: Option<String>,
}

impl Containerd {
    /// A containerd in the machine's network namespace (pods on the host network only).
    pub fn start() -> anyhow::Result<Containerd> {
        Self::start_with(None)
    }

    /// A containerd in a network namespace of its own, as one node of a multi-node test, with
    /// the node's pod network (`styrman_kubelet::cni`) on `pod_cidr`: its bridge and pods live
    /// in that namespace, which goes with the handle.
    pub fn start_with_pod_network(pod_cidr: &str) -> anyhow::Result<Containerd> {
        Self::start_with(Some(pod_cidr))
    }

    fn start_with(pod_cidr: Option<&str>) -> anyhow::Result<Containerd> {
        let dir = tempfile::Builder::new().prefix("styrman-containerd-").tempdir()?;
        let layout = ContainerdLayout::new(dir.path());
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let mut command = layout.prepare(styrman_images::pause::IMAGE)?;
        let netns = match pod_cidr {
            Some(cidr) => {
                styrman_kubelet::cni::install(&layout.cni_conf_dir(), cidr, &dir.path().join("ipam"))?;
                let name = format!("styrman-{}", dir.path().file_name().unwrap().to_string_lossy());
                run(Command::new("ip").args(["netns", "add", &name]))?;
                run(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]))?;
                let program = command.get_program().to_owned();
                let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
                // nsenter joins only the network namespace; `ip netns exec` would also remount
                // /sys, hiding the cgroup hierarchies runc needs.
                command = Command::new("nsenter");
                command.arg(format!("--net=/run/netns/{name}")).arg(program).args(args);
                Some(name)
            }
            None => None,
        };
        crate::die_with_parent(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .inspect_err(|_| {
                if let Some(name) = &netns {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            })
            .context("cannot run containerd: install Debian's containerd and runc (scripts/test does)")?;
        let namespace = format!("styrman-test-{}", dir.path().file_name().unwrap().to_string_lossy());
        let mut containerd = Containerd {
            child,
            dir,
            namespace,
            netns,
        };
        containerd.wait_ready(Duration::from_secs(20))?;
        Ok(containerd)
    }

    /// The gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        ContainerdLayout::new(self.dir.path()).socket()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What containerd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in this handle's namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.namespace, args)
    }

    /// `ctr` that must succeed; its standard output.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("containerd exited ({status}) before it served:\n{}", self.log());
            }
            if self.socket().exists() && self.ctr(&["version"]).status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not serve within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr` in the namespace CRI works in (`k8s.io`): images imported here are what pods
    /// can use.
    pub fn ctr_cri(&self, args: &[&str]) -> Output {
        self.ctr_in(CRI_NAMESPACE, args)
    }

    fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .output()
            .expect("ctr runs")
    }

    /// Kills and deletes every task and container of this handle's namespace and of CRI's.
    fn remove_containers(&self) {
        for namespace in [self.namespace.as_str(), CRI_NAMESPACE] {
            let ids = |what: &str| -> Vec<String> {
                String::from_utf8_lossy(&self.ctr_in(namespace, &[what, "ls", "-q"]).stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            };
            for task in ids("task") {
                let _ = self.ctr_in(namespace, &["task", "kill", "--signal", "SIGKILL", &task]);
            }
            for container in ids("container") {
                for _ in 0..50 {
                    let deleted = self.ctr_in(namespace, &["task", "delete", &container]).status.success();
                    if deleted || !ids("task").contains(&container) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = self.ctr_in(namespace, &["container", "delete", &container]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_containers();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        styrman_kubelet::cleanup::kill_processes_naming(self.dir.path());
        styrman_kubelet::cleanup::unmount_below(self.dir.path());
        // runc keeps a namespace's state here whatever containerd's own directories are.
        let _ = std::fs::remove_dir(format!("/run/containerd/runc/{}", self.namespace));
        // So does the cgroup of a namespace's containers, `/<namespace>/<id>`.
        styrman_kubelet::cgroups::remove_tree(&format!("/{}", self.namespace));
        if let Some(netns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

/// Runs a set-up command that must succeed.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs `scripts/images OUT` with the given styrman binary: busybox, nginx and pause archives.
pub fn build_images(styrman: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/images");
    let built = Command::new(script)
        .arg(out)
        .env("STYRMAN", styrman)
        .output()
        .expect("scripts/images runs");
    assert!(
        built.status.success(),
        "scripts/images failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
}
