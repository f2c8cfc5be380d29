//! What a Service's EndpointSlices should become, as upstream's reconciler decides it, as a
//! pure function of the Service, its pods and its current slices.
//!
//! Endpoints are grouped by the ports they offer (a named targetPort may differ per pod);
//! each group fills slices of at most `max_per_slice` endpoints. Existing slices are changed
//! in place where they can be: endpoints no longer wanted leave their slice, changed ones
//! are rewritten where they are, new ones fill the slices being written anyway and then the
//! unchanged slice with the best fit, and only then new slices. A Service with nothing to
//! list keeps one empty placeholder slice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::endpoints::pods;
use crate::endpoints::subsets::{PortKey, pod_reference};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

/// The changes to make; creates carry `generateName`, the others their name.
#[derive(Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<Arc<EndpointSlice>>,
}

/// Whether a node is known, and its zone: `None` for a node not (yet) in the cache.
pub type ZoneOf<'a> = &'a dyn Fn(&str) -> Option<Option<String>>;

pub struct Inputs<'a> {
    pub service: &'a Service,
    pub pods: &'a [Arc<Pod>],
    /// The Service's slices managed by this controller, none being deleted.
    pub existing: &'a [Arc<EndpointSlice>],
    pub zone_of: ZoneOf<'a>,
    pub max_per_slice: usize,
}

/// The plan, and the pods left out because their node is not known yet (the Service is
/// synced again later).
pub fn plan(inputs: &Inputs) -> (Plan, Vec<String>) {
    let types = address_types(inputs.service);
    let mut plan = Plan::default();
    let mut skipped = Vec::new();
    let mut by_type: BTreeMap<&str, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    let mut wrong_type = Vec::new();
    for slice in inputs.existing {
        match types.iter().find(|t| **t == slice.address_type) {
            Some(t) => by_type.entry(t).or_default().push(Arc::clone(slice)),
            None => wrong_type.push(Arc::clone(slice)),
        }
    }
    for address_type in types {
        let existing = by_type.remove(address_type).unwrap_or_default();
        let (typed, left_out) = plan_for_address_type(inputs, &existing, address_type);
        merge_creates_into_deletes(inputs.service, typed, &mut plan);
        skipped.extend(left_out);
    }
    plan.delete.extend(wrong_type);
    skipped.sort();
    skipped.dedup();
    (plan, skipped)
}

/// The slice address types a Service gets: one per IP family it has. A Service without
/// families (the API server did not default them) gets its cluster IP's family, and IPv4
/// when headless: this cluster is single-stack IPv4.
fn address_types(service: &Service) -> Vec<&'static str> {
    let spec = service.spec.as_ref();
    let mut types: Vec<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    types.dedup();
    if types.is_empty() {
        let ipv6 =
            pods::has_cluster_ip(service) && pods::is_ipv6(spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or(""));
        types.push(if ipv6 { "IPv6" } else { "IPv4" });
    }
    types
}

/// Identifies an endpoint across syncs: a pod's addresses and DNS name; the rest (conditions,
/// node, zone) may change in place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EndpointId {
    addresses: Vec<String>,
    hostname: Option<String>,
    target: Option<(Option<String>, Option<String>)>,
}

fn endpoint_id(endpoint: &Endpoint) -> EndpointId {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    EndpointId {
        addresses,
        hostname: endpoint.hostname.clone(),
        target: endpoint
            .target_ref
            .as_ref()
            .map(|r| (r.namespace.clone(), r.name.clone())),
    }
}

type PortsKey = Vec<PortKey>;

