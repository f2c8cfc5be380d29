//! `componentstatuses` (core v1 ComponentStatus, deprecated since 1.19 and still served in
//! 1.33): the health of the scheduler, the controller manager and the store, as
//! `kubectl get componentstatuses` shows it. Upstream probes each component's health port;
//! here the two controllers are healthy while their leader-election Lease is being renewed
//! (a leader exists and is alive), and the store while it answers.

use serde_json::{Value, json};
use styrman_store::{Store, keys};

/// Whether `kind` is ComponentStatus.
pub fn is(kind: &crate::kinds::Kind) -> bool {
    (kind.group, kind.kind) == ("", "ComponentStatus")
}

/// What kubectl prints as a warning, as upstream's deprecation notice.
pub const WARNING: &str = "v1 ComponentStatus is deprecated in v1.19+";

/// Every component's status, in upstream's order.
pub async fn all(store: &Store) -> Vec<Value> {
    let mut items = Vec::new();
    for (name, lease) in [
        ("controller-manager", "kube-controller-manager"),
        ("scheduler", "kube-scheduler"),
    ] {
        items.push(component(name, lease_health(store, lease).await));
    }
    let store_health = match store.current_revision().await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("store unavailable: {e}")),
    };
    items.push(component("etcd-0", store_health));
    items
}

fn component(name: &str, health: Result<(), String>) -> Value {
    let condition = match health {
        Ok(()) => json!({"type": "Healthy", "status": "True", "message": "ok"}),
        Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
    };
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    })
}

/// Healthy while the lease `kube-system/<name>` has a holder that renewed it within its
/// duration.
async fn lease_health(store: &Store, name: &str) -> Result<(), String> {
    let key = keys::object_key("leases", Some("kube-system"), name);
    let kv = store
        .get(&key)
        .await
        .map_err(|e| format!("store unavailable: {e}"))?
        .ok_or_else(|| format!("no leader has taken the lease kube-system/{name}"))?;
    let lease: Value = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    let spec = &lease["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    let renewed = spec["renewTime"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(15);
    match renewed {
        Some(renewed) if !holder.is_empty() => {
            let age = jiff::Timestamp::now().as_second() - renewed.as_second();
            if age <= duration {
                Ok(())
            } else {
                Err(format!(
                    "the leader {holder} last renewed the lease kube-system/{name} {age}s ago (duration {duration}s)"
                ))
            }
        }
        _ => Err(format!("no leader holds the lease kube-system/{name}")),
    }
}
