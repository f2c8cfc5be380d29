//! The address bookkeeping of node IPAM, as upstream's cidrset and range allocator keep it:
//! each cluster CIDR is cut into node-sized subnets, a bitmap says which are taken, and each
//! node's holding is remembered so that deleting the node frees exactly what it held.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Upstream refuses more than 2^16 subnets per cluster CIDR (the bitmap's size).
const MAX_SUBNET_BITS: u8 = 16;
/// The prefix length of an IPv6 node's podCIDR (kube-controller-manager's
/// `--node-cidr-mask-size-ipv6` default).
const IPV6_NODE_PREFIX: u8 = 64;

/// An address and prefix length, the address held as a u128 (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    address: u128,
    prefix: u8,
    ipv6: bool,
}

impl Cidr {
    fn parse(text: &str) -> anyhow::Result<Cidr> {
        let (address, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("{text:?} is not a CIDR (address/prefix)"))?;
        let address: IpAddr = address.parse().map_err(|_| anyhow::anyhow!("{text:?}: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| anyhow::anyhow!("{text:?}: bad prefix length"))?;
        let (address, ipv6) = match address {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            IpAddr::V6(a) => (u128::from(a), true),
        };
        let cidr = Cidr { address, prefix, ipv6 };
        anyhow::ensure!(prefix <= cidr.bits(), "{text:?}: the prefix length is too long");
        // Host bits set (10.244.1.0/16) mean the network, as Go's net.ParseCIDR reads it.
        Ok(Cidr {
            address: address & cidr.mask(),
            ..cidr
        })
    }

    fn bits(&self) -> u8 {
        if self.ipv6 { 128 } else { 32 }
    }

    fn mask(&self) -> u128 {
        let host_bits = u32::from(self.bits() - self.prefix);
        let all = if self.ipv6 { u128::MAX } else { u128::from(u32::MAX) };
        all.checked_shl(host_bits).unwrap_or(0) & all
    }

    fn last(&self) -> u128 {
        self.address | !self.mask() & if self.ipv6 { u128::MAX } else { u128::from(u32::MAX) }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ipv6 {
            write!(f, "{}/{}", Ipv6Addr::from(self.address), self.prefix)
        } else {
            // Only the low 32 bits are ever set for IPv4.
            write!(f, "{}/{}", Ipv4Addr::from(self.address as u32), self.prefix)
        }
    }
}

/// One cluster CIDR cut into subnets of the node prefix length.
pub struct CidrSet {
    cluster: Cidr,
    node_prefix: u8,
    used: Vec<bool>,
    /// Where the next search starts: allocation rotates through the range, as upstream's does,
    /// so a just-freed subnet is not handed out again at once.
    next: usize,
}

impl CidrSet {
    pub fn new(cluster_cidr: &str, node_prefix: u8) -> anyhow::Result<CidrSet> {
        let cluster = Cidr::parse(cluster_cidr)?;
        anyhow::ensure!(
            node_prefix >= cluster.prefix && node_prefix <= cluster.bits(),
            "the node CIDR mask size {node_prefix} does not fit the cluster CIDR {cluster}"
        );
        anyhow::ensure!(
            node_prefix - cluster.prefix <= MAX_SUBNET_BITS,
            "the cluster CIDR {cluster} with node CIDR mask size {node_prefix} makes more than 2^{MAX_SUBNET_BITS} node CIDRs"
        );
        Ok(CidrSet {
            cluster,
            node_prefix,
            used: vec![false; 1 << (node_prefix - cluster.prefix)],
            next: 0,
        })
    }

    pub fn is_ipv6(&self) -> bool {
        self.cluster.ipv6
    }

    fn subnet_bits(&self) -> u32 {
        u32::from(self.cluster.bits() - self.node_prefix)
    }

    fn subnet(&self, index: usize) -> Cidr {
        Cidr {
            address: self.cluster.address + ((index as u128) << self.subnet_bits()),
            prefix: self.node_prefix,
            ipv6: self.cluster.ipv6,
        }
    }

    /// The next free subnet, taken; None when every one is taken.
    pub fn allocate(&mut self) -> Option<String> {
        let n = self.used.len();
        let index = (0..n).map(|i| (self.next + i) % n).find(|&i| !self.used[i])?;
        self.used[index] = true;
        self.next = (index + 1) % n;
        Some(self.subnet(index).to_string())
    }

    /// The subnets `cidr` overlaps; None if it lies outside this set (or is another family).
    fn covered(&self, cidr: &str) -> Option<Range<usize>> {
        let cidr = Cidr::parse(cidr).ok()?;
        if cidr.ipv6 != self.cluster.ipv6 || cidr.last() < self.cluster.address || cidr.address > self.cluster.last() {
            return None;
        }
        let first = cidr.address.max(self.cluster.address);
        let last = cidr.last().min(self.cluster.last());
        let index = |a: u128| ((a - self.cluster.address) >> self.subnet_bits()) as usize;
        Some(index(first)..index(last) + 1)
    }

    /// Marks the subnets `cidr` overlaps as taken; false if it is not in this set.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        let Some(range) = self.covered(cidr) else { return false };
        self.used[range].iter_mut().for_each(|u| *u = true);
        true
    }

    pub fn release(&mut self, cidr: &str) {
        if let Some(range) = self.covered(cidr) {
            self.used[range].iter_mut().for_each(|u| *u = false);
        }
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        self.used.iter().filter(|u| !**u).count()
    }
}

/// Every cluster CIDR is full for this family.
#[derive(Debug, PartialEq, Eq)]
pub struct RangeFull;

/// The cluster's CIDR sets (one per IP family) and what each node holds.
pub struct Allocator {
    sets: Vec<CidrSet>,
    held: HashMap<String, Vec<String>>,
}

impl Allocator {
    /// From `--cluster-cidr` (comma-separated, at most one per family) and the IPv4 node mask.
    pub fn new(cluster_cidrs: &str, ipv4_node_prefix: u8) -> anyhow::Result<Allocator> {
        let mut sets = Vec::new();
        for cidr in cluster_cidrs.split(',').filter(|c| !c.trim().is_empty()) {
            let ipv6 = Cidr::parse(cidr)?.ipv6;
            let node_prefix = if ipv6 { IPV6_NODE_PREFIX } else { ipv4_node_prefix };
            sets.push(CidrSet::new(cidr, node_prefix)?);
        }
        anyhow::ensure!(!sets.is_empty(), "--cluster-cidr is empty");
        anyhow::ensure!(
            sets.len() == 1 || (sets.len() == 2 && sets[0].is_ipv6() != sets[1].is_ipv6()),
            "--cluster-cidr: at most one CIDR per IP family"
        );
        Ok(Allocator {
            sets,
            held: HashMap::new(),
        })
    }

