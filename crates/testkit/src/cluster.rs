use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{ChildProcess, free_port};

/// A real `styrman server` (the whole control plane as child processes) on loopback, with its
/// data in a temporary directory, and the real `kubectl` pointed at it. The server runs in its
/// own process group, and the whole group is killed when this is dropped.
pub struct Cluster {
    server: Child,
    /// The binary the server runs, for the other styrman processes a test starts.
    styrman: PathBuf,
    data: tempfile::TempDir,
    /// HOME for kubectl, so its discovery cache belongs to this cluster alone.
    home: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

impl Cluster {
    /// Starts `styrman server` from the binary at `styrman` and waits until it serves.
    pub fn start(styrman: &Path) -> anyhow::Result<Cluster> {
        Self::start_with(styrman, &[])
    }

    /// Same, with extra flags for `styrman server`.
    pub fn start_with(styrman: &Path, extra: &[&str]) -> anyhow::Result<Cluster> {
        Self::start_on("127.0.0.1", styrman, extra)
    }

    /// A control plane that nodes in their own network namespaces reach ([`crate::Node`]):
    /// it listens on every address.
    pub fn start_for_nodes(styrman: &Path) -> anyhow::Result<Cluster> {
        Self::start_on("0.0.0.0", styrman, &[])
    }

    /// [`Cluster::start_for_nodes`] with more `styrman server` flags.
    pub fn start_for_nodes_with(styrman: &Path, extra: &[&str]) -> anyhow::Result<Cluster> {
        Self::start_on("0.0.0.0", styrman, extra)
    }

    /// The control plane alone (`--disable-agent`): tests start nodes of their own.
    fn start_on(bind: &str, styrman: &Path, extra: &[&str]) -> anyhow::Result<Cluster> {
        let data = tempfile::Builder::new().prefix("styrman-cluster-").tempdir()?;
        let home = tempfile::Builder::new().prefix("styrman-kubectl-home-").tempdir()?;
        let port = free_port()?;
        let log = data.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let server = {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(styrman);
            crate::die_with_parent(&mut command);
            command
                .arg("server")
                .arg(format!("--data-dir={}", data.path().display()))
                .arg(format!("--bind-address={bind}"))
                .arg("--disable-agent")
                .arg(format!("--secure-port={port}"))
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot run {}", styrman.display()))?
        };
        let mut cluster = Cluster {
            server,
            styrman: styrman.to_path_buf(),
            data,
            home,
            port,
            log,
        };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.server.try_wait()? {
                bail!("styrman server exited ({status}):\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("styrman server not ready within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the supervised `component` (`apiserver`, `controller-manager`, ...): a child
    /// of the server whose command line is `styrman <component> ...`.
    pub fn component_pid(&self, component: &str) -> Option<u32> {
        let server = self.server.id();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the parenthesised command name: state, then the parent pid.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if parent != Some(server.to_string().as_str()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            if cmdline.split(|b| *b == 0).nth(1) == Some(component.as_bytes()) {
                return Some(pid);
            }
        }
        None
    }

    /// Kills the supervised `component` with SIGKILL (the supervisor restarts it) and returns
    /// the pid it had. For the API server, waits until the new one serves.
    pub fn kill_component(&mut self, component: &str) -> anyhow::Result<u32> {
        let pid = self
            .component_pid(component)
            .with_context(|| format!("no {component} is running"))?;
        let status = Command::new("kill").arg("-9").arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -9 {pid} failed");
        if component == "apiserver" {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.component_pid(component).is_none_or(|p| p == pid) {
                anyhow::ensure!(Instant::now() < deadline, "the apiserver was not restarted");
                std::thread::sleep(Duration::from_millis(20));
            }
            self.wait_ready(Duration::from_secs(30))?;
        }
        Ok(pid)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.path().join("admin.kubeconfig")
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `styrman SUBCOMMAND --kubeconfig=ADMIN_KUBECONFIG` (a component against this cluster),
    /// not yet run; it dies with the calling process, and its output goes where the caller's does.
    pub fn styrman_command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(&self.styrman);
        crate::die_with_parent(&mut command);
        command
            .arg(subcommand)
            .arg(format!("--kubeconfig={}", self.kubeconfig().display()))
            .stdin(Stdio::null());
        command
    }

    /// Runs `styrman SUBCOMMAND` against this cluster with `args`, its output discarded, until
    /// the handle is dropped.
    pub fn run_styrman(&self, subcommand: &str, args: &[&str]) -> ChildProcess {
        ChildProcess::spawn(
            self.styrman_command(subcommand)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap_or_else(|e| panic!("cannot run styrman {subcommand}: {e}"))
    }

    /// `styrman hollow-nodes` with `args` against this cluster, until the handle is dropped.
    pub fn hollow_nodes(&self, args: &[&str]) -> ChildProcess {
        self.run_styrman("hollow-nodes", args)
    }

    /// A `kubectl` command against this cluster, not yet run.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs kubectl and returns what it printed.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .expect("kubectl runs (is it installed?)")
    }

    /// Runs kubectl, fails with its output unless it succeeds, and returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\nstdout: {}\nstderr: {}\nserver log (tail):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30),
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// Runs kubectl expecting failure, and returns its stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("kubectl prints UTF-8")
    }

    /// Runs kubectl with `input` on its standard input (`-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Applies a manifest given as text, failing on error.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The whole group: the supervisor and every component it started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.server.id())])
            .status();
        let _ = self.server.wait();
    }
}
