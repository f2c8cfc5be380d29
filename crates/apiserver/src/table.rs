//! Table output (`meta.k8s.io/v1` Table): what `kubectl get` prints. Columns follow kubectl's
//! printers for the kinds that have one here; every other kind gets Name and Age.

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::object::{age, meta_str};

struct Column {
    name: &'static str,
    kind: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, kind: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        kind,
        priority: 0,
        cell,
    }
}

const fn wide(name: &'static str, kind: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        kind,
        priority: 1,
        cell,
    }
}

fn name_cell(o: &Value) -> Value {
    json!(meta_str(o, "name").unwrap_or(""))
}

fn age_cell(o: &Value) -> Value {
    json!(age(meta_str(o, "creationTimestamp")))
}

fn text(o: &Value, pointer: &str, default: &str) -> Value {
    json!(o.pointer(pointer).and_then(Value::as_str).unwrap_or(default))
}

fn count(o: &Value, pointer: &str) -> Value {
    json!(o.pointer(pointer).map_or(0, |v| match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }))
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn columns(kind: &Kind) -> Vec<Column> {
    let mut columns = vec![col("Name", "string", name_cell)];
    match (kind.group, kind.kind) {
        ("", "Namespace") => columns.push(col("Status", "string", |o| text(o, "/status/phase", ""))),
        ("", "Node") => {
            columns.push(col("Status", "string", node_status));
            columns.push(col("Roles", "string", |o| {
                let roles: Vec<String> = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                })
            }));
            columns.push(col("Age", "string", age_cell));
            columns.push(col("Version", "string", |o| {
                text(o, "/status/nodeInfo/kubeletVersion", "")
            }));
            columns.push(wide("Internal-IP", "string", |o| node_address(o, "InternalIP")));
            columns.push(wide("External-IP", "string", |o| node_address(o, "ExternalIP")));
            columns.push(wide("OS-Image", "string", |o| {
                text(o, "/status/nodeInfo/osImage", "<unknown>")
            }));
            columns.push(wide("Kernel-Version", "string", |o| {
                text(o, "/status/nodeInfo/kernelVersion", "<unknown>")
            }));
            columns.push(wide("Container-Runtime", "string", |o| {
                text(o, "/status/nodeInfo/containerRuntimeVersion", "<unknown>")
            }));
            return columns;
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            columns.push(col("Desired", "integer", |o| {
                json!(o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1))
            }));
            columns.push(col("Current", "integer", |o| json!(int(o, "/status/replicas"))));
            columns.push(col("Ready", "integer", |o| json!(int(o, "/status/readyReplicas"))));
            columns.push(col("Age", "string", age_cell));
            columns.push(wide("Containers", "string", |o| containers(o, "name")));
            columns.push(wide("Images", "string", |o| containers(o, "image")));
            return columns;
        }
        ("apps", "StatefulSet") => {
            columns.push(col("Ready", "string", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
                ))
            }));
        }
        ("apps", "DaemonSet") => {
            columns.push(col("Desired", "integer", |o| {
                json!(int(o, "/status/desiredNumberScheduled"))
            }));
            columns.push(col("Current", "integer", |o| {
                json!(int(o, "/status/currentNumberScheduled"))
            }));
            columns.push(col("Ready", "integer", |o| json!(int(o, "/status/numberReady"))));
            columns.push(col("Up-to-date", "integer", |o| {
                json!(int(o, "/status/updatedNumberScheduled"))
            }));
            columns.push(col("Available", "integer", |o| {
                json!(int(o, "/status/numberAvailable"))
            }));
            columns.push(col("Node Selector", "string", |o| {
                label_pairs(o.pointer("/spec/template/spec/nodeSelector"))
            }));
        }
        ("batch", "Job") => {
            columns.push(col("Status", "string", |o| {
                let done = |t: &str| {
                    o.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
                };
                json!(if done("Complete") {
                    "Complete"
                } else if done("Failed") {
                    "Failed"
                } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
                    "Suspended"
                } else {
                    "Running"
                })
            }));
            columns.push(col("Completions", "string", |o| {
                let want = o.pointer("/spec/completions").and_then(Value::as_i64);
                let got = int(o, "/status/succeeded");
                json!(match want {
                    Some(w) => format!("{got}/{w}"),
                    None => format!(
                        "{got}/1 of {}",
                        o.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(1)
                    ),
                })
            }));
        }
        ("batch", "CronJob") => {
            columns.push(col("Schedule", "string", |o| text(o, "/spec/schedule", "")));
            columns.push(col("Timezone", "string", |o| text(o, "/spec/timeZone", "<none>")));
            columns.push(col("Suspend", "boolean", |o| {
                json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false))
            }));
            columns.push(col("Active", "integer", |o| count(o, "/status/active")));
            columns.push(col("Last Schedule", "string", |o| {
                json!(
                    o.pointer("/status/lastScheduleTime")
                        .and_then(Value::as_str)
                        .map_or("<none>".to_string(), |t| age(Some(t)))
                )
            }));
        }
        ("", "Endpoints") => columns.push(col("Endpoints", "string", |o| {
            let mut shown = Vec::new();
            for subset in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
                let ports: Vec<i64> = subset["ports"]
                    .as_array()
                    .map(|p| p.iter().filter_map(|p| p["port"].as_i64()).collect())
                    .unwrap_or_default();
                for address in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = address["ip"].as_str().unwrap_or("");
                    if ports.is_empty() {
                        shown.push(ip.to_string());
                    }
                    shown.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                }
            }
            json!(if shown.is_empty() {
                "<none>".to_string()
            } else if shown.len() > 3 {
                format!("{} + {} more...", shown[..3].join(","), shown.len() - 3)
            } else {
                shown.join(",")
            })
        })),
        ("coordination.k8s.io", "Lease") => {
            columns.push(col("Holder", "string", |o| text(o, "/spec/holderIdentity", "")))
        }
        ("", "PersistentVolumeClaim") => {
            columns.push(col("Status", "string", |o| text(o, "/status/phase", "Pending")));
            columns.push(col("Volume", "string", |o| text(o, "/spec/volumeName", "")));
            columns.push(col("Capacity", "string", |o| text(o, "/status/capacity/storage", "")));
            columns.push(col("Storage Class", "string", |o| {
                text(o, "/spec/storageClassName", "")
            }));
        }
        ("networking.k8s.io", "Ingress") => {
            columns.push(col("Class", "string", |o| text(o, "/spec/ingressClassName", "<none>")));
            columns.push(col("Hosts", "string", |o| {
                let hosts: Vec<&str> = o
                    .pointer("/spec/rules")
                    .and_then(Value::as_array)
                    .map(|rules| rules.iter().filter_map(|r| r["host"].as_str()).collect())
                    .unwrap_or_default();
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                })
            }));
            columns.push(col("Address", "string", |o| {
                let ips: Vec<&str> = o
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .map(|i| {
                        i.iter()
                            .filter_map(|e| e["ip"].as_str().or_else(|| e["hostname"].as_str()))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(ips.join(","))
            }));
            columns.push(col("Ports", "string", |o| {
                json!(if o.pointer("/spec/tls").is_some() {
                    "80, 443"
                } else {
                    "80"
                })
            }));
        }
        ("networking.k8s.io", "IngressClass") => {
            columns.push(col("Controller", "string", |o| text(o, "/spec/controller", "")));
            columns.push(col("Parameters", "string", |o| {
                json!(
                    o.pointer("/spec/parameters/name")
                        .and_then(Value::as_str)
                        .unwrap_or("<none>")
                )
            }));
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            columns.push(col("Pod-Selector", "string", |o| {
                label_pairs(o.pointer("/spec/podSelector/matchLabels"))
            }));
        }
        ("policy", "PodDisruptionBudget") => {
            columns.push(col("Min Available", "string", |o| {
                intstr(o.pointer("/spec/minAvailable"))
            }));
            columns.push(col("Max Unavailable", "string", |o| {
                intstr(o.pointer("/spec/maxUnavailable"))
            }));
            columns.push(col("Allowed Disruptions", "integer", |o| {
                json!(int(o, "/status/disruptionsAllowed"))
            }));
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") | ("", "LimitRange") => {
            columns.push(col("Created At", "date", |o| {
                text(o, "/metadata/creationTimestamp", "")
            }));
            return columns;
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            columns.push(col("Role", "string", |o| {
                json!(format!(
                    "{}/{}",
                    o.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or(""),
                    o.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("")
                ))
            }));
            columns.push(col("Age", "string", age_cell));
            columns.push(wide("Users", "string", |o| subjects(o, "User")));
            columns.push(wide("Groups", "string", |o| subjects(o, "Group")));
            columns.push(wide("ServiceAccounts", "string", |o| subjects(o, "ServiceAccount")));
            return columns;
        }
        ("storage.k8s.io", "StorageClass") => {
            columns.push(col("Provisioner", "string", |o| text(o, "/provisioner", "")));
            columns.push(col("ReclaimPolicy", "string", |o| text(o, "/reclaimPolicy", "Delete")));
            columns.push(col("VolumeBindingMode", "string", |o| {
                text(o, "/volumeBindingMode", "Immediate")
            }));
            columns.push(col("AllowVolumeExpansion", "boolean", |o| {
                json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false))
            }));
        }
        ("", "PersistentVolume") => {
            columns.push(col("Capacity", "string", |o| text(o, "/spec/capacity/storage", "")));
            columns.push(col("Access Modes", "string", access_modes));
            columns.push(col("Reclaim Policy", "string", |o| {
                text(o, "/spec/persistentVolumeReclaimPolicy", "")
            }));
            columns.push(col("Status", "string", |o| text(o, "/status/phase", "")));
            columns.push(col("Claim", "string", |o| {
                match (
                    o.pointer("/spec/claimRef/namespace").and_then(Value::as_str),
                    o.pointer("/spec/claimRef/name").and_then(Value::as_str),
                ) {
                    (Some(ns), Some(name)) => json!(format!("{ns}/{name}")),
                    _ => json!(""),
                }
            }));
            columns.push(col("StorageClass", "string", |o| text(o, "/spec/storageClassName", "")));
        }
        ("", "ResourceQuota") => {
            columns.push(col("Age", "string", age_cell));
            columns.push(col("Request", "string", |o| quota(o, false)));
            columns.push(col("Limit", "string", |o| quota(o, true)));
            return columns;
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            columns.push(col("AddressType", "string", |o| text(o, "/addressType", "")));
            columns.push(col("Ports", "string", |o| {
                let ports: Vec<String> = o
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|p| {
                        p.iter()
                            .filter_map(|p| p["port"].as_i64())
                            .map(|p| p.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                })
            }));
            columns.push(col("Endpoints", "string", |o| {
                let addresses: Vec<&str> = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .map(|e| {
                        e.iter()
                            .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                            .filter_map(Value::as_str)
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if addresses.is_empty() {
                    "<unset>".to_string()
                } else {
                    addresses.join(",")
                })
            }));
        }
        ("apps", "ControllerRevision") => {
            columns.push(col("Controller", "string", |o| {
                let owner = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|refs| refs.iter().find(|r| r["controller"] == true));
                json!(owner.map_or("<none>".to_string(), |r| format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or("").to_lowercase(),
                    r["name"].as_str().unwrap_or("")
                )))
            }));
            columns.push(col("Revision", "integer", |o| json!(int(o, "/revision"))));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            columns.push(col("Reference", "string", |o| {
                json!(format!(
                    "{}/{}",
                    o.pointer("/spec/scaleTargetRef/kind")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    o.pointer("/spec/scaleTargetRef/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ))
            }));
            columns.push(col("Targets", "string", |o| {
                let target = o
                    .pointer("/spec/metrics/0/resource/target/averageUtilization")
                    .or_else(|| o.pointer("/spec/targetCPUUtilizationPercentage"))
                    .and_then(Value::as_i64);
                let current = o
                    .pointer("/status/currentMetrics/0/resource/current/averageUtilization")
                    .or_else(|| o.pointer("/status/currentCPUUtilizationPercentage"))
                    .and_then(Value::as_i64);
                json!(match (current, target) {
                    (Some(c), Some(t)) => format!("cpu: {c}%/{t}%"),
                    (None, Some(t)) => format!("cpu: <unknown>/{t}%"),
                    _ => "<none>".to_string(),
                })
            }));
            columns.push(col("MinPods", "integer", |o| {
                json!(o.pointer("/spec/minReplicas").and_then(Value::as_i64).unwrap_or(1))
            }));
            columns.push(col("MaxPods", "integer", |o| json!(int(o, "/spec/maxReplicas"))));
            columns.push(col("Replicas", "integer", |o| json!(int(o, "/status/currentReplicas"))));
        }
        ("node.k8s.io", "RuntimeClass") => columns.push(col("Handler", "string", |o| text(o, "/handler", ""))),
        ("storage.k8s.io", "CSIDriver") => {
            columns.push(col("AttachRequired", "boolean", |o| {
                json!(
                    o.pointer("/spec/attachRequired")
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                )
            }));
            columns.push(col("PodInfoOnMount", "boolean", |o| {
                json!(
                    o.pointer("/spec/podInfoOnMount")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                )
            }));
        }
        ("storage.k8s.io", "VolumeAttachment") => {
            columns.push(col("Attacher", "string", |o| text(o, "/spec/attacher", "")));
            columns.push(col("PV", "string", |o| {
                text(o, "/spec/source/persistentVolumeName", "")
            }));
            columns.push(col("Node", "string", |o| text(o, "/spec/nodeName", "")));
            columns.push(col("Attached", "boolean", |o| {
                json!(o.pointer("/status/attached").and_then(Value::as_bool).unwrap_or(false))
            }));
        }
        ("", "PodTemplate") => {
            columns.push(col("Containers", "string", |o| template_containers(o, "name")));
            columns.push(col("Images", "string", |o| template_containers(o, "image")));
            columns.push(col("Pod Labels", "string", |o| {
                label_pairs(o.pointer("/template/metadata/labels"))
            }));
            return columns;
        }
        ("", "ComponentStatus") => {
            columns.push(col("Status", "string", |o| {
                let healthy = o["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Healthy" && c["status"] == "True"));
                json!(if healthy { "Healthy" } else { "Unhealthy" })
            }));
            columns.push(col("Message", "string", |o| text(o, "/conditions/0/message", "")));
            columns.push(col("Error", "string", |o| text(o, "/conditions/0/error", "")));
            return columns;
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            columns.push(col("Value", "integer", |o| json!(int(o, "/value"))));
            columns.push(col("Global-Default", "boolean", |o| {
                json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false))
            }));
        }
        ("", "Event") => {
            columns.clear();
            columns.push(col("Last Seen", "string", |o| {
                let t = o
                    .get("lastTimestamp")
                    .and_then(Value::as_str)
                    .or_else(|| o.get("eventTime").and_then(Value::as_str));
                json!(age(t.or_else(|| meta_str(o, "creationTimestamp"))))
            }));
            columns.push(col("Type", "string", |o| text(o, "/type", "")));
            columns.push(col("Reason", "string", |o| text(o, "/reason", "")));
            columns.push(col("Object", "string", |o| event_object(o, "involvedObject")));
            columns.push(col("Message", "string", |o| text(o, "/message", "")));
            columns.push(wide("Name", "string", name_cell));
            return columns;
        }
        // The same printer as core events upstream (one internal type behind both groups).
        ("events.k8s.io", "Event") => {
            columns.clear();
            columns.push(col("Last Seen", "string", |o| {
                let t = o
                    .pointer("/series/lastObservedTime")
                    .or_else(|| o.get("deprecatedLastTimestamp"))
                    .or_else(|| o.get("eventTime"))
                    .and_then(Value::as_str);
                json!(age(t.or_else(|| meta_str(o, "creationTimestamp"))))
            }));
            columns.push(col("Type", "string", |o| text(o, "/type", "")));
            columns.push(col("Reason", "string", |o| text(o, "/reason", "")));
            columns.push(col("Object", "string", |o| event_object(o, "regarding")));
            columns.push(col("Message", "string", |o| text(o, "/note", "")));
            columns.push(wide("Name", "string", name_cell));
            return columns;
        }
        ("storage.k8s.io", "CSINode") => columns.push(col("Drivers", "integer", |o| count(o, "/spec/drivers"))),
        ("", "ConfigMap") => columns.push(col("Data", "integer", |o| {
            json!(count(o, "/data").as_u64().unwrap_or(0) + count(o, "/binaryData").as_u64().unwrap_or(0))
        })),
        ("", "Secret") => {
            columns.push(col("Type", "string", |o| text(o, "/type", "")));
            columns.push(col("Data", "integer", |o| count(o, "/data")));
        }
        ("", "ServiceAccount") => columns.push(col("Secrets", "integer", |o| count(o, "/secrets"))),
        ("", "Pod") => {
            columns.push(col("Ready", "string", |o| {
                let total = o
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let ready = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
                json!(format!("{ready}/{total}"))
            }));
            columns.push(col("Status", "string", |o| json!(pod_status_reason(o))));
            columns.push(col("Restarts", "string", |o| {
                let restarts: i64 = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .map_or(0, |s| s.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum());
                json!(restarts.to_string())
            }));
            columns.push(col("Age", "string", age_cell));
            columns.push(wide("IP", "string", |o| text(o, "/status/podIP", "<none>")));
            columns.push(wide("Node", "string", |o| text(o, "/spec/nodeName", "<none>")));
            columns.push(wide("Nominated Node", "string", |o| {
                text(o, "/status/nominatedNodeName", "<none>")
            }));
            columns.push(wide("Readiness Gates", "string", |_| json!("<none>")));
            return columns;
        }
        ("apps", "Deployment") => {
            columns.push(col("Ready", "string", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }));
            columns.push(col("Up-to-date", "integer", |o| {
                json!(int(o, "/status/updatedReplicas"))
            }));
            columns.push(col("Available", "integer", |o| {
                json!(int(o, "/status/availableReplicas"))
            }));
            columns.push(col("Age", "string", age_cell));
            columns.push(wide("Containers", "string", |o| containers(o, "name")));
            columns.push(wide("Images", "string", |o| containers(o, "image")));
            columns.push(wide("Selector", "string", |o| {
                label_pairs(o.pointer("/spec/selector/matchLabels"))
            }));
            return columns;
        }
        ("", "Service") => {
            columns.push(col("Type", "string", |o| text(o, "/spec/type", "ClusterIP")));
            columns.push(col("Cluster-IP", "string", |o| text(o, "/spec/clusterIP", "<none>")));
            columns.push(col("External-IP", "string", |_| json!("<none>")));
            columns.push(col("Port(s)", "string", |o| {
                let ports = o.pointer("/spec/ports").and_then(Value::as_array);
                let shown: Vec<String> = ports
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                let proto = p["protocol"].as_str().unwrap_or("TCP");
                                match p["nodePort"].as_i64() {
                                    Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                    None => format!("{}/{proto}", p["port"]),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if shown.is_empty() {
                    "<none>".to_string()
                } else {
                    shown.join(",")
                })
            }));
        }
        _ => {}
    }
    columns.push(col("Age", "string", age_cell));
    columns
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, with `SchedulingDisabled` for a
/// cordoned node, as kubectl prints it.
fn node_status(o: &Value) -> Value {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        json!(format!("{ready},SchedulingDisabled"))
    } else {
        json!(ready)
    }
}

