//! Service address allocation: a ClusterIP from the service CIDR (default 10.96.0.0/12) and a
//! node port (30000-32767) for each port of a NodePort or LoadBalancer service, with clear
//! errors when a requested one is taken or out of range.
//!
//! What is in use is read from the stored services under a lock, so allocations in this API
//! server never collide. (Several API servers on one etcd need a shared allocation record;
//! that comes with HA.)

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use styrman_store::{RangeRequest, Store, keys};
use tokio::sync::Mutex;

use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult, Cause};

pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

#[derive(Default)]
pub struct Allocator {
    lock: Mutex<()>,
}

struct InUse {
    ips: HashSet<Ipv4Addr>,
    node_ports: HashSet<i64>,
}

impl Allocator {
    /// Fills in `spec.clusterIP(s)` and node ports on a new or updated service. `previous` is
    /// the stored service on update (its addresses stay). The returned guard must be held
    /// until the service is stored, so the next allocation sees this one.
    pub async fn assign(
        &self,
        store: &Store,
        kind: &Kind,
        service: &mut Value,
        previous: Option<&Value>,
    ) -> ApiResult<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.lock.lock().await;
        let mut in_use = in_use(store, kind).await?;
        if let Some(prev) = previous {
            // The service's own addresses are not a conflict with itself.
            release(&mut in_use, prev);
        }
        assign(kind, service, previous, &in_use)?;
        Ok(guard)
    }
}

async fn in_use(store: &Store, kind: &Kind) -> ApiResult<InUse> {
    let all = store
        .range(RangeRequest {
            prefix: keys::prefix(kind.storage, None),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::from_store(e, kind, ""))?;
    let mut used = InUse {
        ips: HashSet::new(),
        node_ports: HashSet::new(),
    };
    for kv in all.kvs {
        let Ok(service) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if let Some(ip) = service
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            used.ips.insert(ip);
        }
        for port in ports(&service) {
            if let Some(np) = port.get("nodePort").and_then(Value::as_i64) {
                used.node_ports.insert(np);
            }
        }
    }
    Ok(used)
}

fn release(in_use: &mut InUse, service: &Value) {
    if let Some(ip) = service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
    {
        in_use.ips.remove(&ip);
    }
    for port in ports(service) {
        if let Some(np) = port.get("nodePort").and_then(Value::as_i64) {
            in_use.node_ports.remove(&np);
        }
    }
}

fn ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn invalid(kind: &Kind, service: &Value, field: String, message: String) -> ApiError {
    ApiError::invalid(
        kind,
        crate::object::name(service),
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field,
        }],
    )
}

