//! The plugins that look beyond one node: PodTopologySpread (pods spread over zones, hosts or
//! any node label within `maxSkew`, with the profile's default constraints for pods that
//! declare none) and InterPodAffinity (required affinity and anti-affinity to other pods by
//! topology, including the anti-affinity existing pods declare; its scoring is in
//! [`crate::pod_affinity_score`]). What they need of the whole cluster is counted once per
//! scheduling attempt ([`Prepared::new`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{PodInfo, Rejection, node_affinity_matches};
use crate::profile::Profile;

const HOSTNAME: &str = "kubernetes.io/hostname";

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
    /// InterPodAffinity's score: per topology key and value, the summed weights of the terms
    /// that hold there (anti-affinity counts negative).
    preferred: HashMap<String, HashMap<String, i64>>,
    /// Nodes missing a topology key of the soft constraints are left out of the spread score
    /// (not so for the system default constraints, which every pod gets).
    require_all_topologies: bool,
}

/// A missing selector selects nothing: a term or constraint without one matches no pod.
pub(crate) fn selector_matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_some_and(|s| styrman_runtime::labels::selector_matches(s, labels))
}

pub(crate) fn labels_of(pod: &Pod) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&NONE)
}

pub(crate) fn node_label<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.node.metadata.labels.as_ref().and_then(|l| l.get(key))
}

/// Whether `term` (declared by a pod in `owner_namespace`) selects `pod`.
pub(crate) fn term_selects(term: &PodAffinityTerm, owner_namespace: &str, pod: &Pod) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let all_namespaces = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    });
    let in_scope = all_namespaces
        || match term.namespaces.as_deref() {
            Some(list) if !list.is_empty() => list.iter().any(|n| n == namespace),
            _ => namespace == owner_namespace,
        };
    in_scope && selector_matches(term.label_selector.as_ref(), labels_of(pod))
}

pub(crate) fn required_terms(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
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

/// Whether the pod declares pod affinity or anti-affinity of any kind (upstream's
/// PodsWithAffinity).
pub fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// The spread constraints the pod is scheduled with: its own, or else the profile's defaults
/// with the selector of what selects the pod (none when nothing does). The flag says whether
/// nodes must have every topology key of the soft constraints to be scored.
fn spread_constraints(
    pod: &Pod,
    profile: &Profile,
    default_selector: Option<LabelSelector>,
) -> (Vec<TopologySpreadConstraint>, bool) {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.clone())
        .unwrap_or_default();
    if !own.is_empty() {
        return (own, true);
    }
    let Some(selector) = default_selector else {
        return (Vec::new(), true);
    };
    let constraints = profile
        .spread
        .constraints
        .iter()
        .map(|c| TopologySpreadConstraint {
            label_selector: Some(selector.clone()),
            ..c.clone()
        })
        .collect();
    (constraints, !profile.spread.system)
}

impl Prepared {
    /// `default_selector`: what selects the pod, for the profile's default spread constraints
    /// (see [`crate::spread_selectors`]); None when nothing does or the pod has its own.
    pub fn new(pod: &PodInfo, cache: &Cache, profile: &Profile, default_selector: Option<LabelSelector>) -> Prepared {
        let mut prepared = Prepared::default();
        let namespace = pod.pod.metadata.namespace.clone().unwrap_or_default();
        let own_labels = labels_of(&pod.pod);
        let (constraints, require_all) = spread_constraints(&pod.pod, profile, default_selector);
        prepared.require_all_topologies = require_all;
        let keys_of = |hard: bool| -> Vec<String> {
            constraints
                .iter()
                .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
                .map(|c| c.topology_key.clone())
                .collect()
        };
        let (hard_keys, soft_keys) = (keys_of(true), keys_of(false));
        for c in &constraints {
            let hard = c.when_unsatisfiable == "DoNotSchedule";
            // Only nodes that have every topology key of the constraints of the same kind count.
            let keys = if hard { &hard_keys } else { &soft_keys };
            let must_have_all = hard || require_all;
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in cache.nodes.values() {
                let Some(domain) = node_label(node, &c.topology_key) else {
                    continue;
                };
                if must_have_all && keys.iter().any(|k| node_label(node, k).is_none()) {
                    continue;
                }
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
                hard,
                self_match: i64::from(selector_matches(c.label_selector.as_ref(), own_labels)),
                counts,
                min,
            });
        }

