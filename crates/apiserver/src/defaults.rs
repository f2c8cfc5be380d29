//! The defaults kube-apiserver fills in on create and update (Kubernetes' `defaults.go` per API
//! group), so `kubectl get -o yaml` shows what users expect: a Deployment's strategy, a pod's
//! restart and DNS policies, a container's pull policy, a Service's port protocol.

use serde_json::{Map, Value, json};

use crate::kinds::Kind;

/// Sets `map[key] = value` unless the key holds something already.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_string(), value);
        }
    }
}

/// The object at `path` below `root`, created as an empty object where missing.
fn object_at<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut here = root;
    for key in path {
        let map = here.as_object_mut()?;
        let next = map.entry(key.to_string()).or_insert_with(|| json!({}));
        if next.is_null() {
            *next = json!({});
        }
        here = next;
    }
    here.as_object_mut()
}

pub fn apply(kind: &Kind, object: &mut Value) {
    match (kind.group, kind.kind) {
        ("", "Pod") => pod_spec(object, &["spec"]),
        ("", "PodTemplate") => pod_spec(object, &["template", "spec"]),
        ("", "ReplicationController") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "replicas", json!(1));
            }
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("", "Service") => service(object),
        ("", "Secret") => {
            if let Some(map) = object.as_object_mut() {
                default(map, "type", json!("Opaque"));
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                default(spec, "strategy", json!({"type": "RollingUpdate"}));
                let strategy = spec.get_mut("strategy").and_then(Value::as_object_mut);
                if let Some(strategy) = strategy {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        default(strategy, "rollingUpdate", json!({}));
                        if let Some(ru) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                            default(ru, "maxSurge", json!("25%"));
                            default(ru, "maxUnavailable", json!("25%"));
                        }
                    }
                }
            }
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "replicas", json!(1));
            }
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("batch", "Job") => {
            job_spec(object, &["spec"]);
            pod_spec(object, &["spec", "template", "spec"]);
        }
        ("batch", "CronJob") => {
            if let Some(spec) = object_at(object, &["spec"]) {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
            }
            job_spec(object, &["spec", "jobTemplate", "spec"]);
            pod_spec(object, &["spec", "jobTemplate", "spec", "template", "spec"]);
        }
        _ => {}
    }
}

fn job_spec(object: &mut Value, path: &[&str]) {
    if let Some(spec) = object_at(object, path) {
        let parallel = spec.get("parallelism").is_some_and(|v| !v.is_null());
        let completions = spec.get("completions").is_some_and(|v| !v.is_null());
        if !parallel && !completions {
            spec.insert("completions".into(), json!(1));
        }
        default(spec, "parallelism", json!(1));
        default(spec, "backoffLimit", json!(6));
        default(spec, "completionMode", json!("NonIndexed"));
        default(spec, "suspend", json!(false));
        default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
}

fn pod_spec(object: &mut Value, path: &[&str]) {
    let Some(spec) = object_at(object, path) else {
        return;
    };
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                self::container(container);
            }
        }
    }
}

fn container(container: &mut Map<String, Value>) {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image).is_none_or(|t| t == "latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(container, "imagePullPolicy", json!(policy));
    default(container, "terminationMessagePath", json!("/dev/termination-log"));
    default(container, "terminationMessagePolicy", json!("File"));
    default(container, "resources", json!({}));
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(port, "protocol", json!("TCP"));
        }
    }
}

/// The tag of an image reference (`nginx:1.27` → `1.27`); `None` without one. A digest counts
/// as a tag: such images are never re-pulled by default either.
fn image_tag(image: &str) -> Option<&str> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

fn service(object: &mut Value) {
    let Some(spec) = object_at(object, &["spec"]) else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(port, "protocol", json!("TCP"));
            if let Some(p) = port.get("port").cloned() {
                default(port, "targetPort", p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "reg:5000/x:1.2"}]}}}});
        apply(kinds::find("apps", "v1", "deployments").unwrap(), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["terminationMessagePolicy"], "File");
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply(kinds::find("apps", "v1", "deployments").unwrap(), &mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn service_ports_default_target_and_protocol() {
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply(kinds::find("", "v1", "services").unwrap(), &mut s);
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
    }

    #[test]
    fn job_defaults() {
        let mut j = json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        apply(kinds::find("batch", "v1", "jobs").unwrap(), &mut j);
        assert_eq!(
            (
                j["spec"]["completions"].clone(),
                j["spec"]["parallelism"].clone(),
                j["spec"]["backoffLimit"].clone()
            ),
            (json!(1), json!(1), json!(6))
        );
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }
}
