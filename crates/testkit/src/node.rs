//! A real node for tests: `styrman kubelet` with its own containerd, in a network namespace of
//! its own joined to the machine by a veth pair (the node is `10.200.<k>.2`, the machine
//! `10.200.<k>.1`), so several nodes and several tests never share a bridge, a port or a pod
//! address. Its credentials come from the cluster's CA (`--server-data-dir`) or, when it joins as
//! another machine would (`styrman agent` with the join token), from the API server; its images from
//! `scripts/images`. Dropping it kills every container it ran, then the agent, its shims and
//! mounts, and the namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::Cluster;
use crate::containerd::run;
use styrman_kubelet::cleanup::{kill_processes_naming, unmount_below};

pub struct Node {
    pub name: String,
    /// The node's address, which the API server reaches its kubelet at.
    pub ip: String,
    netns: String,
    dir: tempfile::TempDir,
    styrman: PathBuf,
    args: Vec<String>,
    kubelet: Option<Child>,
}

impl Node {
    /// Starts node `name` of `cluster` (started with [`Cluster::start_for_nodes`]), with the
    /// archives in `images` to import.
    pub fn start(cluster: &Cluster, styrman: &Path, name: &str, images: &Path) -> anyhow::Result<Node> {
        Node::start_with(cluster, styrman, name, images, &[])
    }

    /// [`Node::start`] with more `styrman kubelet` flags (`--max-pods=300`).
    pub fn start_with(
        cluster: &Cluster,
        styrman: &Path,
        name: &str,
        images: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Node> {
        let server_dir = format!("--server-data-dir={}", cluster.data_dir().display());
        Node::start_as(cluster, styrman, name, images, &["kubelet", &server_dir], extra)
    }

    /// A node that joins as users join machines: `styrman agent --token-file` with the
    /// server's join token, its credentials asked of the API server.
    pub fn join(cluster: &Cluster, styrman: &Path, name: &str, images: &Path) -> anyhow::Result<Node> {
        let token = format!("--token-file={}", cluster.data_dir().join("node-token").display());
        Node::start_as(cluster, styrman, name, images, &["agent", &token], &[])
    }

    fn start_as(
        cluster: &Cluster,
        styrman: &Path,
        name: &str,
        images: &Path,
        how: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Node> {
        let dir = tempfile::Builder::new().prefix("styrman-node-").tempdir()?;
        let agent_images = dir.path().join("agent").join("images");
        std::fs::create_dir_all(&agent_images)?;
        for archive in ["busybox.tar", "nginx.tar"] {
            std::fs::copy(images.join(archive), agent_images.join(archive))?;
        }
        let (netns, k) = network_namespace(dir.path())?;
        let ip = format!("10.200.{k}.2");
        let args = how.iter().map(|a| a.to_string()).chain([
            format!("--data-dir={}", dir.path().display()),
            format!("--server=https://10.200.{k}.1:{}", cluster.port()),
            // The API server's certificate names the cluster's service names, not this address.
            "--tls-server-name=kubernetes".to_string(),
            format!("--hostname-override={name}"),
            format!("--node-ip={ip}"),
            "--airgap".to_string(),
            // Its own cgroup tree: nodes of parallel tests share the machine's hierarchies.
            format!("--cgroup-root=/{netns}"),
        ]);
        let args = args.chain(extra.iter().map(|a| a.to_string())).collect();
        let mut node = Node {
            name: name.to_string(),
            ip,
            netns,
            dir,
            styrman: styrman.to_path_buf(),
            args,
            kubelet: None,
        };
        node.start_kubelet()?;
        Ok(node)
    }

    /// (Re)starts the agent, as after a crash.
    pub fn start_kubelet(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kubelet.log"))?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(&self.styrman)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        crate::die_with_parent(&mut command);
        self.kubelet = Some(command.spawn().context("cannot run the kubelet")?);
        Ok(())
    }

    /// The agent's process id (`nsenter` executes the agent in its own place).
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(Child::id)
    }

    /// SIGKILLs the agent (its containerd dies with it; the pods' shims do not).
    pub fn kill_kubelet(&mut self) {
        if let Some(mut child) = self.kubelet.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubelet.log")).unwrap_or_default()
    }

    /// The node's containerd's log.
    pub fn containerd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent/containerd/containerd.log")).unwrap_or_default()
    }

    /// `ctr` against the node's containerd, in CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("agent/containerd/containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr runs")
    }

    /// The node's data directory (`--data-dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `program` with `args` in the node's network namespace.
    pub fn run_inside(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(program)
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    /// The ids of the tasks (running containers and sandboxes) on the node.
    pub fn tasks(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.ctr(&["task", "ls", "-q"]).stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A network namespace with a veth pair to the machine on the first free `10.200.<k>.0/30`
/// (the host side's name is the lock: creating it fails when another test holds `k`).
fn network_namespace(dir: &Path) -> anyhow::Result<(String, u32)> {
    let name = format!("styrman-{}", dir.file_name().unwrap_or_default().to_string_lossy());
    run(Command::new("ip").args(["netns", "add", &name]))?;
    let start = std::process::id() % 250;
    for i in 0..250 {
        let k = (start + i) % 250 + 1;
        let host = format!("stn{k}");
        let made = Command::new("ip")
            .args([
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ])
            .stderr(Stdio::null())
            .status()?;
        if !made.success() {
            continue;
        }
        let inside = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &name]).args(args);
            run(&mut c)
        };
        run(Command::new("ip").args(["addr", "add", &format!("10.200.{k}.1/30"), "dev", &host]))?;
        run(Command::new("ip").args(["link", "set", &host, "up"]))?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        inside(&["ip", "addr", "add", &format!("10.200.{k}.2/30"), "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "route", "add", "default", "via", &format!("10.200.{k}.1")])?;
        return Ok((name, k));
    }
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    anyhow::bail!("no free 10.200.<k>.0/30 for a node")
}

impl Drop for Node {
    fn drop(&mut self) {
        // Containers first, while the node's containerd still answers; the agent, stopped,
        // restarts none of them.
        if let Some(child) = &self.kubelet {
            let _ = Command::new("kill").args(["-STOP", &child.id().to_string()]).status();
        }
        for task in self.tasks() {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", &task]);
        }
        for _ in 0..50 {
            if self.tasks().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill_kubelet();
        kill_processes_naming(self.dir.path());
        unmount_below(self.dir.path());
        styrman_kubelet::cgroups::remove_tree(&format!("/{}", self.netns));
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