        prepared.preferred = crate::pod_affinity_score::topology_scores(&pod.pod, cache, profile);
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
                        prepared
                            .forbidden
                            .entry(term.topology_key.clone())
                            .or_default()
                            .insert(v.clone());
                    }
                }
            }
        }
        for (i, term) in affinity.iter().enumerate() {
            let first_of_group = !affinity_matched[i] && term_selects(term, &namespace, &pod.pod);
            let domains = if first_of_group {
                None
            } else {
                Some(std::mem::take(&mut affinity_domains[i]))
            };
            prepared.affinity.push((term.topology_key.clone(), domains));
        }
        for (i, term) in anti.iter().enumerate() {
            prepared
                .anti_affinity
                .push((term.topology_key.clone(), std::mem::take(&mut anti_domains[i])));
        }
        prepared
    }

    /// PodTopologySpread's and InterPodAffinity's filters, in upstream's order.
    pub fn filter(&self, node: &NodeInfo) -> Option<Rejection> {
        for s in self.spreads.iter().filter(|s| s.hard) {
            let Some(domain) = node_label(node, &s.key) else {
                return Some(Rejection {
                    reasons: vec![
                        "node(s) didn't match pod topology spread constraints (missing required label)".into(),
                    ],
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

    /// PodTopologySpread's scores (0..=100) for the soft (ScheduleAnyway) constraints over the
    /// feasible `nodes`, as upstream computes them: per constraint, the matching pods in the
    /// node's domain weighted by the log of the number of domains, plus `maxSkew − 1`; fewer is
    /// better. Nodes left out (missing a topology key) score 0.
    pub fn spread_scores(&self, nodes: &[&NodeInfo]) -> Vec<i64> {
        let soft: Vec<&Spread> = self.spreads.iter().filter(|s| !s.hard).collect();
        if soft.is_empty() {
            return vec![0; nodes.len()];
        }
        let ignored: Vec<bool> = nodes
            .iter()
            .map(|n| self.require_all_topologies && soft.iter().any(|s| node_label(n, &s.key).is_none()))
            .collect();
        let scored = ignored.iter().filter(|i| !**i).count();
        let weights: Vec<f64> = soft
            .iter()
            .map(|s| {
                let domains = if s.key == HOSTNAME {
                    scored
                } else {
                    let values: HashSet<&String> = nodes
                        .iter()
                        .zip(&ignored)
                        .filter(|(_, i)| !**i)
                        .filter_map(|(n, _)| node_label(n, &s.key))
                        .collect();
                    values.len()
                };
                ((domains + 2) as f64).ln()
            })
            .collect();
        let raw: Vec<Option<i64>> = nodes
            .iter()
            .zip(&ignored)
            .map(|(node, ignored)| {
                if *ignored {
                    return None;
                }
                let score: f64 = soft
                    .iter()
                    .zip(&weights)
                    .filter_map(|(s, w)| {
                        let domain = node_label(node, &s.key)?;
                        let count = s.counts.get(domain).copied().unwrap_or(0);
                        Some(count as f64 * w + (s.max_skew - 1) as f64)
                    })
                    .sum();
                Some(score.round() as i64)
            })
            .collect();
        let min = raw.iter().flatten().copied().min().unwrap_or(0);
        let max = raw.iter().flatten().copied().max().unwrap_or(0).max(0);
        raw.into_iter()
            .map(|score| match score {
                None => 0,
                Some(_) if max == 0 => 100,
                Some(s) => 100 * (max + min - s) / max,
            })
            .collect()
    }

    /// InterPodAffinity's raw score: the weights of the terms that hold in the node's domains.
    /// Normalized by the caller (lowest to 0, highest to 100).
    pub fn preferred_affinity(&self, node: &NodeInfo) -> i64 {
        crate::pod_affinity_score::node_score(&self.preferred, node)
    }

    pub fn has_affinity_scores(&self) -> bool {
        !self.preferred.is_empty()
    }
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
            serde_json::from_value(
                json!({"metadata": {"name": "new", "namespace": "default", "labels": labels}, "spec": spec}),
            )
            .unwrap(),
        ))
    }

    fn prepare(cache: &Cache, pod: &PodInfo) -> Prepared {
        Prepared::new(pod, cache, &Profile::named("default-scheduler"), None)
    }

    fn fits(cache: &Cache, pod: &PodInfo) -> Vec<String> {
        let prepared = prepare(cache, pod);
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
        let cache = cluster(&[
            ("w1", "n1", web.clone(), json!({})),
            ("w2", "n2", web.clone(), json!({})),
        ]);
        let pod = incoming(
            web,
            json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        );
        assert_eq!(fits(&cache, &pod), ["n3"]);
    }

    #[test]
    fn required_affinity_and_anti_affinity_by_topology() {
        let cache = cluster(&[
            ("db", "n3", json!({"app": "db"}), json!({})),
            ("web", "n1", json!({"app": "web"}), json!({})),
        ]);
        let near_db = incoming(
            json!({}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}),
        );
        assert_eq!(fits(&cache, &near_db), ["n3"]);
        let apart = incoming(
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        assert_eq!(fits(&cache, &apart), ["n2", "n3"]);
        // The first pod of a group that requires its own group anywhere can go anywhere.
        let first = incoming(
            json!({"app": "cache"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}),
        );
        assert_eq!(fits(&cache, &first).len(), 3);
    }

    #[test]
    fn preferred_affinity_weighs_domains_with_matching_pods() {
        let cache = cluster(&[
            ("db", "n3", json!({"app": "db"}), json!({})),
            ("web", "n1", json!({"app": "web"}), json!({})),
        ]);
        let pod = incoming(
            json!({}),
            json!({"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}),
        );
        let prepared = prepare(&cache, &pod);
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

    #[test]
    fn default_constraints_spread_what_something_selects() {
        let web = json!({"app": "web"});
        let mut cache = cluster(&[
            ("w1", "n1", web.clone(), json!({})),
            ("w2", "n1", web.clone(), json!({})),
            ("w3", "n3", web.clone(), json!({})),
        ]);
        let pod = incoming(web, json!({}));
        let selector: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        let system = Profile::named("default-scheduler");
        let nodes: Vec<&NodeInfo> = cache.nodes.values().collect();
        // Hostname (maxSkew 3) over 3 hosts weighs ln 5, zone (maxSkew 5) over 2 zones ln 4:
        // n1 = 2·ln5 + 2 + 2·ln4 + 4 ≈ 12, n2 ≈ 8.8 → 9, n3 ≈ 9.0 → 9; then
        // 100·(max + min − s) / max.
        let prepared = Prepared::new(&pod, &cache, &system, Some(selector.clone()));
        assert_eq!(prepared.spread_scores(&nodes), [75, 100, 100]);
        // Nothing selects the pod: no default constraints.
        assert_eq!(
            Prepared::new(&pod, &cache, &system, None).spread_scores(&nodes),
            [0, 0, 0]
        );

        // A node without a zone still counts under the system defaults, not under a List.
        cache.set_node(
            serde_json::from_value(
                json!({"metadata": {"name": "n4", "labels": {"kubernetes.io/hostname": "n4"}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
            )
            .unwrap(),
        );
        let nodes: Vec<&NodeInfo> = cache.nodes.values().collect();
        let scores = Prepared::new(&pod, &cache, &system, Some(selector.clone())).spread_scores(&nodes);
        assert_eq!(scores[3], 100, "{scores:?}");
        let mut listed = system.clone();
        listed.spread = crate::profile::SpreadDefaults {
            constraints: vec![
                serde_json::from_value(json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule"}))
                .unwrap(),
            ],
            system: false,
        };
        // A DoNotSchedule default filters: zone a has 2, zone b 1, so only zone b fits.
        let prepared = Prepared::new(&pod, &cache, &listed, Some(selector));
        let fitting: Vec<&str> = nodes
            .iter()
            .filter(|n| prepared.filter(n).is_none())
            .map(|n| n.name())
            .collect();
        assert_eq!(fitting, ["n3"]);
    }
}