fn assign(kind: &Kind, service: &mut Value, previous: Option<&Value>, in_use: &InUse) -> ApiResult<()> {
    let service_type = service
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let old_ip = previous
        .and_then(|p| p.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let asked = service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if service_type != "ExternalName" {
        let ip = match (asked.as_str(), old_ip) {
            ("None", _) => "None".to_string(),
            ("", Some(old)) => old,
            (a, Some(old)) if a == old => old,
            (_, Some(old)) => {
                return Err(invalid(
                    kind,
                    service,
                    "spec.clusterIP".into(),
                    format!("Invalid value: \"{asked}\": field is immutable (was {old})"),
                ));
            }
            ("", None) => allocate_ip(in_use)
                .ok_or_else(|| {
                    invalid(
                        kind,
                        service,
                        "spec.clusterIP".into(),
                        "Internal error: range is full".into(),
                    )
                })?
                .to_string(),
            (a, None) => {
                let ip: Ipv4Addr = a.parse().map_err(|_| {
                    invalid(
                        kind,
                        service,
                        "spec.clusterIP".into(),
                        format!(
                            "Invalid value: \"{a}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                        ),
                    )
                })?;
                if !in_cidr(ip) {
                    return Err(invalid(
                        kind,
                        service,
                        "spec.clusterIP".into(),
                        format!(
                            "Invalid value: \"{a}\": failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {}/{}",
                            SERVICE_CIDR.0, SERVICE_CIDR.1
                        ),
                    ));
                }
                if in_use.ips.contains(&ip) {
                    return Err(invalid(
                        kind,
                        service,
                        "spec.clusterIP".into(),
                        format!("Invalid value: \"{a}\": failed to allocate IP {a}: provided IP is already allocated"),
                    ));
                }
                a.to_string()
            }
        };
        service["spec"]["clusterIP"] = json!(ip);
        service["spec"]["clusterIPs"] = json!([ip]);
        if ip != "None" {
            service["spec"]["ipFamilies"] = json!(["IPv4"]);
            service["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    let wants_node_ports = matches!(service_type.as_str(), "NodePort" | "LoadBalancer");
    let old_ports = previous.map(ports).unwrap_or_default();
    let mut taken = in_use.node_ports.clone();
    let mut new_ports = ports(service);
    for (i, port) in new_ports.iter_mut().enumerate() {
        if !wants_node_ports {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
            continue;
        }
        let requested = port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
        let kept = old_ports
            .iter()
            .find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"))
            .and_then(|o| o.get("nodePort"))
            .and_then(Value::as_i64);
        let node_port = match requested.or(kept) {
            Some(np) => {
                if !NODE_PORTS.contains(&np) {
                    return Err(invalid(
                        kind,
                        service,
                        format!("spec.ports[{i}].nodePort"),
                        format!(
                            "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            NODE_PORTS.start(),
                            NODE_PORTS.end()
                        ),
                    ));
                }
                if taken.contains(&np) {
                    return Err(invalid(
                        kind,
                        service,
                        format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {np}: provided port is already allocated"),
                    ));
                }
                np
            }
            None => NODE_PORTS.clone().find(|p| !taken.contains(p)).ok_or_else(|| {
                invalid(
                    kind,
                    service,
                    format!("spec.ports[{i}].nodePort"),
                    "Internal error: range is full".into(),
                )
            })?,
        };
        taken.insert(node_port);
        port["nodePort"] = json!(node_port);
    }
    if !new_ports.is_empty() {
        service["spec"]["ports"] = Value::Array(new_ports);
    }
    Ok(())
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    let (base, bits) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - bits);
    u32::from(ip) & mask == u32::from(base) & mask
}

/// The lowest free address of the range, after the network address and the first host
/// address (10.96.0.1 belongs to the `kubernetes` service).
fn allocate_ip(in_use: &InUse) -> Option<Ipv4Addr> {
    let (base, bits) = SERVICE_CIDR;
    let first = u32::from(base) + 2;
    let last = u32::from(base) + (1u32 << (32 - bits)) - 2;
    (first..=last).map(Ipv4Addr::from).find(|ip| !in_use.ips.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> &'static Kind {
        crate::kinds::find("", "v1", "services").unwrap()
    }

    #[test]
    fn assigns_and_refuses_conflicts() {
        let mut in_use = InUse {
            ips: HashSet::new(),
            node_ports: HashSet::new(),
        };
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}, {"port": 443}]}});
        assign(services(), &mut svc, None, &in_use).unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30000);
        release(&mut in_use, &json!({}));
        in_use.node_ports.insert(30001);
        in_use.ips.insert("10.96.0.2".parse().unwrap());
        let mut clash = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}});
        let err = assign(services(), &mut clash, None, &in_use).unwrap_err();
        assert!(
            err.message
                .contains("spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"),
            "{}",
            err.message
        );
        let mut out_of_range =
            json!({"metadata": {"name": "c"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(
            assign(services(), &mut out_of_range, None, &in_use)
                .unwrap_err()
                .message
                .contains("valid range")
        );
        let mut ip_clash =
            json!({"metadata": {"name": "d"}, "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}});
        assert!(
            assign(services(), &mut ip_clash, None, &in_use)
                .unwrap_err()
                .message
                .contains("already allocated")
        );
        let mut next = json!({"metadata": {"name": "e"}, "spec": {"ports": [{"port": 80}]}});
        assign(services(), &mut next, None, &in_use).unwrap();
        assert_eq!(next["spec"]["clusterIP"], "10.96.0.3");
        assert!(next["spec"]["ports"][0].get("nodePort").is_none());
    }
}
