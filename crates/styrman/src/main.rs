//! `styrman`: the one binary. Each control-plane and node component is a subcommand, so
//! `styrman server` can run every component as its own child process of the same executable.

mod supervisor;

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
    Server(ControlPlaneArgs),
    /// Run the API server: the Kubernetes REST API in front of the store
    Apiserver(ControlPlaneArgs),
    /// Run the scheduler: place pods on nodes
    Scheduler(SchedulerArgs),
    /// Run the controller manager: turn desired state into running pods
    ControllerManager(ControllerManagerArgs),
    /// Run the node agent: register the node and run its pods through containerd
    Kubelet,
    /// Run the service proxy: program Services into nftables
    Proxy,
    /// Simulate many nodes in one process, for scale tests
    HollowNodes(HollowNodesArgs),
    /// Print styrman's version and the Kubernetes API version it serves
    Version,
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
}

#[derive(clap::Args, Clone)]
struct SchedulerArgs {
    /// The kubeconfig to reach the API server with
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Take the Lease kube-system/kube-scheduler before scheduling, so only one of several
    /// replicas schedules
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The schedulerName of the pods this scheduler places
    #[arg(long, default_value = "default-scheduler")]
    scheduler_name: String,
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
}

impl HollowNodesArgs {
    fn config(self) -> anyhow::Result<styrman_hollow::Config> {
        let labels = self
            .labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--labels: {l:?} is not k=v"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(styrman_hollow::Config {
            kubeconfig: self.kubeconfig,
            count: self.count,
            prefix: self.prefix,
            cpu: self.cpu,
            memory: self.memory,
            pods: self.pods,
            labels,
            taints: self.taints.into_iter().filter(|t| !t.is_empty()).collect(),
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
        args
    }
}

impl Command {
    /// The issue that brings a component that is not in this build yet.
    fn pending_issue(&self) -> Option<(&'static str, u32)> {
        match self {
            Command::Server(_) | Command::Apiserver(_) => None,
            Command::Scheduler(_) => None,
            Command::HollowNodes(_) => None,
            Command::ControllerManager(_) => None,
            Command::Kubelet => Some(("kubelet", 0)),
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
        Command::Apiserver(args) => run_async(styrman_apiserver::run(args.apiserver_config())),
        Command::Scheduler(args) => run_async(styrman_scheduler::run(styrman_scheduler::Config {
            kubeconfig: args.kubeconfig,
            leader_elect: args.leader_elect,
            scheduler_name: args.scheduler_name,
            metrics_address: args.metrics_bind_address,
        })),
        Command::HollowNodes(args) => args.config().and_then(|c| run_async(styrman_hollow::run(c))),
        Command::ControllerManager(args) => run_async(styrman_controller_manager::run(styrman_controller_manager::Config {
            kubeconfig: args.kubeconfig,
            controllers: args.controllers,
            leader_elect: args.leader_elect,
        })),
        Command::Server(args) => run_async(supervisor::run(vec![
            supervisor::Component {
                name: "apiserver",
                args: args.to_args(),
            },
            supervisor::Component {
                name: "scheduler",
                args: vec![
                    format!("--kubeconfig={}", args.data_dir.join("scheduler.kubeconfig").display()),
                    // kube-scheduler's port; a second control plane on this host goes without.
                    "--metrics-bind-address=127.0.0.1:10259".to_string(),
                ],
            },
            supervisor::Component {
                name: "controller-manager",
                args: vec![format!(
                    "--kubeconfig={}",
                    args.data_dir.join("controller-manager.kubeconfig").display()
                )],
            },
        ])),
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
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
