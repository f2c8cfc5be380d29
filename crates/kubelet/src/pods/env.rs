//! A container's environment, as the kubelet makes it (`makeEnvironmentVariables`): `envFrom`
//! sources first (ConfigMaps and Secrets, with their prefix), then `env` in order, where a
//! value may name earlier variables as `$(NAME)` and comes from a literal, a field of the pod,
//! a resource of the container, or a key of a ConfigMap or Secret. A missing source that is
//! not optional is an error the pod shows as `CreateContainerConfigError`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;

/// What a ConfigMap or Secret holds, as text, or None when it does not exist.
async fn source(
    client: &kube::Client,
    namespace: &str,
    kind: Source,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let read = |e: kube::Error| format!("cannot read {} {name:?}: {e}", kind.word());
    match kind {
        Source::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await.map_err(read)?.map(|c| {
                let mut data = c.data.unwrap_or_default();
                for (k, v) in c.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            }))
        }
        Source::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await.map_err(read)?.map(|s| {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                data
            }))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn word(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }
}

/// The environment of `container` in `pod` (running on `node_ip` with `pod_ip`).
pub async fn environment(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    node_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut sources = Sources {
        client,
        namespace: &namespace,
        read: Default::default(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        if let Some(slot) = env.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            env.push((key, value));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(c) = &from.config_map_ref {
            (Source::ConfigMap, c.name.clone(), c.optional.unwrap_or(false))
        } else if let Some(s) = &from.secret_ref {
            (Source::Secret, s.name.clone(), s.optional.unwrap_or(false))
        } else {
            continue;
        };
        match sources.get(kind, &name).await? {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional => {}
            None => return Err(format!("{} \"{name}\" not found", kind.word())),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(value, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path, pod_ip, node_ip)?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(pod, container, resource)?
            } else if let Some(key) = &from.config_map_key_ref {
                match sources.key(Source::ConfigMap, &key.name, &key.key).await? {
                    Some(v) => v,
                    None if key.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key.key, key.name
                        ));
                    }
                }
            } else if let Some(key) = &from.secret_key_ref {
                match sources.key(Source::Secret, &key.name, &key.key).await? {
                    Some(v) => v,
                    None if key.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key.key, key.name
                        ));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// The ConfigMaps and Secrets one container's environment reads, each read once.
struct Sources<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    read: std::collections::HashMap<(Source, String), Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    async fn get(&mut self, kind: Source, name: &str) -> Result<Option<&BTreeMap<String, String>>, String> {
        let key = (kind, name.to_string());
        if !self.read.contains_key(&key) {
            let data = source(self.client, self.namespace, kind, name).await?;
            self.read.insert(key.clone(), data);
        }
        Ok(self.read[&key].as_ref())
    }

    async fn key(&mut self, kind: Source, name: &str, key: &str) -> Result<Option<String>, String> {
        Ok(self.get(kind, name).await?.and_then(|d| d.get(key).cloned()))
    }
}

/// `$(NAME)` becomes NAME's value when NAME is defined earlier; `$$` escapes a `$`; anything
/// else stays as written (Kubernetes' expansion rules).
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward API field: `metadata.name`, `metadata.labels['k']`, `status.podIP`, ...
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, node_ip: &str) -> Result<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let in_map = |map: &BTreeMap<String, String>, prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|k| map.get(k).cloned().unwrap_or_default())
    };
    if let Some(v) = in_map(pod.labels(), "metadata.labels['") {
        return Ok(v);
    }
    if let Some(v) = in_map(pod.annotations(), "metadata.annotations['") {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => map_lines(pod.labels()),
        "metadata.annotations" => map_lines(pod.annotations()),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => node_ip.to_string(),
        other => return Err(format!("unsupported fieldRef {other:?}")),
    })
}

/// `key="value"` lines, sorted, as the downward API writes maps.
pub fn map_lines(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resource_value(
    pod: &Pod,
    container: &Container,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, String> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .cloned()
            .ok_or_else(|| format!("no container {name:?} for resourceFieldRef"))?,
        None => container.clone(),
    };
    let resources = target.resources.unwrap_or_default();
    let (map, name) = match selector.resource.split_once('.') {
        Some(("limits", r)) => (resources.limits, r),
        Some(("requests", r)) => (resources.requests, r),
        _ => return Err(format!("unsupported resourceFieldRef {:?}", selector.resource)),
    };
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| styrman_runtime::quantity::milli_value(&d.0))
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    let quantity = map.and_then(|m| m.get(name).cloned());
    let milli = match quantity {
        Some(q) => styrman_runtime::quantity::milli_value(&q.0).unwrap_or(0),
        // No limit: the node's allocatable, which the kubelet reports instead; unknown here,
        // so the largest value, as an unlimited container sees.
        None if selector.resource.starts_with("limits.") => return Ok(i64::MAX.to_string()),
        None => 0,
    };
    // Rounded up, as the kubelet's ExtractResourceValueByContainerName does.
    Ok(((milli + divisor - 1) / divisor).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn fields_of_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []},
        }))
        .unwrap();
        assert_eq!(field_value(&pod, "metadata.name", "", "").unwrap(), "p");
        assert_eq!(field_value(&pod, "metadata.labels['app']", "", "").unwrap(), "web");
        assert_eq!(field_value(&pod, "status.podIP", "10.0.0.2", "").unwrap(), "10.0.0.2");
        assert_eq!(field_value(&pod, "spec.nodeName", "", "").unwrap(), "n1");
        assert!(field_value(&pod, "spec.nothing", "", "").is_err());
    }
}
