//! Admission that rewrites what is created, for plugins that need no store: here
//! DefaultTolerationSeconds, which lets every pod ride out a short node outage. (Priority
//! admission reads PriorityClasses and lives with the registry.)

use serde_json::{Value, json};

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
const DEFAULT_SECONDS: i64 = 300;

/// Adds NoExecute tolerations of the not-ready and unreachable taints for 300 s to a new pod
/// that does not tolerate them already, so the node lifecycle controller evicts its pods only
/// after five minutes of outage rather than at once.
pub fn default_toleration_seconds(pod: &mut Value) {
    let existing = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        existing.iter().any(|t| {
            let key_ok = t["key"].as_str().is_none_or(|k| k.is_empty() || k == key);
            let effect_ok = t["effect"].as_str().is_none_or(|e| e.is_empty() || e == "NoExecute");
            key_ok && effect_ok
        })
    };
    let missing: Vec<Value> = [NOT_READY, UNREACHABLE]
        .into_iter()
        .filter(|key| !tolerates(key))
        .map(|key| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEFAULT_SECONDS}))
        .collect();
    if missing.is_empty() {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        list.extend(missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_five_minutes_unless_they_say_otherwise() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        let keys: Vec<&str> = pod["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, [NOT_READY, UNREACHABLE]);
        assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], 300);

        let mut own = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}]}});
        default_toleration_seconds(&mut own);
        let list = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(list.len(), 2, "only not-ready is added: {list:?}");
        assert_eq!(list[0]["tolerationSeconds"], 0);

        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"].as_array().unwrap().len(),
            1,
            "tolerates every taint already"
        );
    }
}
