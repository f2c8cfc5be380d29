//! kube-scheduler's default filter and score plugins, on the scheduler's cache: NodeUnschedulable,
//! TaintToleration, NodeAffinity (nodeSelector and required/preferred affinity), NodePorts,
//! NodeResourcesFit (scored as in [`crate::resource_scoring`]) and
//! NodeResourcesBalancedAllocation, with their reasons worded as upstream's, since users read
//! them in FailedScheduling events. [`scores`] sums every score plugin by the profile's weights.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::cache::{Cache, HostPort, NodeInfo, host_ports};
use crate::profile::{Profile, ScorePlugin};
use crate::resources::{self, Resources};
use crate::topology::Prepared;

/// What the plugins need of a pod, computed once per scheduling attempt (PreFilter).
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub priority: i32,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let (requests, non_zero) = resources::pod_requests(&pod);
        let ports = host_ports(&pod);
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        PodInfo {
            pod,
            requests,
            non_zero,
            ports,
            priority,
        }
    }

    fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default()
    }
}

/// Why a node does not fit, as one plugin reports it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reasons: Vec<String>,
    /// Evicting pods could not help (preemption would be pointless).
    pub unresolvable: bool,
}

fn unresolvable(reason: impl Into<String>) -> Option<Rejection> {
    Some(Rejection {
        reasons: vec![reason.into()],
        unresolvable: true,
    })
}

/// Runs the filters in upstream's order; the first that rejects the node says why.
pub fn filter(pod: &PodInfo, prepared: &Prepared, node: &NodeInfo) -> Option<Rejection> {
    node_unschedulable(pod, node)
        .or_else(|| taint_toleration(pod, node))
        .or_else(|| node_affinity(pod, node))
        .or_else(|| node_ports(pod, node))
        .or_else(|| node_resources_fit(pod, node))
        .or_else(|| prepared.filter(node))
}

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub fn node_affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    node_affinity(pod, node).is_none()
}

fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
    let unschedulable = node.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if unschedulable && !pod.tolerations().iter().any(|t| tolerates(t, &taint)) {
        return unresolvable("node(s) were unschedulable");
    }
    None
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref() {
        Some("Exists") => key.is_empty() || key == taint.key,
        _ => key == taint.key && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
    let untolerated = taints(node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod.tolerations().iter().any(|tol| tolerates(tol, t)))?;
    unresolvable(format!(
        "node(s) had untolerated taint {{{}: {}}}",
        untolerated.key,
        untolerated.value.as_deref().unwrap_or("")
    ))
}

fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
    let spec = pod.pod.spec.as_ref()?;
    let labels = node_labels(node);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if selector_ok && affinity_ok {
        None
    } else {
        unresolvable("node(s) didn't match Pod's node affinity/selector")
    }
}

/// A node selector term: all its expressions hold (an empty term matches nothing).
fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    expressions
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then(|| node.name());
            requirement_holds(r, value)
        })
}

fn node_labels(node: &NodeInfo) -> &std::collections::BTreeMap<String, String> {
    static NONE: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    node.node.metadata.labels.as_ref().unwrap_or(&NONE)
}

fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
    let conflict = pod.ports.iter().any(|(protocol, ip, port)| {
        node.used_ports
            .keys()
            .any(|(p, i, n)| p == protocol && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0"))
    });
    conflict.then(|| Rejection {
        reasons: vec!["node(s) didn't have free ports for the requested pod ports".into()],
        unresolvable: false,
    })
}