fn node_address(o: &Value, kind: &str) -> Value {
    let address = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == kind))
        .and_then(|a| a["address"].as_str());
    json!(address.unwrap_or("<none>"))
}

/// An int-or-string field as text, `N/A` when unset.
fn intstr(value: Option<&Value>) -> Value {
    json!(match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".to_string(),
    })
}

/// The subjects of a binding of one kind, comma-separated.
fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = o
        .get("subjects")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter(|s| s["kind"] == kind)
                .map(|s| match (kind, s["namespace"].as_str()) {
                    ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s["name"].as_str().unwrap_or("")),
                    _ => s["name"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    json!(names.join(", "))
}

/// `RWO,ROX,RWX,RWOP` from `spec.accessModes`.
fn access_modes(o: &Value) -> Value {
    let short: Vec<&str> = o
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| match m.as_str() {
                    Some("ReadWriteOnce") => Some("RWO"),
                    Some("ReadOnlyMany") => Some("ROX"),
                    Some("ReadWriteMany") => Some("RWX"),
                    Some("ReadWriteOncePod") => Some("RWOP"),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    json!(short.join(","))
}

/// A quota's used/hard pairs for requests (or limits), as `kubectl get quota` shows them.
fn quota(o: &Value, limits: bool) -> Value {
    let hard = o
        .pointer("/status/hard")
        .or_else(|| o.pointer("/spec/hard"))
        .and_then(Value::as_object);
    let used = o.pointer("/status/used").and_then(Value::as_object);
    let pairs: Vec<String> = hard
        .map(|h| {
            h.iter()
                .filter(|(k, _)| k.starts_with("limits.") == limits)
                .map(|(k, v)| {
                    let u = used.and_then(|u| u.get(k)).and_then(Value::as_str).unwrap_or("0");
                    format!(
                        "{k}: {u}/{}",
                        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!(pairs.join(", "))
}

fn template_containers(o: &Value, field: &str) -> Value {
    let list = o.pointer("/template/spec/containers").and_then(Value::as_array);
    let names: Vec<&str> = list
        .map(|l| l.iter().filter_map(|c| c[field].as_str()).collect())
        .unwrap_or_default();
    json!(names.join(","))
}

/// A map of labels as `k=v,k2=v2`, or `<none>`.
fn label_pairs(map: Option<&Value>) -> Value {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    json!(if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    })
}

fn containers(o: &Value, field: &str) -> Value {
    let list = o.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    let list = list.or_else(|| {
        o.pointer("/spec/jobTemplate/spec/template/spec/containers")
            .and_then(Value::as_array)
    });
    let names: Vec<&str> = list
        .map(|l| l.iter().filter_map(|c| c[field].as_str()).collect())
        .unwrap_or_default();
    json!(names.join(","))
}

/// How much of each object rides along in the rows (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// Column definitions (omitted when `with_headers` is false, as in watch events after the first).
fn column_definitions(kind: &Kind) -> Value {
    let defs: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            let mut d =
                json!({"name": c.name, "type": c.kind, "format": "", "description": "", "priority": c.priority});
            if c.name == "Name" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    Value::Array(defs)
}

/// An event's object as kubectl shows it: `pod/web-1`.
fn event_object(event: &Value, reference: &str) -> Value {
    let object = &event[reference];
    let kind = object["kind"].as_str().unwrap_or("").to_lowercase();
    json!(format!("{kind}/{}", object["name"].as_str().unwrap_or("")))
}

fn row(kind: &Kind, object: &Value, include: IncludeObject) -> Value {
    let cells: Vec<Value> = columns(kind).iter().map(|c| (c.cell)(object)).collect();
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => row["object"] = partial_metadata(object),
    }
    row
}

/// The object as `meta.k8s.io/v1` PartialObjectMetadata: its metadata only, what metadata-only
/// clients (garbage collectors, kube-rs `metadata_watcher`) ask for.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `objects`; `list_metadata` is the list's metadata (resourceVersion, continue).
pub fn table(
    kind: &Kind,
    objects: &[Value],
    list_metadata: Value,
    include: IncludeObject,
    with_headers: bool,
) -> Value {
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_metadata});
    if with_headers {
        t["columnDefinitions"] = column_definitions(kind);
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t["rows"] = Value::Array(objects.iter().map(|o| row(kind, o, include)).collect());
    t
}

/// The pod's STATUS column, as kubectl's `printPod` works it out: the phase (or the pod's
/// reason), then `Init:...` while init containers run or fail, else the reason of the last
/// container that is waiting or terminated, `Terminating` once deleted.
fn pod_status_reason(o: &Value) -> String {
    let mut reason = o
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or_else(|| o.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let statuses = |field: &str| o.pointer(field).and_then(Value::as_array).cloned().unwrap_or_default();
    let terminated_reason = |t: &Value| -> String {
        match t["reason"].as_str().filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None if t["signal"].as_i64().unwrap_or(0) != 0 => format!("Signal:{}", t["signal"]),
            None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
        }
    };
    let init_specs = o
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut initializing = false;
    for (i, c) in statuses("/status/initContainerStatuses").iter().enumerate() {
        let sidecar = init_specs
            .iter()
            .any(|s| s["name"] == c["name"] && s["restartPolicy"] == "Always");
        let state = &c["state"];
        if let Some(t) = state.get("terminated") {
            if t["exitCode"] == 0 {
                continue;
            }
            reason = format!("Init:{}", terminated_reason(t));
        } else if sidecar && c["started"] == true {
            continue;
        } else if let Some(w) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{w}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in statuses("/status/containerStatuses").iter().rev() {
            let state = &c["state"];
            if let Some(w) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = w.to_string();
            } else if let Some(t) = state.get("terminated") {
                reason = terminated_reason(t);
            } else if state.get("running").is_some() && c["ready"] == true {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            reason = if ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if meta_str(o, "deletionTimestamp").is_some() {
        reason = if o.pointer("/status/reason").and_then(Value::as_str) == Some("NodeLost") {
            "Unknown".to_string()
        } else {
            "Terminating".to_string()
        };
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_print_like_kubectl() {
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let t = table(pods, &[pod], json!({}), IncludeObject::Metadata, true);
        let names: Vec<_> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(t["rows"][0]["cells"][1], "1/2");
        assert_eq!(t["rows"][0]["cells"][3], "3");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    fn cells(group: &str, version: &str, plural: &str, object: Value) -> Vec<Value> {
        let kind = crate::kinds::find(group, version, plural).unwrap();
        table(kind, &[object], json!({}), IncludeObject::None, true)["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn nodes_and_workloads() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let c = cells("", "v1", "nodes", node);
        assert_eq!(&c[..2], &[json!("n1"), json!("Ready,SchedulingDisabled")]);
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[4], "v1.33.0");
        assert_eq!(c[5], "10.0.0.1");
        let rs = cells(
            "apps",
            "v1",
            "replicasets",
            json!({"metadata": {"name": "r"}, "spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}}),
        );
        assert_eq!(&c_slice(&rs, 1, 4), &[json!(3), json!(2), json!(1)]);
        let job = cells(
            "batch",
            "v1",
            "jobs",
            json!({"metadata": {"name": "j"}, "spec": {"completions": 2},
            "status": {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!(&c_slice(&job, 1, 3), &[json!("Complete"), json!("2/2")]);
    }

    #[test]
    fn bindings_quotas_and_autoscalers() {
        let rb = cells(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            json!({"metadata": {"name": "rb"},
            "roleRef": {"kind": "Role", "name": "r1"},
            "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]}),
        );
        assert_eq!(rb[1], "Role/r1");
        assert_eq!((rb[3].as_str(), rb[5].as_str()), (Some("bob"), Some("ns/sa")));
        let q = cells(
            "",
            "v1",
            "resourcequotas",
            json!({"metadata": {"name": "q"},
            "spec": {"hard": {"pods": "10", "limits.cpu": "2"}}, "status": {"hard": {"pods": "10", "limits.cpu": "2"}, "used": {"pods": "3"}}}),
        );
        assert_eq!(
            (q[2].as_str(), q[3].as_str()),
            (Some("pods: 3/10"), Some("limits.cpu: 0/2"))
        );
        let hpa = cells(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            json!({"metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        );
        assert_eq!(
            &c_slice(&hpa, 1, 5),
            &[json!("Deployment/web"), json!("cpu: <unknown>/80%"), json!(2), json!(5)]
        );
        let pdb = cells(
            "policy",
            "v1",
            "poddisruptionbudgets",
            json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1}}),
        );
        assert_eq!(&c_slice(&pdb, 1, 3), &[json!("1"), json!("N/A")]);
    }

    fn c_slice(cells: &[Value], from: usize, to: usize) -> Vec<Value> {
        cells[from..to].to_vec()
    }

    #[test]
    fn pod_status_reads_as_kubectl_prints_it() {
        let pod = |status: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": status});
        let completed = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(pod_status_reason(&completed), "Completed");
        let crash = pod(
            json!({"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(pod_status_reason(&crash), "CrashLoopBackOff");
        let mut init =
            pod(json!({"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}));
        init["spec"]["initContainers"] = json!([{"name": "i"}]);
        assert_eq!(pod_status_reason(&init), "Init:0/1");
        let mut gone = pod(json!({"phase": "Running"}));
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_status_reason(&gone), "Terminating");
    }
}
