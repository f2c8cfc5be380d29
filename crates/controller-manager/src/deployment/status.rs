//! A Deployment's status from its ReplicaSets, and the Available and Progressing conditions
//! `kubectl rollout status` and `kubectl describe` read, with upstream's reasons and messages.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::util::{max_unavailable, replicas, rs_replicas, rs_status};

pub const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

fn now() -> Time {
    let now = jiff::Timestamp::now();
    Time(now.round(jiff::Unit::Second).unwrap_or(now))
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// Sets a condition as upstream's SetDeploymentCondition: the transition time moves only
/// when the status does; the update time moves on every change.
pub fn set_condition(status: &mut DeploymentStatus, type_: &str, value: &str, reason: &str, message: String) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let existing = conditions.iter().position(|c| c.type_ == type_);
    if let Some(i) = existing {
        let c = &conditions[i];
        if c.status == value && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message.as_str()) {
            return;
        }
    }
    let now = now();
    let transition = existing
        .map(|i| &conditions[i])
        .filter(|c| c.status == value)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let updated = DeploymentCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now),
        last_transition_time: Some(transition),
    };
    match existing {
        Some(i) => conditions[i] = updated,
        None => conditions.push(updated),
    }
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// The replica counts and the Available condition (upstream's calculateStatus); the other
/// conditions are carried over from the stored status.
pub fn calculate(d: &Deployment, all: &[ReplicaSet], new: Option<&ReplicaSet>) -> DeploymentStatus {
    let current = d.status.clone().unwrap_or_default();
    let sum = |pick: fn(&ReplicaSet) -> i32| all.iter().map(pick).sum::<i32>();
    let available = sum(|rs| rs_status(rs).2);
    let desired = replicas(d);
    let nonzero = |n: i32| (n != 0).then_some(n);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(sum(|rs| rs_status(rs).0)),
        updated_replicas: nonzero(new.map_or(0, |rs| rs_status(rs).0)),
        ready_replicas: nonzero(sum(|rs| rs_status(rs).1)),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((desired - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= desired - max_unavailable(d) {
        set_condition(
            &mut status,
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        );
    } else {
        set_condition(
            &mut status,
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        );
    }
    // A ReplicaSet that cannot create pods shows through as the Deployment's failure.
    let failure = all.iter().find_map(|rs| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == REPLICA_FAILURE && c.status == "True")
            .cloned()
    });
    match failure {
        Some(f) => set_condition(
            &mut status,
            REPLICA_FAILURE,
            "True",
            f.reason.as_deref().unwrap_or(""),
            f.message.unwrap_or_default(),
        ),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// Every replica updated and available, and the newest spec observed (DeploymentComplete).
pub fn is_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation >= d.metadata.generation
}

/// Whether the rollout moved since the stored status (DeploymentProgressing).
fn progressed(d: &Deployment, status: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_pods = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_pods = status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0);
    status.updated_replicas > old.updated_replicas
        || new_pods < old_pods
        || status.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || status.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

fn deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref()?.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// Sets the Progressing condition as upstream's syncRolloutStatus does. Returns how long until
/// the deadline would pass, when the rollout is still under way, so the caller can look again.
pub fn set_progress(
    d: &Deployment,
    status: &mut DeploymentStatus,
    new: Option<&ReplicaSet>,
) -> Option<std::time::Duration> {
    let deadline = deadline(d)?;
    let name = new.and_then(|rs| rs.metadata.name.clone()).unwrap_or_default();
    let current = condition(status, PROGRESSING).cloned();
    let reason = current.as_ref().and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(PAUSED) {
        return None;
    }
    let done = status.replicas == status.updated_replicas && reason.as_deref() == Some(NEW_RS_AVAILABLE);
    if done {
        return None;
    }
    if is_complete(d, status) {
        set_condition(
            status,
            PROGRESSING,
            "True",
            NEW_RS_AVAILABLE,
            format!("ReplicaSet {name:?} has successfully progressed."),
        );
        return None;
    }
    if progressed(d, status) || current.is_none() {
        let message = format!("ReplicaSet {name:?} is progressing.");
        set_condition(status, PROGRESSING, "True", "ReplicaSetUpdated", message);
        // The update time moves with progress, even when the message stays.
        if let Some(c) = status.conditions.iter_mut().flatten().find(|c| c.type_ == PROGRESSING) {
            c.last_update_time = Some(now());
        }
    }
    let since = condition(status, PROGRESSING)
        .and_then(|c| c.last_update_time.clone())?
        .0;
    let expires = since + jiff::SignedDuration::from_secs(deadline.into());
    let now = jiff::Timestamp::now();
    if expires <= now {
        if reason.as_deref() != Some(TIMED_OUT) {
            set_condition(
                status,
                PROGRESSING,
                "False",
                TIMED_OUT,
                format!("ReplicaSet {name:?} has timed out progressing."),
            );
        }
        return None;
    }
    Some(expires.duration_since(now).unsigned_abs())
}

/// Whether a stored ReplicaSet counts as running pods (spec or status above zero).
pub fn is_active(rs: &ReplicaSet) -> bool {
    rs_replicas(rs) > 0
}
