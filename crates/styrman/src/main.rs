//! `styrman`: the one binary. Each control-plane and node component is a subcommand, so
//! `styrman server` can run every component as its own child process of the same executable.

mod agent;
mod images;
mod kubelet;
mod supervisor;

/// Every component allocates per request and per watch event (JSON values, buffers); glibc's
/// allocator spent a third of the API server's CPU under load, mimalloc a small part of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
/// The Kubernetes API version styrman serves. kubectl's dispatcher picks `kubectl.1.<minor>`
/// from it.
use styrman_apiserver::KUBERNETES_VERSION;

#[derive(Parser)]
#[command(
    name = "styrman",
    version,
    about = "A Kubernetes-compatible cluster orchestrator in one binary",
    long_about = "A Kubernetes-compatible cluster orchestrator in one binary.\n\n\
        Point the real kubectl and your existing client libraries and YAML at it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole control plane, each component as a supervised child process
    Server(ServerArgs),
    /// Run the API server: the Kubernetes REST API in front of the store
    Apiserver(ControlPlaneArgs),
    /// Run the scheduler: place pods on nodes
    Scheduler(SchedulerArgs),
    /// Run the controller manager: turn desired state into running pods
    ControllerManager(ControllerManagerArgs),
    /// Run the node agent: register the node and run its pods through containerd
    Kubelet(KubeletArgs),
    /// Join this machine to a server (with its token or a kubeconfig) and run its node
    Agent(agent::AgentArgs),
    /// Run the service proxy: program Services into nftables
    Proxy,
    /// Simulate many nodes in one process, for scale tests
    HollowNodes(HollowNodesArgs),
    /// Images without a registry: pack a directory into an image archive, write the pause image
    Images(images::ImagesArgs),
    /// Stop a node's containers and remove its mounts, pod network and runtime state (as
    /// k3s-killall.sh does); images and the cluster's data stay
    Cleanup(CleanupArgs),
    /// Print styrman's version and the Kubernetes API version it serves
    Version,
}

#[derive(clap::Args)]
struct CleanupArgs {
    /// The data directory of the server or agent to clean up after
    #[arg(long, default_value = "/var/lib/styrman")]
    data_dir: std::path::PathBuf,
}

/// Where the control plane keeps its state and where it listens.
#[derive(clap::Args, Clone)]
struct ControlPlaneArgs {
    /// Directory for the embedded store, certificates and kubeconfigs
    #[arg(long, default_value = "/var/lib/styrman")]
    data_dir: std::path::PathBuf,
    /// Address to serve the API on
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// Port to serve HTTPS on
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Comma-separated etcd URLs; when set, state lives in that etcd cluster instead of the
    /// embedded store
    #[arg(long)]
    etcd_servers: Option<String>,
    /// How often the store's history older than one interval is compacted (0s: never)
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// More names and addresses for the serving certificate (those agents dial), comma-separated
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
}

/// `styrman server`: the control plane's flags, and the few it hands on to the controller
/// manager (given only when set, so the controller manager's defaults stay in one place).
#[derive(clap::Args, Clone)]
struct ServerArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    /// The pods' address ranges, for the controller manager's node IPAM
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The size of each node's pod range within --cluster-cidr (24: 253 pod addresses per node)
    #[arg(long)]
    node_cidr_mask_size: Option<u8>,
    /// How long a node may go unheard before it is marked unhealthy (Go duration: 40s, 1m30s)
    #[arg(long, value_parser = parse_go_duration)]
    node_monitor_grace_period: Option<std::time::Duration>,
    /// Run only the control plane: no node on this machine
    #[arg(long)]
    disable_agent: bool,
    /// When a pull fails because no registry can be reached, run the copy of the image the
    /// node already has (with a Warning event)
    #[arg(long)]
    airgap: bool,
}

