//! What every cluster has from its first start: the namespaces `default`, `kube-system`,
//! `kube-public` and `kube-node-lease`, and the `kubernetes` Service in `default` that points
//! pods at the API server, and the system PriorityClasses.

use serde_json::json;
use styrman_store::{Store, StoreError, keys};

use crate::{kinds, object, strategy};

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that do not exist yet (several API servers may race here;
/// whoever loses finds the namespace there).
pub async fn ensure_namespaces(store: &Store) -> Result<(), StoreError> {
    let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are in the table");
    for name in SYSTEM_NAMESPACES {
        let key = keys::object_key(namespaces.storage, None, name);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let mut namespace = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}});
        strategy::prepare_for_create(namespaces, &mut namespace);
        match store.create(&key, object::encode_for_storage(&namespace)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The PriorityClasses every cluster has: (name, value, description).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// Creates the system PriorityClasses that do not exist yet.
pub async fn ensure_priority_classes(store: &Store) -> Result<(), StoreError> {
    let classes = kinds::find("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses are in the table");
    for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
        let key = keys::object_key(classes.storage, None, name);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let mut class = json!({"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1",
            "metadata": {"name": name}, "value": value, "globalDefault": false,
            "description": description, "preemptionPolicy": "PreemptLowerPriority"});
        strategy::prepare_for_create(classes, &mut class);
        match store.create(&key, object::encode_for_storage(&class)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `default/kubernetes` (ClusterIP 10.96.0.1, port 443) if missing, and points its
/// Endpoints at this API server.
pub async fn ensure_kubernetes_service(store: &Store, address: std::net::IpAddr, port: u16) -> Result<(), StoreError> {
    let services = kinds::find("", "v1", "services").expect("services are in the table");
    let key = keys::object_key(services.storage, Some("default"), "kubernetes");
    if store.get(&key).await?.is_none() {
        let mut service = json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                     "internalTrafficPolicy": "Cluster",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        });
        strategy::prepare_for_create(services, &mut service);
        match store.create(&key, object::encode_for_storage(&service)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let endpoints = kinds::find("", "v1", "endpoints").expect("endpoints are in the table");
    let key = keys::object_key(endpoints.storage, Some("default"), "kubernetes");
    let subsets = json!([{"addresses": [{"ip": address.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    match store.get(&key).await? {
        Some(kv) => {
            let mut current: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if current["subsets"] != subsets {
                current["subsets"] = subsets;
                match store
                    .update(&key, object::encode_for_storage(&current), kv.mod_revision)
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        None => {
            let mut object = json!({"kind": "Endpoints", "apiVersion": "v1",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": subsets});
            strategy::prepare_for_create(endpoints, &mut object);
            match store.create(&key, object::encode_for_storage(&object)).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
