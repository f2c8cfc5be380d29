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
                let labels = o.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
                let pairs: Vec<String> = labels
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

fn containers(o: &Value, field: &str) -> Value {
    let list = o.pointer("/spec/template/spec/containers").and_then(Value::as_array);
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
