//! InterPodAffinity's score, symmetric as upstream's: the incoming pod's preferred terms
//! weigh the domains of the existing pods they select, and the existing pods' terms weigh
//! their own domains when they select the incoming pod (preferred affinity +weight, preferred
//! anti-affinity −weight, required affinity +hardPodAffinityWeight). A user who asked that
//! pods of B run near A gets that whichever of the two is scheduled first.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use crate::cache::{Cache, NodeInfo};
use crate::profile::Profile;
use crate::topology::{has_pod_affinity, node_label, required_terms, term_selects};

/// Per topology key and value, the summed weights of the terms that hold there. Empty when no
/// term holds anywhere (the plugin then scores every node 0).
pub fn topology_scores(pod: &Pod, cache: &Cache, profile: &Profile) -> HashMap<String, HashMap<String, i64>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut own: Vec<(&PodAffinityTerm, i64)> = Vec::new();
    own.extend(
        preferred(pod, false)
            .iter()
            .map(|t| (&t.pod_affinity_term, i64::from(t.weight))),
    );
    own.extend(
        preferred(pod, true)
            .iter()
            .map(|t| (&t.pod_affinity_term, -i64::from(t.weight))),
    );
    let mut scores: HashMap<String, HashMap<String, i64>> = HashMap::new();
    if own.is_empty() && profile.ignore_preferred_terms_of_existing_pods {
        return scores;
    }
    for node in cache.nodes.values() {
        // Without terms of its own, only pods with terms of theirs can weigh.
        if own.is_empty() && node.pods_with_affinity == 0 {
            continue;
        }
        if node.node.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            continue;
        }
        let mut add = |key: &str, weight: i64| {
            if let Some(value) = node_label(node, key) {
                *scores
                    .entry(key.to_string())
                    .or_default()
                    .entry(value.clone())
                    .or_default() += weight;
            }
        };
        for other in node.pods.values() {
            for (term, weight) in &own {
                if term_selects(term, &namespace, other) {
                    add(&term.topology_key, *weight);
                }
            }
            if has_pod_affinity(other) {
                existing_pod_terms(other, pod, profile.hard_pod_affinity_weight, &mut add);
            }
        }
    }
    scores
}

/// The terms of `existing` that select the incoming `pod`, with their weights.
fn existing_pod_terms(existing: &Pod, pod: &Pod, hard_weight: i64, add: &mut impl FnMut(&str, i64)) {
    let owner = existing.metadata.namespace.as_deref().unwrap_or("");
    if hard_weight > 0 {
        for term in required_terms(existing, false) {
            if term_selects(term, owner, pod) {
                add(&term.topology_key, hard_weight);
            }
        }
    }
    for (anti, sign) in [(false, 1), (true, -1)] {
        for t in preferred(existing, anti) {
            if term_selects(&t.pod_affinity_term, owner, pod) {
                add(&t.pod_affinity_term.topology_key, sign * i64::from(t.weight));
            }
        }
    }
}

fn preferred(pod: &Pod, anti: bool) -> &[WeightedPodAffinityTerm] {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
    } else {
        affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
    };
    terms.unwrap_or_default()
}

/// The node's raw score: the weights of the domains it is in.
pub fn node_score(scores: &HashMap<String, HashMap<String, i64>>, node: &NodeInfo) -> i64 {
    scores
        .iter()
        .filter_map(|(key, by_value)| node_label(node, key).and_then(|v| by_value.get(v)))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// Nodes n1, n2 in zone a and n3 in zone b, with `pods` as (name, node, labels, affinity).
    fn cluster(pods: &[(&str, &str, serde_json::Value, serde_json::Value)]) -> Cache {
        let mut cache = Cache::default();
        for (name, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
            cache.set_node(
                serde_json::from_value(json!({"metadata": {"name": name, "labels":
                    {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}}))
                .unwrap(),
            );
        }
        for (name, node, labels, affinity) in pods {
            cache.set_pod(
                serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
                    "spec": {"nodeName": node, "containers": [{"name": "c"}], "affinity": affinity}}),
                )
                .unwrap(),
            );
        }
        cache
    }

    fn scores_of(cache: &Cache, labels: serde_json::Value, profile: &Profile) -> Vec<i64> {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "new", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c"}]}}),
        )
        .unwrap();
        let scores = topology_scores(&Arc::new(pod), cache, profile);
        ["n1", "n2", "n3"]
            .iter()
            .map(|n| node_score(&scores, &cache.nodes[*n]))
            .collect()
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    #[test]
    fn existing_pods_terms_weigh_where_they_run() {
        let cache = cluster(&[
            // Wants web pods on other hosts than itself.
            (
                "shy",
                "n1",
                json!({"app": "shy"}),
                json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 30, "podAffinityTerm": term("web", "kubernetes.io/hostname")}]}}),
            ),
            // Wants web pods in its zone.
            (
                "friend",
                "n3",
                json!({"app": "friend"}),
                json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "podAffinityTerm": term("web", "topology.kubernetes.io/zone")}]}}),
            ),
            // Requires web pods in its zone: the hard weight.
            (
                "needy",
                "n2",
                json!({"app": "needy"}),
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "topology.kubernetes.io/zone")]}}),
            ),
        ]);
        let profile = Profile::named("default-scheduler");
        assert_eq!(scores_of(&cache, json!({"app": "web"}), &profile), [-30 + 1, 1, 20]);
        let mut heavy = profile.clone();
        heavy.hard_pod_affinity_weight = 50;
        assert_eq!(scores_of(&cache, json!({"app": "web"}), &heavy), [-30 + 50, 50, 20]);
        // Terms that do not select the pod weigh nothing.
        assert_eq!(scores_of(&cache, json!({"app": "db"}), &profile), [0, 0, 0]);
        // Opting out of existing pods' preferences (the pod has none of its own).
        let mut ignoring = profile;
        ignoring.ignore_preferred_terms_of_existing_pods = true;
        assert_eq!(scores_of(&cache, json!({"app": "web"}), &ignoring), [0, 0, 0]);
    }
}
