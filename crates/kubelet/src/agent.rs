//! `styrman kubelet`: the node agent's start-up and its long-running loops, in the order the
//! kubelet does them: the container runtime first (its own containerd, started and restarted
//! here, unless `--container-runtime-endpoint` names one), the images a node needs without a
//! registry (the pause image and `DATA_DIR/agent/images/*.tar`, k3s's air-gap convention), the
//! Node and its Lease, the pod network once the node IPAM controller gave the node a pod CIDR,
//! then the pods ([`crate::pods`]) and the kubelet's HTTPS port ([`crate::server`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::containerd::ContainerdLayout;
use crate::cri::Runtime;
use crate::machine::NodeConfig;
use crate::node_status::NodeRegistration;

/// What `styrman kubelet` is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub node: NodeConfig,
    /// An existing CRI socket; None: the agent runs its own containerd under `node.root_dir`.
    pub runtime_endpoint: Option<String>,
    /// Run the local copy of an image when a pull fails for want of a registry.
    pub airgap: bool,
    /// Where the pods' cgroups go: `<cgroup_root>/kubepods/...` (upstream's `--cgroup-root`).
    pub cgroup_root: String,
    /// Static pods' manifests; None: `DATA_DIR/agent/pod-manifests`.
    pub pod_manifest_path: Option<PathBuf>,
    /// The kubelet's HTTPS address and its serving certificate (from the cluster CA) and the CA
    /// its callers' client certificates must come from.
    pub address: std::net::SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// How often the node's status is posted (the kubelet's `nodeStatusReportFrequency` is 5 min
/// with leases; changes go at once) and its Lease renewed.
const STATUS_EVERY: Duration = Duration::from_secs(60);
const LEASE_EVERY: Duration = Duration::from_secs(10);
/// How long the runtime has to answer the heartbeat's health check.
const RUNTIME_CHECK: Duration = Duration::from_secs(3);

/// The directories of one node under `root_dir` (`DATA_DIR/agent`).
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn containerd(&self) -> ContainerdLayout {
        ContainerdLayout::new(self.root.join("containerd"))
    }
    /// Archives imported at every start.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// The containers' logs, `<namespace>_<pod>_<uid>/<container>/<attempt>.log` (the
    /// kubelet's /var/log/pods).
    pub fn pod_logs(&self) -> PathBuf {
        self.root.join("logs").join("pods")
    }
    /// Each pod's own directory (its volumes).
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    pub fn cni_ipam(&self) -> PathBuf {
        self.root.join("cni").join("ipam")
    }
    /// Static pods' manifests unless `--pod-manifest-path` says otherwise (k3s's place).
    pub fn pod_manifests(&self) -> PathBuf {
        self.root.join("pod-manifests")
    }
    /// The `--cgroup-root` the agent last ran with, for `styrman cleanup`.
    pub fn cgroup_root_file(&self) -> PathBuf {
        self.root.join("cgroup-root")
    }
}

pub async fn run(config: Config) -> Result<()> {
    let layout = Layout {
        root: config.node.root_dir.clone(),
    };
    std::fs::create_dir_all(&layout.root).with_context(|| format!("cannot create {}", layout.root.display()))?;
    std::fs::write(layout.cgroup_root_file(), &config.cgroup_root)?;
    // The static pod directory is there once the node is: users put manifests in it.
    let pod_manifests = config
        .pod_manifest_path
        .clone()
        .unwrap_or_else(|| layout.pod_manifests());
    std::fs::create_dir_all(&pod_manifests).with_context(|| format!("cannot create {}", pod_manifests.display()))?;
    let (runtime, socket, containerd) = match &config.runtime_endpoint {
        Some(endpoint) => (Runtime::connect(endpoint).await?, PathBuf::from(endpoint), None),
        None => {
            let containerd = layout.containerd();
            let supervisor = tokio::spawn(supervise_containerd(containerd.clone()));
            let runtime = wait_for_runtime(&containerd.socket()).await?;
            (runtime, containerd.socket(), Some(supervisor))
        }
    };
    import_images(&runtime, &socket, &layout.images()).await?;
    let client = styrman_runtime::connect(&config.kubeconfig, "kubelet/v1.33.0 (linux/amd64) styrman").await?;
    let facts = crate::machine::node_facts(&config.node, &runtime.version().await?)?;
    let registration = Arc::new(NodeRegistration::new(facts));
    registration.register(&client, runtime.node_images().await?).await?;
    tracing::info!(node = registration.name(), "node registered");

    let node_ip = registration.internal_ip();
    let heartbeat = tokio::spawn(heartbeat(client.clone(), Arc::clone(&registration), runtime.clone()));
    // The pod network is ours to configure only in our own containerd.
    if containerd.is_some() {
        tokio::spawn(install_pod_network(
            client.clone(),
            registration.name().to_string(),
            layout.containerd().cni_conf_dir(),
            layout.cni_ipam(),
        ));
    }
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(registration.name()));
    let pods = crate::pods::Manager::new(crate::pods::Settings {
        metrics: metrics.clone(),
        client: client.clone(),
        runtime: runtime.clone(),
        node_name: registration.name().to_string(),
        node_ip,
        layout: layout.clone(),
        airgap: config.airgap,
        cgroup_root: config.cgroup_root.clone(),
        pod_manifests: Some(pod_manifests),
    });
    let server = tokio::spawn(crate::server::serve(
        crate::server::ServerConfig {
            address: config.address,
            cert: config.tls_cert_file.clone(),
            key: config.tls_private_key_file.clone(),
            client_ca: config.client_ca_file.clone(),
        },
        runtime.clone(),
        std::sync::Arc::new(crate::stats::Source::new(
            runtime.clone(),
            registration.name().to_string(),
            layout.root.clone(),
            config.cgroup_root.clone(),
        )),
        metrics,
    ));
    let result = tokio::select! {
        r = pods.run() => r,
        r = server => r.context("the kubelet server stopped")?,
        _ = styrman_runtime::shutdown_signal() => Ok(()),
    };
    heartbeat.abort();
    if let Some(c) = containerd {
        c.abort();
    }
    result
}

