//! A pod's status from what the runtime reports, as the kubelet's `generateAPIPodStatus`
//! builds it: each container's state (waiting with a reason, running, terminated), its last
//! state, restart count, image and ids; the phase by upstream's `getPhase` rules; and the
//! conditions PodReadyToStartContainers, Initialized, ContainersReady and Ready, each keeping
//! its lastTransitionTime while its status stays the same.

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// One container of the pod as the runtime holds it.
#[derive(Clone, Debug)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub status: cri::ContainerStatus,
}

impl Observed {
    pub fn running(&self) -> bool {
        self.status.state == cri::ContainerState::ContainerRunning as i32
    }
    pub fn exited(&self) -> bool {
        self.status.state == cri::ContainerState::ContainerExited as i32
    }
    pub fn exit_code(&self) -> i32 {
        self.status.exit_code
    }
}

/// RFC 3339 (seconds) of a CRI time in nanoseconds since the epoch.
pub fn time(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    match jiff::Timestamp::from_nanosecond(i128::from(nanos)) {
        Ok(t) => Value::String(t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
        Err(_) => Value::Null,
    }
}

pub fn now() -> String {
    let t = jiff::Timestamp::now();
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

fn terminated(c: &Observed) -> Value {
    let reason = if c.status.reason.is_empty() {
        if c.status.exit_code == 0 { "Completed" } else { "Error" }.to_string()
    } else {
        c.status.reason.clone()
    };
    let mut t = json!({
        "exitCode": c.status.exit_code,
        "reason": reason,
        "startedAt": time(c.status.started_at),
        "finishedAt": time(c.status.finished_at),
        "containerID": format!("containerd://{}", c.id),
    });
    if !c.status.message.is_empty() {
        t["message"] = Value::String(c.status.message.clone());
    }
    json!({"terminated": t})
}

/// The status of `spec`'s container, from its latest and previous runtime containers;
/// `waiting` is a reason (and message) the worker has for it when it is not running.
pub fn container_status(
    spec: &Container,
    latest: Option<&Observed>,
    previous: Option<&Observed>,
    waiting: Option<&(String, String)>,
    health: Option<&super::probes::Health>,
) -> Value {
    let waiting_state = |reason: &str, message: &str| {
        let mut w = json!({"reason": reason});
        if !message.is_empty() {
            w["message"] = Value::String(message.to_string());
        }
        json!({"waiting": w})
    };
    let (state, last_state) = match (latest, waiting) {
        (Some(c), _) if c.running() => (
            json!({"running": {"startedAt": time(c.status.started_at)}}),
            previous.filter(|p| p.exited()).map(terminated),
        ),
        // Exited and coming back (back-off, or an error starting it again).
        (Some(c), Some((reason, message))) if c.exited() => (waiting_state(reason, message), Some(terminated(c))),
        (Some(c), None) if c.exited() => (terminated(c), previous.filter(|p| p.exited()).map(terminated)),
        (_, Some((reason, message))) => (
            waiting_state(reason, message),
            previous.filter(|p| p.exited()).map(terminated),
        ),
        _ => (waiting_state("ContainerCreating", ""), None),
    };
    let running = latest.is_some_and(Observed::running);
    // Started once its startup probe passed, ready once its readiness probe did (at once
    // without them).
    let started = running && health.is_none_or(|h| h.started);
    let ready = running && health.is_none_or(|h| h.ready);
    let mut status = json!({
        "name": spec.name,
        "state": state,
        "lastState": last_state.unwrap_or_else(|| json!({})),
        "ready": ready,
        "restartCount": latest.map(|c| c.attempt).unwrap_or(0),
        "image": latest
            .map(|c| c.status.image.as_ref().map(|i| i.image.clone()).unwrap_or_default())
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| spec.image.clone().unwrap_or_default()),
        "imageID": latest.map(|c| c.status.image_ref.clone()).unwrap_or_default(),
        "started": started,
    });
    if let Some(c) = latest {
        status["containerID"] = Value::String(format!("containerd://{}", c.id));
    }
    status
}

/// The pod's phase from its containers' statuses, by upstream's `getPhase`.
pub fn phase(restart_policy: &str, initialized: bool, init_failed: bool, statuses: &[Value]) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = &s["state"];
        if state.get("running").is_some() {
            running += 1;
        } else if let Some(t) = state.get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// A condition, keeping the transition time `pod` already has for it when its status did not
/// change.
pub fn condition(pod: &Pod, type_: &str, status: bool, reason: Option<&str>, message: Option<String>) -> Value {
    let status = if status { "True" } else { "False" };
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match previous {
        Some(p) if p.status == status => p
            .last_transition_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(now),
        _ => now(),
    };
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
    if let Some(r) = reason {
        c["reason"] = Value::String(r.into());
    }
    if let Some(m) = message {
        c["message"] = Value::String(m);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(state: Value, last: Value) -> Value {
        json!({"state": state, "lastState": last})
    }

    #[test]
    fn phases_follow_upstreams_rules() {
        let running = s(json!({"running": {}}), json!({}));
        let ok = s(json!({"terminated": {"exitCode": 0}}), json!({}));
        let failed = s(json!({"terminated": {"exitCode": 1}}), json!({}));
        let creating = s(json!({"waiting": {"reason": "ContainerCreating"}}), json!({}));
        let backoff = s(
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"exitCode": 1}}),
        );
        assert_eq!(phase("Always", true, false, std::slice::from_ref(&running)), "Running");
        assert_eq!(
            phase("Always", true, false, &[running.clone(), creating.clone()]),
            "Pending"
        );
        assert_eq!(phase("Never", true, false, std::slice::from_ref(&ok)), "Succeeded");
        assert_eq!(phase("Never", true, false, &[ok.clone(), failed.clone()]), "Failed");
        assert_eq!(phase("OnFailure", true, false, &[failed]), "Running");
        assert_eq!(phase("Always", true, false, &[backoff]), "Running");
        assert_eq!(phase("Always", false, false, &[running]), "Pending");
        assert_eq!(phase("Never", true, true, &[creating]), "Failed");
    }
}