fn ports_key(ports: Option<&Vec<EndpointPort>>) -> PortsKey {
    let mut key: PortsKey = ports
        .into_iter()
        .flatten()
        .map(|p| PortKey {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or_default(),
            protocol: pods::protocol(p.protocol.as_ref()).to_string(),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    key.sort();
    key
}

/// The slice ports a pod offers: every Service port whose target the pod resolves. Unlike
/// Endpoints, an unnamed port has the name "".
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let number = pods::target_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(pods::protocol(port.protocol.as_ref()).to_string()),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

fn pod_to_endpoint(pod: &Pod, zone: Option<String>, service: &Service, address_type: &str) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pods::is_terminating(pod);
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses) == Some(true);
    // A terminating pod is never "ready" (older clients read only that), unless the Service
    // asks for every address.
    let ready = publish_not_ready || (serving && !terminating);
    let want_ipv6 = address_type == "IPv6";
    Endpoint {
        addresses: pods::pod_ips(pod)
            .into_iter()
            .filter(|ip| pods::is_ipv6(ip) == want_ipv6)
            .map(str::to_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: pods::hostname_for(pod, service),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        zone,
        ..Default::default()
    }
}

/// A slice's labels: the Service's own (minus the ones this controller reserves), the
/// headless mark, and the two that tie the slice to its Service and controller.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let reserved = [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, crate::endpoints::HEADLESS_LABEL];
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !pods::has_cluster_ip(service) {
        labels.insert(crate::endpoints::HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == service.metadata.uid.as_ref() && o.kind == "Service" && o.api_version == "v1")
}

fn new_slice(service: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(slice_labels(service)),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// Whether an existing slice is already the placeholder a Service with nothing to list
/// needs (so it is kept rather than replaced by an identical one).
fn is_placeholder_like(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.metadata.namespace == placeholder.metadata.namespace
        && slice.metadata.labels.clone().unwrap_or_default() == placeholder.metadata.labels.clone().unwrap_or_default()
        && slice.address_type == placeholder.address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(Vec::is_empty)
}

fn plan_for_address_type(inputs: &Inputs, existing: &[Arc<EndpointSlice>], address_type: &str) -> (Plan, Vec<String>) {
    let service = inputs.service;
    let mut plan = Plan::default();
    let mut existing_by_ports: BTreeMap<PortsKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            existing_by_ports
                .entry(ports_key(slice.ports.as_ref()))
                .or_default()
                .push(Arc::clone(slice));
        } else {
            // Left by an earlier Service of the same name.
            plan.delete.push(Arc::clone(slice));
        }
    }
    let mut desired: BTreeMap<PortsKey, (Vec<EndpointPort>, BTreeMap<EndpointId, Endpoint>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for pod in inputs.pods {
        // Terminating pods stay, with their conditions saying so.
        if !pods::belongs_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = desired
            .entry(ports_key(Some(&ports)))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let Some(zone) = (inputs.zone_of)(&node) else {
            skipped.push(pod.metadata.name.clone().unwrap_or_default());
            continue;
        };
        let endpoint = pod_to_endpoint(pod, zone, service, address_type);
        if !endpoint.addresses.is_empty() {
            group.1.insert(endpoint_id(&endpoint), endpoint);
        }
    }
    for (key, (ports, endpoints)) in desired.iter() {
        let slices = existing_by_ports.get(key).map(Vec::as_slice).unwrap_or_default();
        let group = plan_for_ports(inputs, slices, endpoints.clone(), ports, address_type);
        plan.create.extend(group.create);
        plan.update.extend(group.update);
        plan.delete.extend(group.delete);
    }
    for (key, slices) in existing_by_ports {
        if !desired.contains_key(&key) {
            plan.delete.extend(slices);
        }
    }
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(service, Vec::new(), address_type);
        if plan.delete.len() == 1 && is_placeholder_like(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }
    (plan, skipped)
}

/// One group of endpoints sharing ports, against the existing slices with those ports.
fn plan_for_ports(
    inputs: &Inputs,
    existing: &[Arc<EndpointSlice>],
    mut wanted: BTreeMap<EndpointId, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
) -> Plan {
    let max = inputs.max_per_slice;
    let labels = slice_labels(inputs.service);
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: Vec<Arc<EndpointSlice>> = Vec::new();

    // 1. Keep wanted endpoints where they are (rewritten if they changed), drop the others.
    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = wanted.remove(&endpoint_id(endpoint)) {
                changed |= want != *endpoint;
                kept.push(want);
            }
        }
        let labels_changed = slice.metadata.labels.clone().unwrap_or_default() != labels;
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.push(Arc::clone(slice));
                continue;
            }
            let mut updated = (**slice).clone();
            updated.endpoints = kept;
            updated.metadata.labels = Some(labels.clone());
            by_name.insert(name.clone(), updated);
            to_update.insert(name);
        } else if labels_changed {
            let mut updated = (**slice).clone();
            updated.metadata.labels = Some(labels.clone());
            by_name.insert(name.clone(), updated);
            to_update.insert(name);
        } else {
            by_name.insert(name.clone(), (**slice).clone());
            unchanged.insert(name);
        }
    }

    // 2. New endpoints first fill the slices being written anyway, fullest first.
    let mut pending = wanted.into_values();
    let mut next = pending.next();
    let mut updating: Vec<&String> = to_update.iter().collect();
    updating.sort_by_key(|name| std::cmp::Reverse(by_name[*name].endpoints.len()));
    for name in updating {
        let slice = by_name.get_mut(name).expect("slices to update are known by name");
        while slice.endpoints.len() < max {
            let Some(endpoint) = next.take() else { break };
            slice.endpoints.push(endpoint);
            next = pending.next();
        }
    }
    let mut remaining: Vec<Endpoint> = next.into_iter().chain(pending).collect();

    // 3. Then the unchanged slice they fit best, then new slices.
    let mut create = Vec::new();
    while !remaining.is_empty() {
        let fill = if remaining.len() < max {
            best_fit(unchanged.iter().map(|n| &by_name[n]), remaining.len(), max)
        } else {
            None
        };
        let mut slice = match fill {
            Some(name) => {
                unchanged.remove(&name);
                to_update.insert(name.clone());
                by_name.remove(&name).expect("unchanged slices are known by name")
            }
            None => new_slice(inputs.service, ports.to_vec(), address_type),
        };
        let room = max.saturating_sub(slice.endpoints.len()).max(1);
        let take = room.min(remaining.len());
        slice.endpoints.extend(remaining.drain(..take));
        match slice.metadata.name.clone() {
            Some(name) => {
                by_name.insert(name, slice);
            }
            None => create.push(slice),
        }
    }
    Plan {
        create,
        update: to_update.iter().map(|n| by_name[n].clone()).collect(),
        delete: to_delete,
    }
}