    /// Records that `node` holds `cidrs` (its spec.podCIDRs), freeing what it held before.
    pub fn occupy(&mut self, node: &str, cidrs: &[String]) {
        if self.held.get(node).is_some_and(|h| h == cidrs) {
            return;
        }
        self.release_node(node);
        for cidr in cidrs {
            if !self.sets.iter_mut().any(|s| s.occupy(cidr)) {
                tracing::warn!(node, cidr, "node's podCIDR is outside the cluster CIDR");
            }
        }
        self.held.insert(node.to_string(), cidrs.to_vec());
    }

    /// One subnet from each cluster CIDR for `node`, recorded as held by it.
    pub fn allocate(&mut self, node: &str) -> Result<Vec<String>, RangeFull> {
        let mut taken: Vec<String> = Vec::new();
        for i in 0..self.sets.len() {
            match self.sets[i].allocate() {
                Some(cidr) => taken.push(cidr),
                None => {
                    for cidr in &taken {
                        self.sets.iter_mut().for_each(|s| s.release(cidr));
                    }
                    return Err(RangeFull);
                }
            }
        }
        self.release_node(node);
        self.held.insert(node.to_string(), taken.clone());
        Ok(taken)
    }

    /// Frees what `node` held, except subnets another node claims too (two nodes given the
    /// same podCIDR by hand must not free each other's).
    pub fn release_node(&mut self, node: &str) {
        let Some(cidrs) = self.held.remove(node) else { return };
        for cidr in cidrs {
            if self.held.values().any(|other| other.contains(&cidr)) {
                continue;
            }
            self.sets.iter_mut().for_each(|s| s.release(&cidr));
        }
    }

