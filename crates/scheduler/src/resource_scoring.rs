//! NodeResourcesFit's score: how full a node would be with the pod, by one of upstream's three
//! strategies, over the configured resources and their weights. Integer arithmetic as
//! upstream's, so ties fall where they fall there.
//!
//! - LeastAllocated: `(capacity − requested) × 100 / capacity` per resource (emptier is better);
//! - MostAllocated: `requested × 100 / capacity` (fuller is better: bin packing);
//! - RequestedToCapacityRatio: the utilization percentage through a broken-linear shape.

use crate::cache::NodeInfo;
use crate::plugins::PodInfo;
use crate::profile::{FitScoring, Strategy};

const MAX_NODE_SCORE: i64 = 100;
const MAX_UTILIZATION: i64 = 100;

/// The node's score for the pod, 0..=100.
pub fn fit_score(fit: &FitScoring, pod: &PodInfo, node: &NodeInfo) -> i64 {
    let mut requested = Vec::with_capacity(fit.resources.len());
    let mut allocatable = Vec::with_capacity(fit.resources.len());
    let mut weights = Vec::with_capacity(fit.resources.len());
    for (name, weight) in &fit.resources {
        let (alloc, req) = allocatable_and_requested(pod, node, name);
        allocatable.push(alloc);
        requested.push(req);
        weights.push(*weight);
    }
    score(&fit.strategy, &requested, &allocatable, &weights)
}

/// What the node has of a resource and what it would have requested with the pod. CPU and
/// memory count containers without requests at the non-zero defaults, as upstream's scoring
/// does; an extended resource the pod does not ask for is not scored at all (0, 0).
fn allocatable_and_requested(pod: &PodInfo, node: &NodeInfo, resource: &str) -> (i64, i64) {
    let clamp = |v: i128| v.clamp(0, i128::from(i64::MAX)) as i64;
    match resource {
        "cpu" => (
            clamp(node.allocatable.milli_cpu),
            clamp(node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu),
        ),
        "memory" => (
            clamp(node.allocatable.memory),
            clamp(node.non_zero_requested.memory + pod.non_zero.memory),
        ),
        "ephemeral-storage" => (
            clamp(node.allocatable.ephemeral_storage),
            clamp(node.requested.ephemeral_storage + pod.requests.ephemeral_storage),
        ),
        other => {
            let wanted = pod.requests.scalar.get(other).copied().unwrap_or(0);
            match node.allocatable.scalar.get(other) {
                Some(alloc) if wanted != 0 => (
                    clamp(*alloc),
                    clamp(node.requested.scalar.get(other).copied().unwrap_or(0) + wanted),
                ),
                _ => (0, 0),
            }
        }
    }
}

/// The weighted score over resources; resources the node has none of are left out.
pub fn score(strategy: &Strategy, requested: &[i64], allocatable: &[i64], weights: &[i64]) -> i64 {
    let (mut node_score, mut weight_sum) = (0i64, 0i64);
    for ((req, alloc), weight) in requested.iter().zip(allocatable).zip(weights) {
        if *alloc == 0 {
            continue;
        }
        let resource_score = match strategy {
            Strategy::LeastAllocated => least_requested(*req, *alloc),
            Strategy::MostAllocated => most_requested(*req, *alloc),
            Strategy::RequestedToCapacityRatio(shape) => {
                let s = ratio_score(shape, *req, *alloc);
                // Upstream leaves resources scoring 0 out of this strategy's average.
                if s <= 0 {
                    continue;
                }
                s
            }
        };
        node_score += resource_score * weight;
        weight_sum += weight;
    }
    if weight_sum == 0 {
        return 0;
    }
    match strategy {
        Strategy::RequestedToCapacityRatio(_) => (node_score as f64 / weight_sum as f64).round() as i64,
        _ => node_score / weight_sum,
    }
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    // Pods without requests count at the non-zero defaults, which may exceed a small node.
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

fn ratio_score(shape: &[(i64, i64)], requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return broken_linear(shape, MAX_UTILIZATION);
    }
    broken_linear(shape, requested * MAX_UTILIZATION / capacity)
}

/// The shape's value at utilization `p`: flat before the first point and after the last,
/// linear between points (integer division, as upstream's).
pub fn broken_linear(shape: &[(i64, i64)], p: i64) -> i64 {
    for (i, &(utilization, score)) in shape.iter().enumerate() {
        if p <= utilization {
            if i == 0 {
                return score;
            }
            let (u0, s0) = shape[i - 1];
            return s0 + (score - s0) * (p - u0) / (utilization - u0);
        }
    }
    shape.last().map_or(0, |&(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: [i64; 2] = [1, 1];

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        // cpu 3000m of 4000m, memory 5000 of 10000: (25 + 50) / 2.
        assert_eq!(score(&Strategy::LeastAllocated, &[3000, 5000], &[4000, 10000], &W), 37);
        // Over capacity scores 0 for that resource.
        assert_eq!(score(&Strategy::LeastAllocated, &[5000, 0], &[4000, 10000], &W), 50);
    }

    #[test]
    fn most_allocated_prefers_the_fuller_node_with_weights() {
        // cpu 75, memory 50; weights 2 and 1: (150 + 50) / 3 = 66.
        assert_eq!(
            score(&Strategy::MostAllocated, &[3000, 5000], &[4000, 10000], &[2, 1]),
            66
        );
        // Requests over capacity count as full.
        assert_eq!(score(&Strategy::MostAllocated, &[8000, 10000], &[4000, 10000], &W), 100);
        // A resource the node lacks is left out, not scored 0.
        assert_eq!(score(&Strategy::MostAllocated, &[3000, 7], &[4000, 0], &W), 75);
    }

    #[test]
    fn requested_to_capacity_ratio_follows_its_shape() {
        // The file's {0: 0, 100: 10}, scaled ×10: a MostAllocated-like line.
        let up = vec![(0, 0), (100, 100)];
        assert_eq!(broken_linear(&up, 35), 35);
        // {0: 10, 50: 0, 100: 10} scaled: a valley at half full.
        let valley = vec![(0, 100), (50, 0), (100, 100)];
        assert_eq!(broken_linear(&valley, 25), 50);
        assert_eq!(broken_linear(&valley, 80), 60);
        // Flat outside the points.
        let mid = vec![(20, 30), (60, 70)];
        assert_eq!((broken_linear(&mid, 5), broken_linear(&mid, 90)), (30, 70));
        // cpu 30% → 30, memory 60% → 60: rounded mean 45.
        assert_eq!(
            score(
                &Strategy::RequestedToCapacityRatio(up.clone()),
                &[300, 600],
                &[1000, 1000],
                &W
            ),
            45
        );
        // A resource scoring 0 is left out of the mean (upstream's rule): 80 alone.
        assert_eq!(
            score(
                &Strategy::RequestedToCapacityRatio(up.clone()),
                &[0, 800],
                &[1000, 1000],
                &W
            ),
            80
        );
        // Mean rounds half away from zero: (33 + 34) / 2 = 33.5 → 34.
        assert_eq!(
            score(&Strategy::RequestedToCapacityRatio(up), &[33, 34], &[100, 100], &W),
            34
        );
    }
}