/// The unchanged slice that `count` more endpoints fill most fully without overflowing it.
fn best_fit<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, count: usize, max: usize) -> Option<String> {
    slices
        .filter(|s| s.endpoints.len() + count <= max)
        .max_by_key(|s| s.endpoints.len())
        .and_then(|s| s.metadata.name.clone())
}

/// Creating one slice while deleting another is an update of the other instead (fewer
/// objects churned), when it is this Service's and of the same address type.
fn merge_creates_into_deletes(service: &Service, mut typed: Plan, plan: &mut Plan) {
    let mut deletes = Vec::new();
    for old in typed.delete {
        let reusable =
            owned_by(&old, service) && typed.create.last().is_some_and(|c| c.address_type == old.address_type);
        if !reusable {
            deletes.push(old);
            continue;
        }
        let new = typed.create.pop().expect("checked above");
        let mut reused = (*old).clone();
        reused.endpoints = new.endpoints;
        reused.ports = new.ports;
        reused.metadata.labels = new.metadata.labels;
        typed.update.push(reused);
    }
    plan.create.extend(typed.create);
    plan.update.extend(typed.update);
    plan.delete.extend(deletes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::pods::tests::{pod, service};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pods(n: usize) -> Vec<Arc<Pod>> {
        (0..n)
            .map(|i| {
                Arc::new(pod(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                    true,
                    &[("web", 8080)],
                ))
            })
            .collect()
    }

    fn zone_a(_: &str) -> Option<Option<String>> {
        Some(Some("zone-a".into()))
    }

    fn run(service: &Service, pods: &[Arc<Pod>], existing: &[Arc<EndpointSlice>]) -> (Plan, Vec<String>) {
        plan(&Inputs {
            service,
            pods,
            existing,
            zone_of: &zone_a,
            max_per_slice: 100,
        })
    }

    /// The plan's creates and updates as they would be stored, named `created-N`.
    fn stored(plan: Plan, before: &[Arc<EndpointSlice>]) -> Vec<Arc<EndpointSlice>> {
        let gone: BTreeSet<_> = plan.delete.iter().map(|s| s.metadata.name.clone()).collect();
        let updated: BTreeSet<_> = plan.update.iter().map(|s| s.metadata.name.clone()).collect();
        let mut after: Vec<Arc<EndpointSlice>> = before
            .iter()
            .filter(|s| !gone.contains(&s.metadata.name) && !updated.contains(&s.metadata.name))
            .cloned()
            .collect();
        after.extend(plan.update.into_iter().map(Arc::new));
        for (i, mut slice) in plan.create.into_iter().enumerate() {
            slice.metadata.name = Some(format!("created-{i}"));
            after.push(Arc::new(slice));
        }
        after
    }

    fn web() -> Service {
        service(&[("http", 80, IntOrString::String("web".into()))])
    }

    #[test]
    fn endpoints_fill_slices_of_at_most_the_maximum() {
        let svc = web();
        let (plan, skipped) = run(&svc, &pods(250), &[]);
        assert!(skipped.is_empty());
        let mut sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [50, 100, 100]);
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.address_type, "IPv4");
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("Service", "uid-web", Some(true), Some(true))
        );
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        let endpoint = &slice.endpoints[0];
        assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
        assert_eq!(endpoint.node_name.as_deref(), Some("node-1"));
        assert_eq!(endpoint.conditions.as_ref().unwrap().ready, Some(true));
    }

    #[test]
    fn changes_are_made_in_place_and_settle() {
        let svc = web();
        let all = pods(150);
        let (first, _) = run(&svc, &all, &[]);
        let slices = stored(first, &[]);
        // Nothing changed: nothing to do.
        let (again, _) = run(&svc, &all, &slices);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());

        // One pod gone, one not ready, one new: updates only, no new slice.
        let mut next: Vec<Arc<Pod>> = all[1..].to_vec();
        next[0] = Arc::new(pod("p001", "10.1.0.2", false, &[("web", 8080)]));
        next.push(Arc::new(pod("new", "10.9.9.9", true, &[("web", 8080)])));
        let (changed, _) = run(&svc, &next, &slices);
        assert!(changed.create.is_empty() && changed.delete.is_empty(), "in place");
        let after = stored(changed, &slices);
        let total: usize = after.iter().map(|s| s.endpoints.len()).sum();
        assert_eq!(total, 150);
        assert!(after.iter().all(|s| s.endpoints.len() <= 100));
        let unready = after
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.addresses == ["10.1.0.2"])
            .unwrap();
        assert_eq!(unready.conditions.as_ref().unwrap().ready, Some(false));
        let (settled, _) = run(&svc, &next, &after);
        assert!(settled.create.is_empty() && settled.update.is_empty() && settled.delete.is_empty());
    }

    #[test]
    fn a_service_without_pods_keeps_one_placeholder() {
        let svc = web();
        let (plan, _) = run(&svc, &[], &[]);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        let slices = stored(plan, &[]);
        let (again, _) = run(&svc, &[], &slices);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // Pods arrive: the placeholder is reused for them rather than deleted.
        let (filled, _) = run(&svc, &pods(3), &slices);
        assert!(filled.create.is_empty() && filled.delete.is_empty());
        assert_eq!(filled.update.len(), 1);
        assert_eq!(filled.update[0].endpoints.len(), 3);
        assert_eq!(filled.update[0].ports.as_ref().unwrap()[0].port, Some(8080));
    }

    #[test]
    fn pods_resolving_different_ports_get_different_slices() {
        let svc = web();
        let pods = vec![
            Arc::new(pod("a", "10.0.0.1", true, &[("web", 8080)])),
            Arc::new(pod("b", "10.0.0.2", true, &[("web", 9090)])),
        ];
        let (plan, _) = run(&svc, &pods, &[]);
        let mut ports: Vec<Option<i32>> = plan.create.iter().map(|s| s.ports.as_ref().unwrap()[0].port).collect();
        ports.sort();
        assert_eq!(ports, [Some(8080), Some(9090)]);
    }

    #[test]
    fn foreign_and_surplus_slices_go() {
        let svc = web();
        let slices = stored(run(&svc, &pods(150), &[]).0, &[]);
        let mut foreign = (*slices[0]).clone();
        foreign.metadata.name = Some("web-old".into());
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-earlier".into();
        let mut with_foreign = slices.clone();
        with_foreign.push(Arc::new(foreign));
        // Down to 10 pods: one slice is left, the other emptied one and the foreign go.
        let (plan, _) = run(&svc, &pods(10), &with_foreign);
        let deleted: Vec<String> = plan.delete.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert!(deleted.contains(&"web-old".to_string()), "{deleted:?}");
        let after = stored(plan, &with_foreign);
        assert_eq!(after.iter().map(|s| s.endpoints.len()).sum::<usize>(), 10);
        assert!(
            after.iter().all(|s| !s.endpoints.is_empty()),
            "emptied slices are deleted"
        );
        // Slices of an address type the Service does not have go too.
        let mut other = (*after[0]).clone();
        other.metadata.name = Some("web-v6".into());
        other.address_type = "IPv6".into();
        let mut with_other = after.clone();
        with_other.push(Arc::new(other));
        let (plan, _) = run(&svc, &pods(10), &with_other);
        let deleted: Vec<String> = plan.delete.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(deleted, ["web-v6"]);
        assert!(plan.create.is_empty() && plan.update.is_empty());
    }

    #[test]
    fn pods_on_unknown_nodes_are_left_out_for_now() {
        let svc = web();
        let unknown = |_: &str| None;
        let (plan, skipped) = plan(&Inputs {
            service: &svc,
            pods: &pods(2),
            existing: &[],
            zone_of: &unknown,
            max_per_slice: 100,
        });
        assert_eq!(skipped, ["p000", "p001"]);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
    }

    #[test]
    fn terminating_pods_stay_with_their_conditions() {
        let svc = web();
        let mut leaving = pod("a", "10.0.0.1", true, &[("web", 8080)]);
        leaving.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let (plan, _) = run(&svc, &[Arc::new(leaving)], &[]);
        let conditions = plan.create[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
