//! The subsets of a Service's Endpoints object, packed as upstream packs them: each subset is
//! a set of addresses together with every port all of them offer. Since a named targetPort
//! may resolve to a different number on each pod, pods with different numbers land in
//! different subsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service};

use super::pods;

/// Addresses one Endpoints object holds at most; beyond it the controller truncates and says
/// so in the `endpoints.kubernetes.io/over-capacity` annotation.
pub const MAX_ADDRESSES: usize = 1000;

/// An Endpoints port, orderable so ports and address sets can be grouped by it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl PortKey {
    fn to_endpoint_port(&self) -> EndpointPort {
        EndpointPort {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// One pod address offered on one port (`None`: a headless Service without ports).
pub struct Offer {
    pub address: EndpointAddress,
    pub port: Option<PortKey>,
    pub ready: bool,
}

/// Identifies an address across offers: the same IP may belong to two pods in turn.
type AddressKey = (String, Option<String>);

fn address_key(address: &EndpointAddress) -> AddressKey {
    (
        address.ip.clone(),
        address.target_ref.as_ref().and_then(|r| r.uid.clone()),
    )
}

/// The packed subsets for `service` from its selected `pods`.
pub fn for_service(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let ports = spec.ports.unwrap_or_default();
    let mut offers = Vec::new();
    for pod in pods {
        if !pods::belongs_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(address) = address_for(service, pod) else {
            continue;
        };
        let ready = publish_not_ready || pods::is_ready(pod);
        if ports.is_empty() {
            // Only a headless Service may have no ports: its pods are listed for DNS alone.
            if pods::is_headless(service) {
                offers.push(Offer {
                    address,
                    port: None,
                    ready,
                });
            }
            continue;
        }
        for port in &ports {
            let Some(number) = pods::target_port(pod, port) else {
                continue;
            };
            let key = PortKey {
                name: port.name.clone().unwrap_or_default(),
                port: number,
                protocol: pods::protocol(port.protocol.as_ref()).to_string(),
                app_protocol: port.app_protocol.clone(),
            };
            offers.push(Offer {
                address: address.clone(),
                port: Some(key),
                ready,
            });
        }
    }
    repack(offers)
}

/// The pod's address in the Service's IP family (its first family; for Services from
/// before families, that of its cluster IP or, headless, of the pod's first IP).
fn address_for(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let ips = pods::pod_ips(pod);
    let spec = service.spec.as_ref();
    let want_ipv6 = match spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if pods::has_cluster_ip(service) => {
            pods::is_ipv6(spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or(""))
        }
        None => ips.first().is_some_and(|ip| pods::is_ipv6(ip)),
    };
    let ip = ips.into_iter().find(|ip| pods::is_ipv6(ip) == want_ipv6)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        hostname: pods::hostname_for(pod, service),
        node_name: Some(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()),
        target_ref: Some(pod_reference(pod)),
    })
}

pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Groups offers into subsets: first the addresses behind each port, then the ports behind
/// each identical set of addresses. An address not ready on one port counts as not ready on
/// that port even if another offer said ready. The result is sorted, so equal inputs give
/// equal outputs.
pub fn repack(offers: Vec<Offer>) -> Vec<EndpointSubset> {
    let mut addresses: HashMap<AddressKey, EndpointAddress> = HashMap::new();
    let mut by_port: BTreeMap<Option<PortKey>, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for offer in offers {
        let key = address_key(&offer.address);
        addresses.entry(key.clone()).or_insert(offer.address);
        by_port
            .entry(offer.port)
            .or_default()
            .entry(key)
            .and_modify(|ready| *ready &= offer.ready)
            .or_insert(offer.ready);
    }
    let mut by_addresses: BTreeMap<Vec<(AddressKey, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, set) in by_port {
        let ports = by_addresses.entry(set.into_iter().collect()).or_default();
        // The port-less offers of headless Services only make sure their addresses appear.
        ports.extend(port);
    }
    by_addresses
        .into_iter()
        .map(|(set, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = set.into_iter().partition(|(_, ready)| *ready);
            let take = |list: Vec<(AddressKey, bool)>| {
                let list: Vec<EndpointAddress> = list.into_iter().map(|(key, _)| addresses[&key].clone()).collect();
                (!list.is_empty()).then_some(list)
            };
            let ports: Vec<EndpointPort> = ports.iter().map(PortKey::to_endpoint_port).collect();
            EndpointSubset {
                addresses: take(ready),
                not_ready_addresses: take(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

fn count(list: &Option<Vec<EndpointAddress>>) -> usize {
    list.as_ref().map_or(0, Vec::len)
}

/// Whether the subsets hold more addresses than one Endpoints object may.
pub fn over_capacity(subsets: &[EndpointSubset]) -> bool {
    let total: usize = subsets
        .iter()
        .map(|s| count(&s.addresses) + count(&s.not_ready_addresses))
        .sum();
    total > MAX_ADDRESSES
}

/// Cuts the subsets down to [`MAX_ADDRESSES`] as upstream does: not-ready addresses go first;
/// if the ready ones alone are too many, every not-ready one goes and the ready ones are cut,
/// each subset keeping its share of what remains (rounded up). Says whether it cut anything.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    if !over_capacity(subsets) {
        return false;
    }
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    let cut_ready = ready > MAX_ADDRESSES;
    let (room, total) = if cut_ready {
        (MAX_ADDRESSES, ready)
    } else {
        (MAX_ADDRESSES - ready, not_ready)
    };
    let mut left = room;
    for subset in subsets.iter_mut() {
        let list = if cut_ready {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let share = (count(list) * room).div_ceil(total).min(left);
        if let Some(list) = list.as_mut() {
            list.truncate(share);
        }
        left -= count(list);
        if cut_ready {
            subset.not_ready_addresses = None;
        }
    }
    true
}

/// The subsets as compared: empty lists and absent ones alike, and a target's
/// resourceVersion ignored (older writers set it; it changes on every pod update).
pub fn normalized(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let addresses = |list: &Option<Vec<EndpointAddress>>| {
        let list: Vec<EndpointAddress> = list
            .iter()
            .flatten()
            .map(|a| {
                let mut a = a.clone();
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
                a
            })
            .collect();
        (!list.is_empty()).then_some(list)
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: addresses(&s.addresses),
            not_ready_addresses: addresses(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::pods::tests::{pod, service};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    fn port_numbers(subset: &EndpointSubset) -> Vec<i32> {
        subset.ports.iter().flatten().map(|p| p.port).collect()
    }

    #[test]
    fn pods_with_the_same_ports_share_a_subset() {
        let svc = service(&[
            ("http", 80, IntOrString::Int(8080)),
            ("metrics", 9100, IntOrString::Int(9100)),
        ]);
        let pods = vec![
            Arc::new(pod("b", "10.0.0.2", true, &[])),
            Arc::new(pod("a", "10.0.0.1", true, &[])),
            Arc::new(pod("c", "10.0.0.3", false, &[])),
        ];
        let subsets = for_service(&svc, &pods);
        assert_eq!(subsets.len(), 1, "{subsets:?}");
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(port_numbers(&subsets[0]), [8080, 9100]);
        let first = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(first.node_name.as_deref(), Some("node-1"));
        let target = first.target_ref.as_ref().unwrap();
        assert_eq!(
            (target.kind.as_deref(), target.name.as_deref(), target.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
    }

    #[test]
    fn a_named_target_port_splits_pods_by_its_number() {
        let svc = service(&[("http", 80, IntOrString::String("web".into()))]);
        let pods = vec![
            Arc::new(pod("a", "10.0.0.1", true, &[("web", 8080)])),
            Arc::new(pod("b", "10.0.0.2", true, &[("web", 9090)])),
            Arc::new(pod("c", "10.0.0.3", true, &[("web", 8080)])),
            // Names no such port: offers nothing.
            Arc::new(pod("d", "10.0.0.4", true, &[("other", 1)])),
        ];
        let subsets = for_service(&svc, &pods);
        let mut seen: Vec<(Vec<&str>, Vec<i32>)> =
            subsets.iter().map(|s| (ips(&s.addresses), port_numbers(s))).collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (vec!["10.0.0.1", "10.0.0.3"], vec![8080]),
                (vec!["10.0.0.2"], vec![9090])
            ]
        );
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let mut svc = service(&[("", 80, IntOrString::Int(80))]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let mut deleting = pod("b", "10.0.0.2", true, &[]);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let subsets = for_service(&svc, &[Arc::new(pod("a", "10.0.0.1", false, &[])), Arc::new(deleting)]);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert!(subsets[0].not_ready_addresses.is_none());
        // An unnamed port has no name in Endpoints.
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].name, None);
    }

    #[test]
    fn a_headless_service_without_ports_lists_addresses_with_hostnames() {
        let mut svc = service(&[]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut named = pod("a", "10.0.0.1", true, &[]);
        let spec = named.spec.as_mut().unwrap();
        spec.hostname = Some("a-host".into());
        spec.subdomain = Some("web".into());
        let subsets = for_service(&svc, &[Arc::new(named), Arc::new(pod("b", "10.0.0.2", true, &[]))]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        let hostnames: Vec<Option<&str>> = subsets[0]
            .addresses
            .iter()
            .flatten()
            .map(|a| a.hostname.as_deref())
            .collect();
        assert_eq!(hostnames, [Some("a-host"), None]);
        // With a cluster IP and no ports nothing is listed.
        let svc = service(&[]);
        assert!(for_service(&svc, &[Arc::new(pod("a", "10.0.0.1", true, &[]))]).is_empty());
    }

    #[test]
    fn not_ready_on_one_port_wins() {
        let address = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let port = |n| {
            Some(PortKey {
                name: String::new(),
                port: n,
                protocol: "TCP".into(),
                app_protocol: None,
            })
        };
        let subsets = repack(vec![
            Offer {
                address: address("10.0.0.1"),
                port: port(80),
                ready: true,
            },
            Offer {
                address: address("10.0.0.1"),
                port: port(80),
                ready: false,
            },
            Offer {
                address: address("10.0.0.1"),
                port: port(81),
                ready: true,
            },
        ]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let not_ready: Vec<&EndpointSubset> = subsets.iter().filter(|s| s.not_ready_addresses.is_some()).collect();
        assert_eq!(port_numbers(not_ready[0]), [80]);
    }

    #[test]
    fn truncation_drops_not_ready_addresses_first() {
        let list = |n: usize, base: usize| {
            Some(
                (0..n)
                    .map(|i| EndpointAddress {
                        ip: format!("10.{}.{}.{}", base, i / 250, i % 250),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let mut subsets = vec![
            EndpointSubset {
                addresses: list(600, 1),
                not_ready_addresses: list(300, 2),
                ports: None,
            },
            EndpointSubset {
                addresses: list(200, 3),
                not_ready_addresses: list(100, 4),
                ports: None,
            },
        ];
        assert!(truncate(&mut subsets));
        assert_eq!(count(&subsets[0].addresses) + count(&subsets[1].addresses), 800);
        assert_eq!(count(&subsets[0].not_ready_addresses), 150);
        assert_eq!(count(&subsets[1].not_ready_addresses), 50);
        assert!(!over_capacity(&subsets));

        let mut all_ready = vec![
            EndpointSubset {
                addresses: list(900, 1),
                not_ready_addresses: list(10, 2),
                ports: None,
            },
            EndpointSubset {
                addresses: list(300, 3),
                not_ready_addresses: None,
                ports: None,
            },
        ];
        assert!(truncate(&mut all_ready));
        assert_eq!(
            (count(&all_ready[0].addresses), count(&all_ready[1].addresses)),
            (750, 250)
        );
        assert!(all_ready[0].not_ready_addresses.is_none());
        assert!(!truncate(&mut all_ready));
    }
}