/// `styrman kubelet`: the node agent's flags (upstream's names where upstream has them).
#[derive(clap::Args, Clone)]
struct KubeletArgs {
    /// The kubeconfig to reach the API server with [default: issued with --server-data-dir]
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The node's state lives under DATA_DIR/agent (its containerd, images, pods, logs)
    #[arg(long, default_value = "/var/lib/styrman")]
    data_dir: std::path::PathBuf,
    /// A server's data directory on this machine: the node's credentials (kubeconfig and
    /// serving certificate) are issued from its cluster CA
    #[arg(long)]
    server_data_dir: Option<std::path::PathBuf>,
    /// The API server's URL, for the kubeconfig issued with --server-data-dir or by joining
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// The name the API server's certificate is checked for, when --server is an address it
    /// does not name
    #[arg(long)]
    tls_server_name: Option<String>,
    /// The node's name [default: this machine's host name]
    #[arg(long)]
    hostname_override: Option<String>,
    /// The node's IP address [default: found from the host name or the machine's addresses]
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// Labels of the node, k=v,...
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Taints the node registers with, key[=value]:Effect,...
    #[arg(long, value_delimiter = ',')]
    register_with_taints: Vec<String>,
    /// How many pods the node runs at most
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// An existing CRI socket to use instead of the agent's own containerd
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// Run the node's copy of an image when no registry can be reached to pull it
    #[arg(long)]
    airgap: bool,
    /// The address the kubelet serves HTTPS on
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// The port the kubelet serves HTTPS on
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The cgroup under which the pods' cgroups go (`<root>/kubepods/...`)
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// A directory of static pod manifests, run without the API server and shown in it as
    /// mirror pods [default: DATA_DIR/agent/pod-manifests]
    #[arg(long)]
    pod_manifest_path: Option<std::path::PathBuf>,
    /// The serving certificate [default: issued with --server-data-dir]
    #[arg(long)]
    tls_cert_file: Option<std::path::PathBuf>,
    /// The serving certificate's key
    #[arg(long)]
    tls_private_key_file: Option<std::path::PathBuf>,
    /// The CA that callers' client certificates must come from
    #[arg(long)]
    client_ca_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    fn controller_manager_args(&self) -> Vec<String> {
        let mut args = vec![format!(
            "--kubeconfig={}",
            self.control_plane
                .data_dir
                .join("controller-manager.kubeconfig")
                .display()
        )];
        if let Some(cidr) = &self.cluster_cidr {
            args.push(format!("--cluster-cidr={cidr}"));
        }
        if let Some(size) = self.node_cidr_mask_size {
            args.push(format!("--node-cidr-mask-size={size}"));
        }
        if let Some(grace) = self.node_monitor_grace_period {
            args.push(format!("--node-monitor-grace-period={}ms", grace.as_millis()));
        }
        args
    }
}

#[derive(clap::Args, Clone)]
struct ControllerManagerArgs {
    /// The kubeconfig to reach the API server with
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Controllers to run: `*` for all, `name` to enable one, `-name` to disable one
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Take the Lease kube-system/kube-controller-manager before running controllers, so
    /// only one of several replicas acts
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The pods' address ranges (one per IP family, comma-separated) node IPAM carves nodes'
    /// podCIDRs from
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's IPv4 podCIDR
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How long a node may go without renewing its Lease or posting status before it is
    /// marked unhealthy (Go duration syntax)
    #[arg(long, default_value = "40s", value_parser = parse_go_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks nodes' health (Go duration syntax)
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    node_monitor_period: std::time::Duration,
}

/// `k=v` flags (`--labels`, `--node-labels`) as a map; empty items are skipped.
fn parse_labels(flag: &str, items: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{flag}: {l:?} is not k=v"))
        })
        .collect()
}

/// A duration as Go's time.ParseDuration reads it (kube-controller-manager's duration flags):
/// a sequence of decimal numbers with units, `1m30s`, `1.5h`, `500ms`, or `0`. Negative
/// durations mean nothing for these flags and are refused.
fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration {text:?} (e.g. 40s, 1m30s, 500ms)");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += value * nanos_per_unit;
        rest = after;
    }
    // Go's limit: an int64 of nanoseconds.
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(std::time::Duration::from_nanos(total.round() as u64))
}

#[derive(clap::Args, Clone)]
struct SchedulerArgs {
    /// The kubeconfig to reach the API server with
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1, YAML or JSON): profiles,
    /// each with its schedulerName and plugin settings
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Take the Lease kube-system/kube-scheduler before scheduling, so only one of several
    /// replicas schedules [default: true, or the configuration file's leaderElection.leaderElect]
    #[arg(long, action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// The schedulerName of the pods this scheduler places, without --config
    /// [default: default-scheduler]
    #[arg(long)]
    scheduler_name: Option<String>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
}

