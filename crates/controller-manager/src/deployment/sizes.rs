//! How many replicas each ReplicaSet of a Deployment should have at each step of a rollout:
//! pure arithmetic on replica counts, as upstream's rolling update and proportional scaling
//! compute it, kept apart from the API calls that apply it.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::util::{max_replicas_annotation, max_surge, max_unavailable, replicas, rs_replicas, rs_status};

fn total_replicas(sets: &[ReplicaSet]) -> i32 {
    sets.iter().map(rs_replicas).sum()
}

fn created(rs: &ReplicaSet) -> Option<jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first (by creation, then name), the order old ReplicaSets are scaled down in.
pub fn oldest_first(sets: &mut [ReplicaSet]) {
    sets.sort_by(|a, b| {
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The new ReplicaSet's size for this step of a rolling update: up towards the Deployment's
/// replicas while everything together stays within replicas + maxSurge.
pub fn rolling_new_size(d: &Deployment, all: &[ReplicaSet], new_current: i32) -> i32 {
    let desired = replicas(d);
    let current_total = total_replicas(all);
    let max_total = desired + max_surge(d);
    if current_total >= max_total {
        return new_current;
    }
    let scale_up = (max_total - current_total).min(desired - new_current);
    new_current + scale_up.max(0)
}

/// How many old pods a rolling update may take down now, not counting unhealthy ones already
/// gone: what keeps `replicas - maxUnavailable` available, given the new ReplicaSet's
/// not-yet-available pods.
pub fn old_scale_down_budget(d: &Deployment, all: &[ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new.map_or(0, |n| rs_replicas(n) - rs_status(n).2);
    total_replicas(all) - min_available - new_unavailable
}

/// Sizes for old ReplicaSets after removing up to `budget` of their unavailable pods, oldest
/// first; returns the new sizes and how many were removed.
pub fn cleanup_unhealthy(old: &[ReplicaSet], budget: i32) -> (Vec<i32>, i32) {
    let mut removed = 0;
    let sizes = old
        .iter()
        .map(|rs| {
            let size = rs_replicas(rs);
            let unhealthy = (size - rs_status(rs).2).max(0);
            if size == 0 || unhealthy == 0 || removed >= budget {
                return size;
            }
            let down = unhealthy.min(budget - removed);
            removed += down;
            size - down
        })
        .collect();
    (sizes, removed)
}

/// Sizes for old ReplicaSets after scaling down available pods while `replicas -
/// maxUnavailable` stay available, oldest first.
pub fn scale_down_available(d: &Deployment, all: &[ReplicaSet], old: &[ReplicaSet]) -> Vec<i32> {
    let min_available = replicas(d) - max_unavailable(d);
    let available: i32 = all.iter().map(|rs| rs_status(rs).2).sum();
    let mut left = (available - min_available).max(0);
    old.iter()
        .map(|rs| {
            let size = rs_replicas(rs);
            let down = size.min(left);
            left -= down;
            size - down
        })
        .collect()
}

/// Sizes for the active ReplicaSets when a Deployment is resized in the middle of a rollout:
/// each takes its share of the change in proportion to its size, the rest going to the
/// largest (upstream's proportional scaling). `active` must be sorted as upstream sorts
/// them: bigger (then newer) first when growing, bigger (then older) first when shrinking.
pub fn proportional_sizes(d: &Deployment, active: &[ReplicaSet]) -> Vec<i32> {
    let desired = replicas(d);
    let allowed = if desired > 0 { desired + max_surge(d) } else { 0 };
    let to_add = allowed - total_replicas(active);
    let mut added = 0;
    let mut sizes: Vec<i32> = active
        .iter()
        .map(|rs| {
            let size = rs_replicas(rs);
            if to_add == 0 || size == 0 || to_add == added {
                return size;
            }
            let fraction = if desired == 0 {
                -size
            } else {
                let annotated = max_replicas_annotation(rs)
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(1));
                let target = (f64::from(size) * f64::from(allowed) / f64::from(annotated)).round() as i32;
                target - size
            };
            let allowed_now = to_add - added;
            let share = if to_add > 0 {
                fraction.min(allowed_now)
            } else {
                fraction.max(allowed_now)
            };
            added += share;
            size + share
        })
        .collect();
    if to_add != added
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

/// Sorts for [`proportional_sizes`].
pub fn sort_for_proportional(d: &Deployment, active: &mut [ReplicaSet]) {
    let growing = {
        let desired = replicas(d);
        let allowed = if desired > 0 { desired + max_surge(d) } else { 0 };
        allowed > total_replicas(active)
    };
    active.sort_by(|a, b| {
        let by_size = rs_replicas(b).cmp(&rs_replicas(a));
        let by_age = if growing {
            created(b).cmp(&created(a))
        } else {
            created(a).cmp(&created(b))
        };
        by_size.then(by_age).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn deployment(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(name: &str, size: i32, available: i32, max_annotation: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: max_annotation
                    .map(|m| [(super::super::util::MAX_REPLICAS.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(size),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: size,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_rolling_update_surges_then_scales_old_down_within_budget() {
        // 10 replicas, maxSurge 3, maxUnavailable 2: the new set may start at 3.
        let d = deployment(10, 3, 2);
        let old = rs("old", 10, 10, None);
        let new = rs("new", 0, 0, None);
        assert_eq!(rolling_new_size(&d, &[old.clone(), new.clone()], 0), 3);
        // With 3 new pods not yet available, 13 - 8 - 3 = 2 old pods may go.
        let new = rs("new", 3, 0, None);
        assert_eq!(old_scale_down_budget(&d, &[old.clone(), new.clone()], Some(&new)), 2);
        assert_eq!(
            scale_down_available(&d, &[old.clone(), new.clone()], std::slice::from_ref(&old)),
            vec![8]
        );
        // Never above replicas + maxSurge.
        assert_eq!(rolling_new_size(&d, &[rs("old", 8, 8, None), new.clone()], 3), 5);
    }

    #[test]
    fn unhealthy_old_pods_go_first_and_only_within_budget() {
        let old = [rs("a", 4, 1, None), rs("b", 3, 3, None)];
        assert_eq!(cleanup_unhealthy(&old, 2), (vec![2, 3], 2));
        assert_eq!(cleanup_unhealthy(&old, 10), (vec![1, 3], 3));
    }

    #[test]
    fn resizing_mid_rollout_shares_the_change_proportionally() {
        // 10 replicas + surge 3 = 13 split 8/5; scaled to 20 (+3 = 23): 8→14, 5→9.
        let mut d = deployment(20, 3, 2);
        let mut active = vec![rs("old", 8, 8, Some(13)), rs("new", 5, 0, Some(13))];
        sort_for_proportional(&d, &mut active);
        let sizes = proportional_sizes(&d, &active);
        assert_eq!(sizes.iter().sum::<i32>(), 23);
        assert_eq!(sizes, vec![14, 9]);
        // Scaled to zero: everything goes.
        d.spec.as_mut().unwrap().replicas = Some(0);
        assert_eq!(proportional_sizes(&d, &active), vec![0, 0]);
    }
}