    /// After a full list: frees what nodes that are gone held (deletions missed while the
    /// watch was down).
    pub fn keep_only(&mut self, present: &HashSet<String>) {
        let gone: Vec<String> = self.held.keys().filter(|n| !present.contains(*n)).cloned().collect();
        for node in gone {
            self.release_node(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_16_gives_256_distinct_24s_then_none() {
        let mut set = CidrSet::new("10.244.0.0/16", 24).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..256 {
            let cidr = set.allocate().unwrap();
            assert!(cidr.starts_with("10.244.") && cidr.ends_with(".0/24"), "{cidr}");
            assert!(seen.insert(cidr));
        }
        assert_eq!(set.allocate(), None);
        set.release("10.244.7.0/24");
        assert_eq!(set.allocate().as_deref(), Some("10.244.7.0/24"));
    }

    #[test]
    fn host_bits_in_the_cluster_cidr_mean_its_network() {
        let mut set = CidrSet::new("10.244.3.9/16", 24).unwrap();
        assert_eq!(set.allocate().as_deref(), Some("10.244.0.0/24"));
        assert_eq!(set.allocate().as_deref(), Some("10.244.1.0/24"));
    }

    #[test]
    fn occupied_subnets_are_skipped_including_wider_ones() {
        let mut set = CidrSet::new("10.0.0.0/22", 24).unwrap();
        assert!(set.occupy("10.0.0.0/23"));
        assert!(!set.occupy("192.168.0.0/24"));
        assert!(!set.occupy("fd00::/64"));
        assert_eq!(set.free(), 2);
        assert_eq!(set.allocate().as_deref(), Some("10.0.2.0/24"));
        assert_eq!(set.allocate().as_deref(), Some("10.0.3.0/24"));
        assert_eq!(set.allocate(), None);
    }

    #[test]
    fn ipv6_nodes_get_a_64() {
        let mut set = CidrSet::new("fd00:10:244::/56", 64).unwrap();
        assert_eq!(set.allocate().as_deref(), Some("fd00:10:244::/64"));
        assert_eq!(set.allocate().as_deref(), Some("fd00:10:244:1::/64"));
    }

    #[test]
    fn impossible_ranges_are_refused() {
        assert!(CidrSet::new("10.0.0.0/24", 16).is_err());
        assert!(CidrSet::new("10.0.0.0/8", 30).is_err());
        assert!(CidrSet::new("10.0.0.0", 24).is_err());
        assert!(Allocator::new("10.0.0.0/16,10.1.0.0/16", 24).is_err());
    }

    #[test]
    fn nodes_keep_release_and_share_nothing() {
        let mut a = Allocator::new("10.244.0.0/23,fd00::/60", 24).unwrap();
        // A node seen at start with its podCIDR keeps it; the next node gets the other one.
        a.occupy("old", &["10.244.0.0/24".into()]);
        let got = a.allocate("new").unwrap();
        assert_eq!(got[0], "10.244.1.0/24");
        assert!(got[1].starts_with("fd00::"), "{got:?}");
        assert_eq!(a.allocate("third"), Err(RangeFull));
        // A failed allocation gives back the IPv6 subnet it took on the way.
        a.release_node("old");
        assert_eq!(a.allocate("third").unwrap()[0], "10.244.0.0/24");
        // A node that went while nobody watched frees its subnet after the next list.
        a.keep_only(&HashSet::from(["third".to_string()]));
        assert_eq!(a.allocate("fourth").unwrap()[0], "10.244.1.0/24");
    }

    #[test]
    fn a_subnet_two_nodes_claim_stays_taken_until_both_go() {
        let mut a = Allocator::new("10.0.0.0/23", 24).unwrap();
        a.occupy("x", &["10.0.0.0/24".into()]);
        a.occupy("y", &["10.0.0.0/24".into()]);
        a.release_node("x");
        assert_eq!(a.allocate("z").unwrap(), ["10.0.1.0/24"]);
        assert_eq!(a.allocate("w"), Err(RangeFull));
    }
}