#[derive(clap::Args, Clone)]
struct HollowNodesArgs {
    /// The kubeconfig to reach the API server with
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// How many nodes to simulate
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Node names are this prefix and a number
    #[arg(long, default_value = "hollow-")]
    prefix: String,
    /// CPU capacity of each node
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// Pod capacity of each node
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Extra node labels, k=v,...
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Node taints, key[=value]:Effect,...
    #[arg(long, value_delimiter = ',')]
    taints: Vec<String>,
    /// Images every node holds from the start, name:size,... (size a quantity, e.g.
    /// nginx:1.25:60Mi). By default the pod sandbox image, which every containerd node has.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10:736Ki")]
    images: String,
    /// The size every image a node pulls for its pods reports (default: made up from the name)
    #[arg(long)]
    image_size: Option<String>,
}

impl HollowNodesArgs {
    fn config(self) -> anyhow::Result<styrman_hollow::Config> {
        let labels = parse_labels("--labels", &self.labels)?;
        Ok(styrman_hollow::Config {
            kubeconfig: self.kubeconfig,
            count: self.count,
            prefix: self.prefix,
            cpu: self.cpu,
            memory: self.memory,
            pods: self.pods,
            labels,
            taints: self.taints.into_iter().filter(|t| !t.is_empty()).collect(),
            images: styrman_hollow::parse_images(&self.images)?,
            image_size: self
                .image_size
                .as_deref()
                .map(|s| styrman_hollow::parse_size(s).map_err(|e| e.context("--image-size")))
                .transpose()?,
        })
    }
}

impl ControlPlaneArgs {
    fn apiserver_config(&self) -> styrman_apiserver::Config {
        styrman_apiserver::Config {
            data_dir: self.data_dir.clone(),
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            store: styrman_store::StoreConfig::from_flags(&self.data_dir, self.etcd_servers.as_deref()),
            compaction_interval: self.etcd_compaction_interval,
            tls_san: self.tls_san.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    /// The same flags, for a child process.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--data-dir={}", self.data_dir.display()),
            format!("--bind-address={}", self.bind_address),
            format!("--secure-port={}", self.secure_port),
            format!(
                "--etcd-compaction-interval={}",
                humantime::format_duration(self.etcd_compaction_interval)
            ),
        ];
        if let Some(etcd) = &self.etcd_servers {
            args.push(format!("--etcd-servers={etcd}"));
        }
        if !self.tls_san.is_empty() {
            args.push(format!("--tls-san={}", self.tls_san.join(",")));
        }
        args
    }
}

impl Command {
    /// The issue that brings a component that is not in this build yet.
    fn pending_issue(&self) -> Option<(&'static str, u32)> {
        match self {
            Command::Server(_) | Command::Apiserver(_) => None,
            Command::Scheduler(_) => None,
            Command::HollowNodes(_) | Command::Images(_) => None,
            Command::ControllerManager(_) => None,
            Command::Kubelet(_) | Command::Agent(_) | Command::Cleanup(_) => None,
            Command::Proxy => Some(("proxy", 0)),
            Command::Version => None,
        }
    }
}

