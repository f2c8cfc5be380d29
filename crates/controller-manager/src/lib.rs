//! `styrman controller-manager`: the controllers that turn desired state into running pods,
//! in one process that talks only to the API server, leader-elected on the Lease
//! `kube-system/kube-controller-manager` so standby replicas can wait beside the leader.
//!
//! Each controller is a function that runs until it fails; [`run`] starts the ones
//! `--controllers` enables once this process leads. A failing controller ends the process
//! and its supervisor restarts it, as the kubelet restarts kube-controller-manager upstream.

mod deployment;
mod discovery;
mod endpoints;
mod endpointslice;
mod gc;
mod informer;
mod namespace;
mod node_ipam;
mod node_lifecycle;
mod pod_state;
mod replicaset;
mod serviceaccount;

use std::path::PathBuf;

use anyhow::Context;
use futures::future::BoxFuture;

/// What `styrman controller-manager` is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: PathBuf,
    /// kube-controller-manager's `--controllers`: `*` for every default one, `name` to enable
    /// one, `-name` to disable one.
    pub controllers: Vec<String>,
    pub leader_elect: bool,
    /// `--cluster-cidr`: the pods' address ranges, comma-separated, at most one per IP family;
    /// node IPAM gives each node a podCIDR from each.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of a node's IPv4 podCIDR (IPv6 ones are /64).
    pub node_cidr_mask_size: u8,
    /// `--node-monitor-grace-period`: how long a node may go unheard (no Lease renewal, no
    /// status) before its conditions become Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// `--node-monitor-period`: how often the node lifecycle controller checks nodes.
    pub node_monitor_period: std::time::Duration,
}

/// Names as kube-controller-manager's `--controllers` spells them, with the older aliases it
/// still accepts.
const CONTROLLERS: &[(&str, &[&str])] = &[
    ("garbage-collector-controller", &["garbagecollector"]),
    ("namespace-controller", &["namespace"]),
    ("serviceaccount-controller", &["serviceaccount"]),
    ("replicaset-controller", &["replicaset"]),
    ("replicationcontroller-controller", &["replicationcontroller"]),
    ("deployment-controller", &["deployment"]),
    ("endpoints-controller", &["endpoint"]),
    ("endpointslice-controller", &["endpointslice"]),
    ("node-ipam-controller", &["nodeipam"]),
    ("node-lifecycle-controller", &["nodelifecycle"]),
];

/// The User-Agent the controllers send; the API server names their field manager after it.
const USER_AGENT: &str = concat!(
    "kube-controller-manager/v1.33.0 (linux/amd64) styrman/",
    env!("CARGO_PKG_VERSION")
);

/// Whether `--controllers` enables `name`, as upstream reads the flag: an explicit `name` or
/// `-name` decides; otherwise `*` enables it.
fn enabled(flags: &[String], name: &str, aliases: &[&str]) -> bool {
    let names = || std::iter::once(name).chain(aliases.iter().copied());
    if flags
        .iter()
        .any(|f| f.strip_prefix('-').is_some_and(|n| names().any(|x| x == n)))
    {
        return false;
    }
    flags.iter().any(|f| f == "*" || names().any(|x| x == f))
}

/// Checks `--controllers` names every controller it mentions correctly.
pub fn check_controller_flags(flags: &[String]) -> anyhow::Result<()> {
    for flag in flags {
        let name = flag.strip_prefix('-').unwrap_or(flag);
        let known = name == "*"
            || CONTROLLERS
                .iter()
                .any(|(n, aliases)| *n == name || aliases.contains(&name));
        anyhow::ensure!(known, "--controllers: unknown controller {name:?}");
    }
    Ok(())
}

/// Runs the enabled controllers until one fails (or, with leader election, leadership is lost).
pub async fn run(config: Config) -> anyhow::Result<()> {
    check_controller_flags(&config.controllers)?;
    let client = styrman_runtime::connect(&config.kubeconfig, USER_AGENT).await?;
    let controllers = async {
        let mut running: Vec<BoxFuture<'static, anyhow::Result<()>>> = Vec::new();
        // Controllers register on shared informers: one watch per kind, however many read it.
        let mut informers = informer::Informers::new(client.clone());
        for (name, aliases) in CONTROLLERS {
            if !enabled(&config.controllers, name, aliases) {
                tracing::info!(controller = name, "disabled");
                continue;
            }
            tracing::info!(controller = name, "starting");
            let client = client.clone();
            running.push(match *name {
                "garbage-collector-controller" => Box::pin(gc::run(client)),
                "namespace-controller" => Box::pin(namespace::run(client)),
                "serviceaccount-controller" => Box::pin(serviceaccount::run(client)),
                "replicaset-controller" => replicaset::start_replicasets(client, &mut informers),
                "replicationcontroller-controller" => replicaset::start_replication_controllers(client, &mut informers),
                "deployment-controller" => deployment::start(client, &mut informers),
                "endpoints-controller" => endpoints::start(client, &mut informers),
                "endpointslice-controller" => endpointslice::start(client, &mut informers),
                "node-ipam-controller" => Box::pin(node_ipam::run(client, config.clone())),
                "node-lifecycle-controller" => Box::pin(node_lifecycle::run(client, config.clone())),
                _ => unreachable!("every controller in CONTROLLERS is started here"),
            });
        }
        if running.is_empty() {
            return futures::future::pending().await;
        }
        running.push(Box::pin(informers.run()));
        let (result, _, _) = futures::future::select_all(running).await;
        result
    };
    if config.leader_elect {
        styrman_runtime::LeaderElection::new(client.clone(), "kube-system", "kube-controller-manager")
            .run(controllers, styrman_runtime::shutdown_signal())
            .await
            .context("controller manager")
    } else {
        tokio::select! {
            result = controllers => result,
            _ = styrman_runtime::shutdown_signal() => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn controllers_flag_reads_as_upstream() {
        let gc = ("garbage-collector-controller", ["garbagecollector"].as_slice());
        assert!(enabled(&flags(&["*"]), gc.0, gc.1));
        assert!(!enabled(&flags(&["*", "-garbagecollector"]), gc.0, gc.1));
        assert!(enabled(&flags(&["garbage-collector-controller"]), gc.0, gc.1));
        assert!(!enabled(&flags(&["namespace-controller"]), gc.0, gc.1));
        assert!(check_controller_flags(&flags(&["*", "-nope"])).is_err());
    }
}
