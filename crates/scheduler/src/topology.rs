//! The plugins that look beyond one node: PodTopologySpread (pods spread over zones, hosts or
//! any node label within `maxSkew`) and InterPodAffinity (required affinity and anti-affinity
//! to other pods by topology, including the anti-affinity existing pods declare). What they
//! need of the whole cluster is counted once per scheduling attempt ([`Prepared::new`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{PodInfo, Rejection, node_affinity_matches};

struct Spread {
    max_skew: i64,
    key: String,
    hard: bool,
    /// Matching pods per domain (value of `key`) over the eligible nodes.
    counts: HashMap<String, i64>,
    /// The smallest count of a domain (0 when fewer than minDomains domains exist).
    min: i64,
    /// The incoming pod matches its own selector, so it adds one to its domain.
    self_match: i64,
}

/// Cluster-wide facts for one pod's scheduling attempt.
#[derive(Default)]
pub struct Prepared {
    spreads: Vec<Spread>,
    /// Per required affinity term: the (key, value) domains that hold a matching pod; None for
    /// a term nothing matches yet that the pod matches itself (the first of its group).
    affinity: Vec<(String, Option<HashSet<String>>)>,
    /// Per required anti-affinity term: the domains that hold a matching pod.
    anti_affinity: Vec<(String, HashSet<String>)>,
    /// Domains where an existing pod's anti-affinity forbids this pod: topology key → values.
    forbidden: HashMap<String, HashSet<String>>,
    /// The pod's preferred (anti-)affinity: per topology key and value, the summed weights of
    /// the matching pods there (anti-affinity counts negative).
    preferred: HashMap<String, HashMap<String, i64>>,
}

fn selector_matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return false };
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

fn labels_of(pod: &Pod) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&NONE)
}

fn node_label<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.node.metadata.labels.as_ref().and_then(|l| l.get(key))
}

/// Whether `term` (declared by a pod in `owner_namespace`) selects `pod`.
fn term_selects(term: &PodAffinityTerm, owner_namespace: &str, pod: &Pod) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let all_namespaces = term
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.match_labels.as_ref().is_none_or(|m| m.is_empty()) && s.match_expressions.as_ref().is_none_or(|e| e.is_empty()));
    let in_scope = all_namespaces
        || match term.namespaces.as_deref() {
            Some(list) if !list.is_empty() => list.iter().any(|n| n == namespace),
            _ => namespace == owner_namespace,
        };
    in_scope && selector_matches(term.label_selector.as_ref(), labels_of(pod))
}

fn required_terms(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
    } else {
        affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
    };
    terms.unwrap_or_default()
}

pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    !required_terms(pod, true).is_empty()
}

impl Prepared {
    pub fn new(pod: &PodInfo, cache: &Cache) -> Prepared {
        let mut prepared = Prepared::default();
        let spec = pod.pod.spec.as_ref();
        let namespace = pod.pod.metadata.namespace.clone().unwrap_or_default();
        let own_labels = labels_of(&pod.pod);
        let constraints: Vec<TopologySpreadConstraint> =
            spec.and_then(|s| s.topology_spread_constraints.clone()).unwrap_or_default();
        for c in constraints {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in cache.nodes.values() {
                let Some(domain) = node_label(node, &c.topology_key) else { continue };
                // nodeAffinityPolicy Honor (the default): only nodes the pod could go to count.
                if c.node_affinity_policy.as_deref() != Some("Ignore") && !node_affinity_matches(pod, node) {
                    continue;
                }
                let matching = node
                    .pods
                    .values()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| selector_matches(c.label_selector.as_ref(), labels_of(p)))
                    .count() as i64;
                *counts.entry(domain.clone()).or_default() += matching;
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if c.min_domains.is_some_and(|m| (counts.len() as i32) < m) {
                min = 0;
            }
            prepared.spreads.push(Spread {
                max_skew: i64::from(c.max_skew),
                key: c.topology_key.clone(),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                self_match: i64::from(selector_matches(c.label_selector.as_ref(), own_labels)),
                counts,
                min,
            });
        }

        prepared.preferred = preferred_domains(&pod.pod, &namespace, cache);
        let affinity = required_terms(&pod.pod, false);
        let anti = required_terms(&pod.pod, true);
        if affinity.is_empty() && anti.is_empty() && cache.anti_affinity_pods == 0 {
            return prepared;
        }
        let mut affinity_domains: Vec<HashSet<String>> = vec![HashSet::new(); affinity.len()];
        let mut affinity_matched = vec![false; affinity.len()];
        let mut anti_domains: Vec<HashSet<String>> = vec![HashSet::new(); anti.len()];
        for node in cache.nodes.values() {
            for other in node.pods.values() {
                for (i, term) in affinity.iter().enumerate() {
                    if term_selects(term, &namespace, other) {
                        affinity_matched[i] = true;
                        if let Some(v) = node_label(node, &term.topology_key) {
                            affinity_domains[i].insert(v.clone());
                        }
                    }
                }
                for (i, term) in anti.iter().enumerate() {
                    if term_selects(term, &namespace, other)
                        && let Some(v) = node_label(node, &term.topology_key)
                    {
                        anti_domains[i].insert(v.clone());
                    }
                }
                // Symmetry: an existing pod's anti-affinity keeps this pod out of its domain.
                let owner = other.metadata.namespace.clone().unwrap_or_default();
                for term in required_terms(other, true) {
                    if term_selects(term, &owner, &pod.pod)
                        && let Some(v) = node_label(node, &term.topology_key)
                    {
                        prepared.forbidden.entry(term.topology_key.clone()).or_default().insert(v.clone());
                    }
                }
            }
        }
        for (i, term) in affinity.iter().enumerate() {
            let first_of_group = !affinity_matched[i] && term_selects(term, &namespace, &pod.pod);
            let domains = if first_of_group { None } else { Some(std::mem::take(&mut affinity_domains[i])) };
            prepared.affinity.push((term.topology_key.clone(), domains));
        }
        for (i, term) in anti.iter().enumerate() {
            prepared.anti_affinity.push((term.topology_key.clone(), std::mem::take(&mut anti_domains[i])));
        }
        prepared
    }

