//! What this machine is, as the kubelet reports it in its Node (cadvisor's machine info and the
//! kubelet's node status setters): CPU count and memory from /proc, ephemeral storage from the
//! filesystem of the agent's directory, the node's addresses, and nodeInfo (kernel, OS image,
//! machine and boot ids). Allocatable is capacity less the default hard eviction thresholds
//! (`memory.available<100Mi`, `nodefs.available<10%`), with no reservations.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{NodeAddress, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use styrman_images::archive::go_arch;

use crate::node_status::{NodeFacts, default_labels, parse_taint};

/// How the node is configured (the kubelet's flags that shape its Node).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    /// `--node-ip`; found from the host name, then the machine's addresses, when absent.
    pub node_ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// `key[=value]:Effect`
    pub taints: Vec<String>,
    pub max_pods: u32,
    /// Where the agent keeps its state: its filesystem is the node's ephemeral storage.
    pub root_dir: std::path::PathBuf,
}

/// Memory kept back from pods: the default `memory.available<100Mi` eviction threshold.
const EVICTION_MEMORY: u64 = 100 * 1024 * 1024;

/// The node's facts, with `runtime_version` as the runtime reports itself
/// (`containerd://1.6.20`).
pub fn node_facts(config: &NodeConfig, runtime_version: &str) -> Result<NodeFacts> {
    let cpus = count_cpus(&read("/proc/cpuinfo")?);
    let memory = mem_total(&read("/proc/meminfo")?).context("no MemTotal in /proc/meminfo")?;
    let disk = styrman_sys::filesystem_space(&config.root_dir)
        .with_context(|| format!("the size of the filesystem of {}", config.root_dir.display()))?;
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", memory / 1024))),
        (
            "ephemeral-storage".to_string(),
            Quantity(format!("{}Ki", disk.total / 1024)),
        ),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".into(),
        Quantity(format!("{}Ki", memory.saturating_sub(EVICTION_MEMORY) / 1024)),
    );
    allocatable.insert("ephemeral-storage".into(), Quantity((disk.total / 10 * 9).to_string()));
    let ip = resolve_node_ip(config)?;
    let taints = config
        .taints
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<Vec<_>>>()?;
    let machine_id = read("/etc/machine-id").unwrap_or_default().trim().to_string();
    Ok(NodeFacts {
        name: config.name.clone(),
        labels: default_labels(&config.name, go_arch(), &config.labels),
        taints,
        capacity,
        allocatable,
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.name.clone(),
            },
        ],
        node_info: NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: read("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .into(),
            container_runtime_version: runtime_version.into(),
            kernel_version: read("/proc/sys/kernel/osrelease").unwrap_or_default().trim().into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.33.0".into(),
            system_uuid: read("/sys/class/dmi/id/product_uuid")
                .map(|u| u.trim().to_string())
                .unwrap_or_else(|_| machine_id.clone()),
            machine_id,
            operating_system: "linux".into(),
            os_image: os_image(&read("/etc/os-release").unwrap_or_default()),
            ..Default::default()
        },
    })
}

/// `--node-ip`, or the address found for the node's name or on the machine.
pub fn resolve_node_ip(config: &NodeConfig) -> Result<IpAddr> {
    match config.node_ip {
        Some(ip) => Ok(ip),
        None => node_ip(&config.name).context("cannot tell this node's IP address: give --node-ip"),
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(Path::new(path)).with_context(|| format!("reading {path}"))
}

fn count_cpus(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
        .max(1)
}

/// MemTotal in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME` of os-release, as nodeInfo.osImage shows it.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The node's IP as the kubelet finds it without `--node-ip`: the host name's first address
/// that is not loopback, else the machine's first local IPv4 address that is not loopback.
fn node_ip(hostname: &str) -> Option<IpAddr> {
    let resolved = (hostname, 0)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified());
    resolved.or_else(|| local_ipv4(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default()))
}

/// The first non-loopback host address of the kernel's local routing table
/// (`/proc/net/fib_trie`: an address line, then `/32 host LOCAL`).
fn local_ipv4(fib_trie: &str) -> Option<IpAddr> {
    let mut last: Option<&str> = None;
    for line in fib_trie.lines() {
        let text = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if text == "/32 host LOCAL" {
            if let Some(ip) = last.and_then(|a| a.parse::<IpAddr>().ok())
                && !ip.is_loopback()
            {
                return Some(ip);
            }
        } else if !text.starts_with('/') {
            last = text.split_whitespace().next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_cadvisor_reads_them() {
        assert_eq!(count_cpus("processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n"), 2);
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24576000 * 1024)
        );
        assert_eq!(
            os_image("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
    }

    #[test]
    fn the_local_table_gives_the_first_address_that_is_not_loopback() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.168.5.7\n        /32 host LOCAL\n";
        assert_eq!(local_ipv4(trie), Some("192.168.5.7".parse().unwrap()));
        assert_eq!(local_ipv4("|-- 127.0.0.1\n   /32 host LOCAL\n"), None);
    }

    #[test]
    fn this_machine_reports_its_cpus_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            name: "here".into(),
            node_ip: Some("192.0.2.10".parse().unwrap()),
            labels: BTreeMap::new(),
            taints: vec!["role=edge:NoSchedule".into()],
            max_pods: 110,
            root_dir: dir.path().to_path_buf(),
        };
        let facts = node_facts(&config, "containerd://1.6.20").unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(facts.capacity["cpu"].0, cpus.to_string());
        assert_eq!(facts.capacity["pods"].0, "110");
        assert!(facts.capacity["memory"].0.ends_with("Ki"));
        assert_ne!(facts.capacity["memory"], facts.allocatable["memory"]);
        assert_eq!(facts.addresses[0].address, "192.0.2.10");
        assert_eq!(facts.node_info.container_runtime_version, "containerd://1.6.20");
        assert!(!facts.node_info.kernel_version.is_empty());
        assert_eq!(facts.taints[0].key, "role");
    }
}
