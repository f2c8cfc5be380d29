//! The small rules a Deployment's rollout is made of, as upstream's deployment util states
//! them: the pod-template hash, revisions, surge and unavailability budgets, and the
//! annotations a ReplicaSet carries about the Deployment that sized it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH: &str = "pod-template-hash";
/// kubectl's own annotation, never copied from a Deployment onto its ReplicaSets.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// An int, or a percentage of `total` rounded up or down (GetScaledValueFromIntOrPercent).
fn scaled(value: &IntOrString, total: i32, round_up: bool) -> anyhow::Result<i32> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("invalid value for IntOrString: invalid value {s:?}"))?;
            let product = percent * i64::from(total);
            let value = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// (maxSurge, maxUnavailable) in pods for `desired` replicas; both zero means one may be
/// unavailable, or the rollout could never move (ResolveFenceposts).
pub fn fenceposts(d: &Deployment, desired: i32) -> anyhow::Result<(i32, i32)> {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter),
        desired,
        true,
    )?;
    let unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&quarter),
        desired,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        return 0;
    }
    fenceposts(d, replicas(d)).map_or(0, |(surge, _)| surge)
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if is_recreate(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d, replicas(d)).map_or(0, |(_, unavailable)| unavailable.min(replicas(d)))
}

/// 32-bit FNV-1a, the hash upstream names pod templates with.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The `pod-template-hash` of a template: the same for the same template and collision count,
/// spelled with the consonants and digits upstream's SafeEncodeString uses, so it never forms
/// words.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv1a32(&bytes)
        .to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// Whether two templates are the same but for the `pod-template-hash` label.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let without_hash = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(TEMPLATE_HASH);
            }
            if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
                meta.labels = None;
            }
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    without_hash(a) == without_hash(b)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, DESIRED_REPLICAS)
}

pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, MAX_REPLICAS)
}

/// Sets the desired- and max-replicas annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations onto the ReplicaSet (except kubectl's and the
/// Deployment controller's own); whether anything changed.
pub fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        let skipped = key == LAST_APPLIED
            || key == REVISION
            || key == REVISION_HISTORY
            || key == DESIRED_REPLICAS
            || key == MAX_REPLICAS;
        if !skipped && annotations.get(key) != Some(value) {
            annotations.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    changed
}

/// Moves the ReplicaSet to `new_revision` if it is older, remembering its old revision in the
/// revision history; whether anything changed.
pub fn set_revision(rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let old = revision(rs);
    if old >= new_revision {
        return false;
    }
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if old > 0 {
        let history = match annotations.get(REVISION_HISTORY) {
            Some(h) if !h.is_empty() => format!("{h},{old}"),
            _ => old.to_string(),
        };
        annotations.insert(REVISION_HISTORY.into(), history);
    }
    annotations.insert(REVISION.into(), new_revision.to_string());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        let d = deployment(10, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = deployment(3, IntOrString::Int(0), pct("10%"));
        assert_eq!(
            (max_surge(&d), max_unavailable(&d)),
            (0, 1),
            "both zero: one may be unavailable"
        );
        let d = deployment(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2, "never more than the replicas");
        assert!(fenceposts(&deployment(2, pct("x%"), IntOrString::Int(1)), 2).is_err());
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let mut template = PodTemplateSpec::default();
        let a = template_hash(&template, None);
        assert_eq!(a, template_hash(&template, None));
        assert_ne!(a, template_hash(&template, Some(1)), "a collision count moves the hash");
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let labelled = |pairs: &[(&str, &str)]| PodTemplateSpec {
            metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plain = labelled(&[("app", "web")]);
        template = labelled(&[("app", "web"), (TEMPLATE_HASH, &a)]);
        assert!(same_template(&plain, &template));
        assert!(!same_template(&plain, &labelled(&[("app", "db"), (TEMPLATE_HASH, &a)])));
    }

    #[test]
    fn revisions_only_move_forward_and_keep_history() {
        let mut rs = ReplicaSet::default();
        assert!(set_revision(&mut rs, 1));
        assert!(set_revision(&mut rs, 3));
        assert!(!set_revision(&mut rs, 2));
        assert_eq!(revision(&rs), 3);
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY], "1");
    }
}
