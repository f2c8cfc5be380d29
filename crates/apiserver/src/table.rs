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
            columns.push(col("Object", "string", |o| {
                let kind = o
                    .pointer("/involvedObject/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_lowercase();
                json!(format!(
                    "{kind}/{}",
                    o.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or("")
                ))
            }));
            columns.push(col("Message", "string", |o| text(o, "/message", "")));
            columns.push(wide("Name", "string", name_cell));
            return columns;
        }
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
            columns.push(col("Status", "string", |o| {
                if meta_str(o, "deletionTimestamp").is_some() {
                    return json!("Terminating");
                }
                text(o, "/status/phase", "Pending")
            }));
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

fn row(kind: &Kind, object: &Value, include: IncludeObject) -> Value {
    let cells: Vec<Value> = columns(kind).iter().map(|c| (c.cell)(object)).collect();
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    row
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

    fn c_slice(cells: &[Value], from: usize, to: usize) -> Vec<Value> {
        cells[from..to].to_vec()
    }
}