fn node_resources_fit(pod: &PodInfo, node: &NodeInfo) -> Option<Rejection> {
    let mut reasons = Vec::new();
    if node.pods.len() as i128 + 1 > node.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let (want, used, have) = (&pod.requests, &node.requested, &node.allocatable);
    if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > have.milli_cpu {
        reasons.push("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        reasons.push("Insufficient memory".into());
    }
    if want.ephemeral_storage > 0 && used.ephemeral_storage + want.ephemeral_storage > have.ephemeral_storage {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, amount) in &want.scalar {
        let used = used.scalar.get(name).copied().unwrap_or(0);
        let have = have.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && used + amount > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    (!reasons.is_empty()).then_some(Rejection {
        reasons,
        unresolvable: false,
    })
}

/// The profile's score plugins, each 0..=100 times its weight, summed per node. A plugin of
/// weight 0 (disabled) is not computed.
pub fn scores(pod: &PodInfo, prepared: &Prepared, nodes: &[&NodeInfo], profile: &Profile, cache: &Cache) -> Vec<i64> {
    let mut total = vec![0i64; nodes.len()];
    for plugin in ScorePlugin::ALL {
        let weight = profile.weights.get(plugin);
        if weight == 0 {
            continue;
        }
        let each = |score: &dyn Fn(&NodeInfo) -> i64| nodes.iter().map(|n| score(n)).collect::<Vec<i64>>();
        let scores = match plugin {
            ScorePlugin::TaintToleration => normalize(each(&|n| intolerable_soft_taints(pod, n)), true),
            ScorePlugin::NodeAffinity => normalize(each(&|n| preferred_affinity(pod, n)), false),
            ScorePlugin::NodeResourcesFit => each(&|n| crate::resource_scoring::fit_score(&profile.fit, pod, n)),
            ScorePlugin::PodTopologySpread => prepared.spread_scores(nodes),
            ScorePlugin::InterPodAffinity if prepared.has_affinity_scores() => {
                min_max(each(&|n| prepared.preferred_affinity(n)))
            }
            ScorePlugin::InterPodAffinity => continue,
            ScorePlugin::NodeResourcesBalancedAllocation => each(&|n| balanced_allocation(pod, n)),
            ScorePlugin::ImageLocality => {
                let (images, total_nodes) = (crate::image_locality::pod_images(&pod.pod), cache.nodes.len());
                each(&|n| crate::image_locality::score(&images, n, &cache.image_holders, total_nodes))
            }
        };
        for (sum, score) in total.iter_mut().zip(scores) {
            *sum += weight * score;
        }
    }
    total
}

/// Scales raw scores that may be negative to 0..=100: the lowest to 0, the highest to 100.
fn min_max(raw: Vec<i64>) -> Vec<i64> {
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.into_iter()
        .map(|s| if max == min { 0 } else { (s - min) * 100 / (max - min) })
        .collect()
}

/// Scales raw scores to 0..=100 by the highest; `reverse` makes the lowest raw score the best.
fn normalize(raw: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.into_iter()
        .map(|s| match (max, reverse) {
            (0, true) => 100,
            (0, false) => 0,
            (m, true) => (m - s) * 100 / m,
            (m, false) => s * 100 / m,
        })
        .collect()
}

fn fraction(requested: i128, allocatable: i128) -> f64 {
    if allocatable <= 0 {
        return 1.0;
    }
    (requested as f64 / allocatable as f64).min(1.0)
}

fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = fraction(
        node.requested.milli_cpu + pod.requests.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let memory = fraction(node.requested.memory + pod.requests.memory, node.allocatable.memory);
    let deviation = (cpu - memory).abs() / 2.0;
    ((1.0 - deviation) * 100.0) as i64
}

fn intolerable_soft_taints(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let soft: Vec<&Toleration> = pod
        .tolerations()
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !soft.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

fn preferred_affinity(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(spec) = pod.pod.spec.as_ref() else { return 0 };
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(json: serde_json::Value) -> NodeInfo {
        let node: Node = serde_json::from_value(json).unwrap();
        let mut cache = crate::cache::Cache::default();
        let name = node.metadata.name.clone().unwrap();
        cache.set_node(node);
        cache.nodes.remove(&name).unwrap()
    }

    fn small_node(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> NodeInfo {
        node(
            serde_json::json!({"metadata": {"name": name, "labels": labels}, "spec": spec,
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}}),
        )
    }

    fn none() -> Prepared {
        Prepared::default()
    }

    fn score(p: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
        scores(
            p,
            &none(),
            nodes,
            &Profile::named("default-scheduler"),
            &crate::cache::Cache::default(),
        )
    }

    fn pod(spec: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap(),
        ))
    }

    #[test]
    fn resources_ports_selectors_and_taints_filter_with_upstreams_words() {
        let plain = small_node(
            "n",
            serde_json::json!({"kubernetes.io/arch": "amd64"}),
            serde_json::json!({}),
        );
        let big = pod(
            serde_json::json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}),
        );
        assert_eq!(
            filter(&big, &none(), &plain).unwrap().reasons,
            ["Insufficient cpu", "Insufficient memory"]
        );
        let x86 =
            pod(serde_json::json!({"nodeSelector": {"kubernetes.io/arch": "x86"}, "containers": [{"name": "c"}]}));
        assert_eq!(
            filter(&x86, &none(), &plain).unwrap().reasons,
            ["node(s) didn't match Pod's node affinity/selector"]
        );
        let amd64 =
            pod(serde_json::json!({"nodeSelector": {"kubernetes.io/arch": "amd64"}, "containers": [{"name": "c"}]}));
        assert!(filter(&amd64, &none(), &plain).is_none());
        let tainted = small_node(
            "t",
            serde_json::json!({}),
            serde_json::json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
        );
        assert_eq!(filter(&amd64, &none(), &tainted).unwrap().reasons.len(), 1);
        assert_eq!(
            filter(&x86, &none(), &tainted).unwrap().reasons,
            ["node(s) had untolerated taint {gpu: yes}"]
        );
        let tolerant = pod(
            serde_json::json!({"tolerations": [{"key": "gpu", "operator": "Exists"}], "containers": [{"name": "c"}]}),
        );
        assert!(filter(&tolerant, &none(), &tainted).is_none());
        let cordoned = small_node("c", serde_json::json!({}), serde_json::json!({"unschedulable": true}));
        assert_eq!(
            filter(&tolerant, &none(), &cordoned).unwrap().reasons,
            ["node(s) were unschedulable"]
        );
    }

    #[test]
    fn affinity_expressions_and_preferences() {
        let zone_a = small_node(
            "a",
            serde_json::json!({"zone": "a", "size": "8"}),
            serde_json::json!({}),
        );
        let zone_b = small_node(
            "b",
            serde_json::json!({"zone": "b", "size": "2"}),
            serde_json::json!({}),
        );
        let p = pod(
            serde_json::json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["1"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}),
        );
        assert!(filter(&p, &none(), &zone_a).is_none() && filter(&p, &none(), &zone_b).is_none());
        let s = score(&p, &[&zone_a, &zone_b]);
        assert!(s[1] > s[0], "{s:?}");
        let picky = pod(
            serde_json::json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}),
        );
        assert!(filter(&picky, &none(), &zone_a).is_some() && filter(&picky, &none(), &zone_b).is_none());
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let empty = small_node("e", serde_json::json!({}), serde_json::json!({}));
        let mut busy = small_node("b", serde_json::json!({}), serde_json::json!({}));
        busy.requested.milli_cpu = 800;
        busy.non_zero_requested.milli_cpu = 800;
        let p = pod(serde_json::json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]}));
        let s = score(&p, &[&empty, &busy]);
        assert!(s[0] > s[1], "{s:?}");
    }

    #[test]
    fn the_profile_chooses_the_strategy_and_the_weights() {
        let empty = small_node("e", serde_json::json!({}), serde_json::json!({}));
        let mut busy = small_node("b", serde_json::json!({}), serde_json::json!({}));
        busy.requested.milli_cpu = 800;
        busy.non_zero_requested.milli_cpu = 800;
        let p = pod(serde_json::json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]}));
        let mut packer = Profile::named("packer");
        packer.fit.strategy = crate::profile::Strategy::MostAllocated;
        let cache = crate::cache::Cache::default();
        // (With BalancedAllocation the two happen to tie: 14 + 95 against 54 + 55.)
        packer.weights.set(ScorePlugin::NodeResourcesBalancedAllocation, 0);
        let s = scores(&p, &none(), &[&empty, &busy], &packer, &cache);
        assert!(s[1] > s[0], "{s:?}");
        let s = scores(
            &p,
            &none(),
            &[&empty, &busy],
            &Profile::named("default-scheduler"),
            &cache,
        );
        assert!(s[0] > s[1], "LeastAllocated, the default: {s:?}");
        // Only NodeResourcesFit, weighted 3: cpu 90% and 10%, memory (200 MiB default of 1 GiB) 19%.
        packer.weights.disable_all();
        packer.weights.set(ScorePlugin::NodeResourcesFit, 3);
        assert_eq!(
            scores(&p, &none(), &[&empty, &busy], &packer, &cache),
            [3 * ((10 + 19) / 2), 3 * ((90 + 19) / 2)]
        );
    }
}