    /// PodTopologySpread's and InterPodAffinity's filters, in upstream's order.
    pub fn filter(&self, node: &NodeInfo) -> Option<Rejection> {
        for s in self.spreads.iter().filter(|s| s.hard) {
            let Some(domain) = node_label(node, &s.key) else {
                return Some(Rejection {
                    reasons: vec!["node(s) didn't match pod topology spread constraints (missing required label)".into()],
                    unresolvable: true,
                });
            };
            let skew = s.counts.get(domain).copied().unwrap_or(0) + s.self_match - s.min;
            if skew > s.max_skew {
                return Some(Rejection {
                    reasons: vec!["node(s) didn't match pod topology spread constraints".into()],
                    unresolvable: false,
                });
            }
        }
        let reject = |reason: &str| {
            Some(Rejection {
                reasons: vec![reason.into()],
                unresolvable: false,
            })
        };
        for (key, domains) in &self.affinity {
            let ok = match domains {
                None => node_label(node, key).is_some(),
                Some(domains) => node_label(node, key).is_some_and(|v| domains.contains(v)),
            };
            if !ok {
                // Evicting pods cannot bring the pods this one needs (upstream:
                // UnschedulableAndUnresolvable).
                return Some(Rejection {
                    reasons: vec!["node(s) didn't match pod affinity rules".into()],
                    unresolvable: true,
                });
            }
        }
        for (key, domains) in &self.anti_affinity {
            if node_label(node, key).is_some_and(|v| domains.contains(v)) {
                return reject("node(s) didn't match pod anti-affinity rules");
            }
        }
        if self
            .forbidden
            .iter()
            .any(|(key, values)| node_label(node, key).is_some_and(|v| values.contains(v)))
        {
            return reject("node(s) didn't satisfy existing pods anti-affinity rules");
        }
        None
    }

    /// PodTopologySpread's score for the soft (ScheduleAnyway) constraints: fewer matching pods
    /// in the node's domains is better. Raw; normalized by the caller.
    pub fn spread_load(&self, node: &NodeInfo) -> i64 {
        self.spreads
            .iter()
            .filter(|s| !s.hard)
            .map(|s| node_label(node, &s.key).map_or(0, |d| s.counts.get(d).copied().unwrap_or(0) + s.max_skew - 1))
            .sum()
    }

    pub fn has_soft_spread(&self) -> bool {
        self.spreads.iter().any(|s| !s.hard)
    }

    /// InterPodAffinity's raw score for the pod's preferred terms: the weights of the matching
    /// pods in the node's domains. Normalized by the caller (lowest to 0, highest to 100).
    pub fn preferred_affinity(&self, node: &NodeInfo) -> i64 {
        self.preferred
            .iter()
            .filter_map(|(key, by_value)| node_label(node, key).and_then(|v| by_value.get(v)))
            .sum()
    }

    pub fn has_preferred_affinity(&self) -> bool {
        !self.preferred.is_empty()
    }
}