/// Renews the Lease every 10 s and posts the node's status every minute, NotReady while the
/// runtime does not answer.
async fn heartbeat(client: kube::Client, registration: Arc<NodeRegistration>, runtime: Runtime) {
    let mut lease = tokio::time::interval(LEASE_EVERY);
    let mut last_status = tokio::time::Instant::now();
    let mut was_ready = true;
    let mut images = Vec::new();
    loop {
        lease.tick().await;
        if let Err(e) = registration.renew_lease(&client).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot renew the node lease");
        }
        // A runtime that hangs is as down as one that is gone.
        let runtime_error = match tokio::time::timeout(RUNTIME_CHECK, runtime.version()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("container runtime is down: {e:#}")),
            Err(_) => Some(format!("container runtime is down: no answer in {RUNTIME_CHECK:?}")),
        };
        let ready = runtime_error.is_none();
        if ready != was_ready || last_status.elapsed() >= STATUS_EVERY {
            // The images last listed while the runtime is down (a hung one would hang us).
            if ready && let Ok(Ok(listed)) = tokio::time::timeout(RUNTIME_CHECK, runtime.node_images()).await {
                images = listed;
            }
            let images = images.clone();
            match registration
                .post_status_with(&client, images, runtime_error.as_deref())
                .await
            {
                Ok(()) => {
                    was_ready = ready;
                    last_status = tokio::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot post the node status"),
            }
        }
    }
}

/// Runs the node's containerd, restarting it when it exits (pods keep running: their shims
/// outlive it).
async fn supervise_containerd(layout: ContainerdLayout) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = tokio::time::Instant::now();
        match start_containerd(&layout) {
            Ok(mut child) => {
                let status = child.wait().await;
                tracing::warn!(status = ?status, "containerd exited; restarting it");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot start containerd"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn start_containerd(layout: &ContainerdLayout) -> Result<tokio::process::Child> {
    let mut command = layout
        .prepare(styrman_images::pause::IMAGE)
        .with_context(|| format!("cannot write containerd's configuration under {}", layout.dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.dir.join("containerd.log"))?;
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    styrman_sys::die_with_parent(&mut command);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command
        .spawn()
        .context("cannot run containerd (is the containerd package installed?)")
}

async fn wait_for_runtime(socket: &Path) -> Result<Runtime> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Runtime::connect(&socket.to_string_lossy()).await {
            Ok(runtime) => return Ok(runtime),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Loads the pause image (built into this binary) when the runtime lacks it, and every archive
/// in `images_dir`, into the runtime's `k8s.io` namespace with containerd's own `ctr`.
async fn import_images(runtime: &Runtime, socket: &Path, images_dir: &Path) -> Result<()> {
    let mut archives: Vec<PathBuf> = match std::fs::read_dir(images_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect(),
        Err(_) => Vec::new(),
    };
    archives.sort();
    let present = runtime.has_image(styrman_images::pause::IMAGE).await?;
    let pause = tempfile_in(socket.parent().unwrap_or(Path::new("/tmp")), "pause.tar");
    if !present {
        let file = std::fs::File::create(&pause)?;
        styrman_images::pause::write(std::io::BufWriter::new(file))?;
        archives.insert(0, pause.clone());
    }
    for archive in &archives {
        match crate::images::import(socket, archive).await {
            Ok(_) => tracing::info!(archive = %archive.display(), "imported images"),
            // One bad archive does not keep the node from starting.
            Err(e) => tracing::warn!(archive = %archive.display(), error = %format!("{e:#}"), "cannot import images"),
        }
    }
    let _ = std::fs::remove_file(pause);
    Ok(())
}

fn tempfile_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{}-{name}", std::process::id()))
}

/// Waits for the node IPAM controller to give the node its pod CIDR, then writes the pod
/// network's CNI configuration (pods off the host network start from then on).
async fn install_pod_network(client: kube::Client, node: String, conf_dir: PathBuf, ipam_dir: PathBuf) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        match nodes.get(&node).await {
            Ok(n) => {
                if let Some(cidr) = n.spec.and_then(|s| s.pod_cidr) {
                    match crate::cni::install(&conf_dir, &cidr, &ipam_dir) {
                        Ok(()) => {
                            tracing::info!(%cidr, "pod network configured");
                            return;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot write the CNI configuration"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the node for its pod CIDR"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