fn version_text() -> String {
    format!(
        "styrman version: v{}\nKubernetes API version: {KUBERNETES_VERSION}\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some((name, issue)) = cli.command.pending_issue() {
        let tracked = if issue > 0 {
            format!(" (issue {issue})")
        } else {
            String::new()
        };
        eprintln!("styrman {name}: this component is not in this build of styrman yet{tracked}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Version => {
            print!("{}", version_text());
            Ok(())
        }
        Command::Images(args) => images::run(args),
        Command::Apiserver(args) => run_async(styrman_apiserver::run(args.apiserver_config())),
        Command::Scheduler(args) => styrman_scheduler::Config::from_flags(styrman_scheduler::Flags {
            kubeconfig: args.kubeconfig,
            config: args.config,
            leader_elect: args.leader_elect,
            scheduler_name: args.scheduler_name,
            metrics_address: args.metrics_bind_address,
        })
        .and_then(|c| run_async(styrman_scheduler::run(c))),
        Command::HollowNodes(args) => args.config().and_then(|c| run_async(styrman_hollow::run(c))),
        Command::ControllerManager(args) => {
            run_async(styrman_controller_manager::run(styrman_controller_manager::Config {
                kubeconfig: args.kubeconfig,
                controllers: args.controllers,
                leader_elect: args.leader_elect,
                cluster_cidr: args.cluster_cidr,
                node_cidr_mask_size: args.node_cidr_mask_size,
                node_monitor_grace_period: args.node_monitor_grace_period,
                node_monitor_period: args.node_monitor_period,
            }))
        }
        Command::Kubelet(args) => run_async(kubelet::run(args)),
        Command::Agent(args) => run_async(agent::run(args)),
        Command::Cleanup(args) => styrman_kubelet::cleanup::cleanup(&args.data_dir).map(|report| print!("{report}")),
        Command::Server(args) => run_async(supervisor::run(args.components())),
        _ => unreachable!("every other command is pending"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("styrman: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl ServerArgs {
    /// The control plane's components, then the local node's agent unless disabled.
    fn components(&self) -> Vec<supervisor::Component> {
        let args = self;
        let mut components = vec![
            supervisor::Component {
                name: "apiserver",
                args: args.control_plane.to_args(),
            },
            supervisor::Component {
                name: "scheduler",
                args: vec![
                    format!(
                        "--kubeconfig={}",
                        args.control_plane.data_dir.join("scheduler.kubeconfig").display()
                    ),
                    // kube-scheduler's port; a second control plane on this host goes without.
                    "--metrics-bind-address=127.0.0.1:10259".to_string(),
                ],
            },
            supervisor::Component {
                name: "controller-manager",
                args: args.controller_manager_args(),
            },
        ];
        if !self.disable_agent {
            components.push(supervisor::Component {
                name: "kubelet",
                args: self.kubelet_args(),
            });
        }
        components
    }

    fn kubelet_args(&self) -> Vec<String> {
        let data_dir = self.control_plane.data_dir.display();
        let host = if self.control_plane.bind_address.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.control_plane.bind_address.to_string()
        };
        let mut args = vec![
            format!("--data-dir={data_dir}"),
            format!("--server-data-dir={data_dir}"),
            format!("--server=https://{host}:{}", self.control_plane.secure_port),
            // k3s's convention: the server's own node says it is one.
            "--node-labels=node-role.kubernetes.io/control-plane=".to_string(),
        ];
        if self.airgap {
            args.push("--airgap".into());
        }
        args
    }
}

/// Logs to stderr (`RUST_LOG` filters; info by default) and runs `future` on a runtime.
fn run_async(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(parse_go_duration("40s"), Ok(ms(40_000)));
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_go_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_go_duration("2us"), Ok(std::time::Duration::from_micros(2)));
        assert_eq!(parse_go_duration("2\u{b5}s"), Ok(std::time::Duration::from_micros(2)));
        assert_eq!(parse_go_duration("7ns"), Ok(std::time::Duration::from_nanos(7)));
        assert_eq!(parse_go_duration("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse_go_duration("+5s"), Ok(ms(5_000)));
        for bad in ["", "40", "s", "5 s", "-5s", "1d", "1..5s", ".s", "5sm"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn server_hands_node_flags_to_the_controller_manager() {
        let cli = Cli::try_parse_from([
            "styrman",
            "server",
            "--data-dir=/d",
            "--cluster-cidr=10.1.0.0/16",
            "--node-monitor-grace-period=1m30s",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not the server command")
        };
        assert_eq!(
            args.controller_manager_args(),
            [
                "--kubeconfig=/d/controller-manager.kubeconfig",
                "--cluster-cidr=10.1.0.0/16",
                "--node-monitor-grace-period=90000ms"
            ]
        );
        let cli = Cli::try_parse_from([
            "styrman",
            "controller-manager",
            "--kubeconfig=k",
            "--node-monitor-grace-period=90000ms",
        ])
        .unwrap();
        let Command::ControllerManager(args) = cli.command else {
            panic!("not the controller-manager command")
        };
        assert_eq!(args.node_monitor_grace_period, std::time::Duration::from_secs(90));
        assert_eq!(args.node_monitor_period, std::time::Duration::from_secs(5));
        assert_eq!(
            (args.cluster_cidr.as_str(), args.node_cidr_mask_size),
            ("10.244.0.0/16", 24)
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
