//! Which pods a scale-down deletes first, as upstream's ActivePodsWithRanks orders them: the
//! least useful first (unscheduled, pending, not ready), then the ones doubled up on a node
//! with other replicas, then the newest.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::pod_state::is_ready;

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

/// When a ready pod became ready.
fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    crate::pod_state::ready_since(pod).flatten()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn created(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Orders `pods` so the ones to delete first come first. `related` are every active pod of
/// the owner: a pod's rank is how many of them share its node.
pub fn deletion_order(pods: &mut [Arc<Pod>], related: &[Arc<Pod>]) {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in related {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map_or(0, |n| per_node.get(n).copied().unwrap_or(0))
    };
    pods.sort_by(|a, b| {
        let assigned = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        };
        assigned(a)
            .cmp(&assigned(b))
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            // More replicas on the same node: delete first.
            .then_with(|| rank(b).cmp(&rank(a)))
            // Ready for less time: delete first.
            .then_with(|| match (ready_since(a), ready_since(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            })
            .then_with(|| restarts(b).cmp(&restarts(a)))
            // Newer: delete first.
            .then_with(|| created(b).cmp(&created(a)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created_s: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created_s).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(jiff::Timestamp::from_second(created_s + 5).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    #[test]
    fn least_useful_pods_go_first() {
        let all = vec![
            pod("old-ready", Some("n1"), "Running", true, 100),
            pod("new-ready", Some("n2"), "Running", true, 200),
            pod("unscheduled", None, "Pending", false, 50),
            pod("not-ready", Some("n3"), "Running", false, 10),
            pod("pending", Some("n4"), "Pending", false, 20),
        ];
        let mut order = all.clone();
        deletion_order(&mut order, &all);
        assert_eq!(
            names(&order),
            ["unscheduled", "pending", "not-ready", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn doubled_up_pods_go_before_lone_ones() {
        let all = vec![
            pod("alone", Some("n1"), "Running", true, 300),
            pod("pair-a", Some("n2"), "Running", true, 100),
            pod("pair-b", Some("n2"), "Running", true, 100),
        ];
        let mut order = all.clone();
        deletion_order(&mut order, &all);
        assert_eq!(names(&order)[2], "alone");
    }
}
