//! What the node lifecycle controller decides about one node, as pure functions: the
//! conditions of a node nobody hears from, and the taints a node's conditions call for.

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";

/// The conditions a kubelet reports that turn Unknown when it goes silent (upstream's Ready
/// plus remainingNodeConditionTypes).
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Condition (type, status) → the NoSchedule taint it calls for (upstream's
/// nodeConditionToTaintKeyStatusMap).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
];

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The Ready condition's status: "True", "False", "Unknown", or None if never posted.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// Sets the kubelet's conditions to Unknown, in upstream's words, keeping their heartbeat (the
/// kubelet's last) and moving their transition time to `now`. Returns whether anything changed.
pub fn mark_unknown(node: &mut Node, now: &Time) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The taints this controller owns that `node` should carry, as (key, effect): NoSchedule
/// ones for its conditions and cordon, and the NoExecute one taint-based eviction acts on
/// (not-ready when Ready is False, unreachable when Unknown).
pub fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut wanted: Vec<(&str, &str)> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition(node, type_).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| (*key, NO_SCHEDULE))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        wanted.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    match ready_status(node) {
        Some("False") => wanted.push((NOT_READY, NO_EXECUTE)),
        Some("Unknown") => wanted.push((UNREACHABLE, NO_EXECUTE)),
        _ => {}
    }
    wanted
}

/// Whether this controller owns a taint: it adds and removes these, and no others.
fn owned(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        NO_SCHEDULE => taint.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == taint.key),
        NO_EXECUTE => taint.key == NOT_READY || taint.key == UNREACHABLE,
        _ => false,
    }
}

/// `current` with the owned taints made `wanted`: other taints untouched, a wanted taint
/// already there kept as it is (its timeAdded is when tolerationSeconds started counting),
/// a missing one added with timeAdded `now`. None when nothing changes.
pub fn reconcile_taints(current: &[Taint], wanted: &[(&str, &str)], now: &Time) -> Option<Vec<Taint>> {
    let is_wanted = |t: &Taint| wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e);
    let mut taints: Vec<Taint> = current.iter().filter(|t| !owned(t) || is_wanted(t)).cloned().collect();
    let mut changed = taints.len() != current.len();
    for (key, effect) in wanted {
        if !taints.iter().any(|t| t.key == *key && t.effect == *effect) {
            taints.push(Taint {
                key: key.to_string(),
                value: None,
                effect: effect.to_string(),
                time_added: Some(now.clone()),
            });
            changed = true;
        }
    }
    changed.then_some(taints)
}

/// How unhealthy a zone is (upstream's zone states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    /// More than two nodes and at least 55% of them not Ready.
    PartialDisruption,
    /// No node Ready.
    FullDisruption,
}

/// kube-controller-manager's `--unhealthy-zone-threshold`.
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;

pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The zone a node is in, by its topology labels (upstream's GetZoneKey); "" when unlabelled.
pub fn zone_of(node: &Node) -> String {
    let label = |keys: [&str; 2]| {
        let labels = node.metadata.labels.as_ref();
        keys.iter()
            .find_map(|k| labels.and_then(|l| l.get(*k)).cloned())
            .unwrap_or_default()
    };
    let region = label([
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    ]);
    let zone = label(["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"]);
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

/// How far taint-based eviction may go for a node, given the disruption around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    Normal,
    /// Its zone is partly down: likely a zone problem, not this node's; no new NoExecute
    /// taints (upstream stops evicting in such zones of small clusters and slows it in large).
    HoldNew,
    /// Every zone is fully down: the control plane is more likely cut off than every node
    /// dead; NoExecute taints are removed so nothing is evicted.
    Stop,
}

/// `wanted` with the NoExecute taints `eviction` does not allow left out (kept if already on
/// the node, when only new ones are held back).
pub fn limit_no_execute(
    wanted: Vec<(&'static str, &'static str)>,
    current: &[Taint],
    eviction: Eviction,
) -> Vec<(&'static str, &'static str)> {
    wanted
        .into_iter()
        .filter(|(key, effect)| {
            *effect != NO_EXECUTE
                || match eviction {
                    Eviction::Normal => true,
                    Eviction::HoldNew => current.iter().any(|t| t.key == *key && t.effect == *effect),
                    Eviction::Stop => false,
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    #[test]
    fn zones_are_judged_by_how_many_nodes_are_down() {
        assert_eq!(zone_state(3, 1), ZoneState::Normal);
        assert_eq!(
            zone_state(1, 2),
            ZoneState::Normal,
            "two down is never a partial disruption"
        );
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0), ZoneState::Normal);
    }

    #[test]
    fn disruption_holds_back_no_execute_taints() {
        let wanted = vec![(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)];
        let on_node = [Taint {
            key: UNREACHABLE.into(),
            effect: NO_EXECUTE.into(),
            ..Default::default()
        }];
        assert_eq!(limit_no_execute(wanted.clone(), &[], Eviction::Normal), wanted);
        assert_eq!(
            limit_no_execute(wanted.clone(), &[], Eviction::HoldNew),
            [(UNREACHABLE, NO_SCHEDULE)]
        );
        assert_eq!(limit_no_execute(wanted.clone(), &on_node, Eviction::HoldNew), wanted);
        assert_eq!(
            limit_no_execute(wanted, &on_node, Eviction::Stop),
            [(UNREACHABLE, NO_SCHEDULE)]
        );
    }

    fn node(conditions: &[(&str, &str)], unschedulable: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: Some("KubeletSays".into()),
                            last_heartbeat_time: Some(Time("2025-01-01T00:00:00Z".parse().unwrap())),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> Time {
        Time("2025-01-01T00:01:00Z".parse().unwrap())
    }

    #[test]
    fn a_silent_node_turns_unknown_and_keeps_the_kubelets_heartbeat() {
        let mut n = node(&[("Ready", "True"), ("MemoryPressure", "False")], false);
        assert!(mark_unknown(&mut n, &now()));
        let ready = condition(&n, "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time("2025-01-01T00:00:00Z".parse().unwrap()))
        );
        assert_eq!(ready.last_transition_time, Some(now()));
        let disk = condition(&n, "DiskPressure").unwrap();
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("Unknown", Some("NodeStatusNeverUpdated"))
        );
        assert_eq!(condition(&n, "PIDPressure").unwrap().status, "Unknown");
        // Already Unknown: nothing more to write.
        assert!(!mark_unknown(&mut n, &now()));
    }

    #[test]
    fn conditions_call_for_taints() {
        assert_eq!(wanted_taints(&node(&[("Ready", "True")], false)), []);
        assert_eq!(
            wanted_taints(&node(&[("Ready", "Unknown")], false)),
            [(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)]
        );
        assert_eq!(
            wanted_taints(&node(&[("Ready", "False"), ("DiskPressure", "True")], true)),
            [
                (NOT_READY, NO_SCHEDULE),
                ("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
                (UNSCHEDULABLE, NO_SCHEDULE),
                (NOT_READY, NO_EXECUTE)
            ]
        );
    }

    #[test]
    fn reconciling_touches_only_owned_taints_and_keeps_time_added() {
        let earlier = Time("2024-12-31T23:00:00Z".parse().unwrap());
        let current = vec![
            Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: NO_EXECUTE.into(),
                time_added: None,
            },
            Taint {
                key: UNREACHABLE.into(),
                value: None,
                effect: NO_EXECUTE.into(),
                time_added: Some(earlier.clone()),
            },
            Taint {
                key: NOT_READY.into(),
                value: None,
                effect: NO_SCHEDULE.into(),
                time_added: None,
            },
        ];
        let wanted = [(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)];
        let taints = reconcile_taints(&current, &wanted, &now()).unwrap();
        let keys: Vec<(&str, &str)> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("dedicated", NO_EXECUTE),
                (UNREACHABLE, NO_EXECUTE),
                (UNREACHABLE, NO_SCHEDULE)
            ]
        );
        assert_eq!(taints[1].time_added, Some(earlier));
        assert_eq!(taints[2].time_added, Some(now()));
        assert_eq!(reconcile_taints(&taints, &wanted, &now()), None);
        // Recovered: the owned taints go, the user's stays.
        let recovered = reconcile_taints(&taints, &[], &now()).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].key, "dedicated");
    }
}
