//! The pod network of one node, as CNI configuration for the runtime: a Linux bridge with
//! host-local addresses from the node's pod CIDR (`node.spec.podCIDR`, which the node IPAM
//! controller assigns), host ports through `portmap`, and loopback. These are Debian's
//! containernetworking-plugins; containerd's CRI plugin runs them for every pod that does not
//! use the host's network.

use std::path::Path;

use serde_json::json;

/// The bridge every pod of the node is attached to.
pub const BRIDGE: &str = "styrman0";
/// The CNI network's name, which the plugins write into their iptables rules' comments.
pub const NETWORK: &str = "styrman-pod-network";
/// The file name of the configuration (the runtime reads the first in name order).
pub const CONFLIST: &str = "10-styrman.conflist";

/// The configuration list for pods of `pod_cidr`, with host-local's allocations under
/// `ipam_dir` (so the node's state stays in its own directory).
pub fn conflist(pod_cidr: &str, ipam_dir: &Path) -> String {
    let config = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"},
        ],
    });
    serde_json::to_string_pretty(&config).expect("JSON values always encode")
}

/// Writes the configuration into the runtime's CNI configuration directory.
pub fn install(conf_dir: &Path, pod_cidr: &str, ipam_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    std::fs::create_dir_all(ipam_dir)?;
    let path = conf_dir.join(CONFLIST);
    let partial = conf_dir.join(format!(".{CONFLIST}.partial"));
    // Written whole or not at all: the runtime watches the directory.
    std::fs::write(&partial, conflist(pod_cidr, ipam_dir))?;
    std::fs::rename(partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_takes_addresses_from_the_pod_cidr() {
        let text = conflist("10.244.3.0/24", Path::new("/var/lib/styrman/agent/cni/ipam"));
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/styrman/agent/cni/ipam");
        let kinds: Vec<&str> = config["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["bridge", "portmap", "loopback"]);
    }
}