/// For each preferred affinity (+weight) and anti-affinity (−weight) term of `pod`, the domains
/// holding pods it selects.
fn preferred_domains(pod: &Pod, namespace: &str, cache: &Cache) -> HashMap<String, HashMap<String, i64>> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let mut terms: Vec<(&PodAffinityTerm, i64)> = Vec::new();
    for t in affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default()
    {
        terms.push((&t.pod_affinity_term, i64::from(t.weight)));
    }
    for t in affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default()
    {
        terms.push((&t.pod_affinity_term, -i64::from(t.weight)));
    }
    let mut domains: HashMap<String, HashMap<String, i64>> = HashMap::new();
    if terms.is_empty() {
        return domains;
    }
    for node in cache.nodes.values() {
        for other in node.pods.values() {
            for (term, weight) in &terms {
                if term_selects(term, namespace, other)
                    && let Some(value) = node_label(node, &term.topology_key)
                {
                    *domains
                        .entry(term.topology_key.clone())
                        .or_default()
                        .entry(value.clone())
                        .or_default() += weight;
                }
            }
        }
    }
    domains
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// Nodes n1, n2 in zone a and n3 in zone b; `pods` are (name, node, labels, spec extras).
    fn cluster(pods: &[(&str, &str, serde_json::Value, serde_json::Value)]) -> Cache {
        let mut cache = Cache::default();
        for (name, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
            cache.set_node(
                serde_json::from_value(json!({"metadata": {"name": name, "labels":
                    {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
                    "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
                .unwrap(),
            );
        }
        for (name, node, labels, extra) in pods {
            let mut spec = json!({"nodeName": node, "containers": [{"name": "c"}]});
            if let Some(o) = extra.as_object() {
                for (k, v) in o {
                    spec[k] = v.clone();
                }
            }
            cache.set_pod(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name,
                    "labels": labels}, "spec": spec}))
                .unwrap(),
            );
        }
        cache
    }

    fn incoming(labels: serde_json::Value, extra: serde_json::Value) -> PodInfo {
        let mut spec = json!({"containers": [{"name": "c"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "new", "namespace": "default", "labels": labels}, "spec": spec}))
                .unwrap(),
        ))
    }

    fn fits(cache: &Cache, pod: &PodInfo) -> Vec<String> {
        let prepared = Prepared::new(pod, cache);
        cache
            .nodes
            .values()
            .filter(|n| prepared.filter(n).is_none())
            .map(|n| n.name().to_string())
            .collect()
    }

    #[test]
    fn spread_over_zones_within_max_skew() {
        let web = json!({"app": "web"});
        let cache = cluster(&[("w1", "n1", web.clone(), json!({})), ("w2", "n2", web.clone(), json!({}))]);
        let pod = incoming(web, json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}));
        assert_eq!(fits(&cache, &pod), ["n3"]);
    }

    #[test]
    fn required_affinity_and_anti_affinity_by_topology() {
        let cache = cluster(&[
            ("db", "n3", json!({"app": "db"}), json!({})),
            ("web", "n1", json!({"app": "web"}), json!({})),
        ]);
        let near_db = incoming(json!({}), json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}));
        assert_eq!(fits(&cache, &near_db), ["n3"]);
        let apart = incoming(json!({"app": "web"}), json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}));
        assert_eq!(fits(&cache, &apart), ["n2", "n3"]);
        // The first pod of a group that requires its own group anywhere can go anywhere.
        let first = incoming(json!({"app": "cache"}), json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}));
        assert_eq!(fits(&cache, &first).len(), 3);
    }

    #[test]
    fn preferred_affinity_weighs_domains_with_matching_pods() {
        let cache = cluster(&[("db", "n3", json!({"app": "db"}), json!({})), ("web", "n1", json!({"app": "web"}), json!({}))]);
        let pod = incoming(json!({}), json!({"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}));
        let prepared = Prepared::new(&pod, &cache);
        let score = |n: &str| prepared.preferred_affinity(cache.nodes.get(n).unwrap());
        assert_eq!((score("n1"), score("n2"), score("n3")), (-5, 0, 10));
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_others_away() {
        let cache = cluster(&[(
            "loner",
            "n1",
            json!({"app": "loner"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}),
        )]);
        assert_eq!(cache.anti_affinity_pods, 1);
        assert_eq!(fits(&cache, &incoming(json!({"app": "web"}), json!({}))), ["n3"]);
        assert_eq!(fits(&cache, &incoming(json!({"app": "other"}), json!({}))).len(), 3);
    }
}
