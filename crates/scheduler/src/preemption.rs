//! DefaultPreemption: when a pod fits nowhere, find the node where evicting the fewest and
//! least important lower-priority pods makes room, as kube-scheduler does. On each node whose
//! failure eviction could fix, every lower-priority pod is removed in simulation; if the pod
//! then fits, as many of them as possible are reprieved (highest priority first). Among the
//! nodes left, the one whose most important victim matters least wins, then the smallest sum of
//! victim priorities, then the fewest victims.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{self, PodInfo};
use crate::topology::Prepared;

pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Why preemption cannot be tried for this pod at all, in upstream's words.
pub fn ineligible(pod: &PodInfo, cache: &Cache) -> Option<&'static str> {
    let spec = pod.pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    // A nominated node still freeing room for this pod: wait for it rather than evict more.
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref())?;
    let node = cache.nodes.get(nominated)?;
    let terminating = node
        .pods
        .values()
        .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < pod.priority);
    terminating.then_some("not eligible due to a terminating pod on the nominated node.")
}

/// The best node to preempt on, among `nodes` (those whose failure eviction could fix).
/// `with_nominated` gives a node with the pods already nominated to it counted, so two
/// preemptors do not count on the same room.
pub fn find(
    pod: &PodInfo,
    prepared: &Prepared,
    cache: &Cache,
    nodes: &[String],
    with_nominated: impl Fn(&NodeInfo) -> Option<NodeInfo>,
) -> Option<Candidate> {
    let mut best: Option<(Candidate, (i32, i64, usize))> = None;
    for name in nodes {
        let Some(node) = cache.nodes.get(name) else { continue };
        let nominated = with_nominated(node);
        let Some(victims) = victims_on(pod, prepared, nominated.as_ref().unwrap_or(node)) else {
            continue;
        };
        if victims.is_empty() {
            continue;
        }
        let key = (
            victims.iter().map(|v| priority(v)).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(priority(v))).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(_, k)| key < *k) {
            best = Some((
                Candidate {
                    node: name.clone(),
                    victims,
                },
                key,
            ));
        }
    }
    best.map(|(c, _)| c)
}

/// The pods to evict from `node` so the pod fits, or None when evicting cannot make it fit.
fn victims_on(pod: &PodInfo, prepared: &Prepared, node: &NodeInfo) -> Option<Vec<Arc<Pod>>> {
    let mut lower: Vec<(String, Arc<Pod>)> = node
        .pods
        .iter()
        .filter(|(_, p)| priority(p) < pod.priority && p.metadata.deletion_timestamp.is_none())
        .map(|(uid, p)| (uid.clone(), Arc::clone(p)))
        .collect();
    let mut trial = node.clone();
    for (uid, _) in &lower {
        trial.remove(uid);
    }
    if plugins::filter(pod, prepared, &trial).is_some() {
        return None;
    }
    // Reprieve the most important first.
    lower.sort_by_key(|(_, p)| std::cmp::Reverse(priority(p)));
    let mut victims = Vec::new();
    for (uid, p) in lower {
        trial.add(&uid, Arc::clone(&p));
        if plugins::filter(pod, prepared, &trial).is_some() {
            trial.remove(&uid);
            victims.push(p);
        }
    }
    Some(victims)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, priority: i32, cpu: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"nodeName": node, "priority": priority,
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap()
    }

    #[test]
    fn the_least_important_victims_on_the_best_node() {
        let mut cache = Cache::default();
        for n in ["n1", "n2"] {
            cache.set_node(
                serde_json::from_value(json!({"metadata": {"name": n},
                    "status": {"allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}))
                .unwrap(),
            );
        }
        cache.set_pod(pod("n1-low", "n1", 10, "1"));
        cache.set_pod(pod("n1-mid", "n1", 50, "1"));
        cache.set_pod(pod("n2-high", "n2", 90, "2"));
        let mut incoming = pod("important", "", 100, "1");
        incoming.spec.as_mut().unwrap().node_name = None;
        let info = PodInfo::new(Arc::new(incoming));
        let prepared = Prepared::default();
        let candidate = find(&info, &prepared, &cache, &["n1".into(), "n2".into()], |_| None).unwrap();
        assert_eq!(candidate.node, "n1");
        let victims: Vec<&str> = candidate
            .victims
            .iter()
            .map(|v| v.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(victims, ["n1-low"], "n1-mid is reprieved");
        // Nothing of lower priority to evict: no candidate.
        let mut low = pod("low", "", 5, "1");
        low.spec.as_mut().unwrap().node_name = None;
        assert!(
            find(
                &PodInfo::new(Arc::new(low)),
                &prepared,
                &cache,
                &["n1".into(), "n2".into()],
                |_| None
            )
            .is_none()
        );
    }
}
