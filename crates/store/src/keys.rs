//! Key layout, exactly as Kubernetes lays out etcd: `/registry/<resource>/<namespace>/<name>` for
//! namespaced objects and `/registry/<resource>/<name>` for cluster-scoped ones. Keeping the same
//! layout means `etcdctl get /registry/serviceaccounts/kube-system --prefix --keys-only` works on
//! a styrman cluster as it does on Kubernetes.

/// The root every object key lives under.
pub const REGISTRY: &str = "/registry";

/// The key of one object. `resource` is the lower-case plural (`pods`, `deployments`), with the
/// group prefixed where Kubernetes does (e.g. `apiextensions.k8s.io/customresourcedefinitions`).
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{REGISTRY}/{resource}/{ns}/{name}"),
        None => format!("{REGISTRY}/{resource}/{name}"),
    }
}

/// The prefix of every object of a resource, optionally in one namespace. Ends with `/`, so a
/// namespace's prefix never matches a longer namespace name.
pub fn prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{REGISTRY}/{resource}/{ns}/"),
        None => format!("{REGISTRY}/{resource}/"),
    }
}

/// The smallest key greater than `key`: where a paginated range continues after `key`.
pub fn after(key: &str) -> String {
    let mut next = String::with_capacity(key.len() + 1);
    next.push_str(key);
    next.push('\0');
    next
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a
/// prefix), or `None` when no such key exists (an empty prefix, or one of all `0xff` bytes).
pub fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_kubernetes() {
        assert_eq!(object_key("pods", Some("default"), "web"), "/registry/pods/default/web");
        assert_eq!(
            object_key("namespaces", None, "kube-system"),
            "/registry/namespaces/kube-system"
        );
        assert_eq!(
            prefix("serviceaccounts", Some("kube-system")),
            "/registry/serviceaccounts/kube-system/"
        );
        assert_eq!(prefix("nodes", None), "/registry/nodes/");
    }

    #[test]
    fn after_sorts_right_after_the_key() {
        let k = "/registry/pods/default/a";
        assert!(after(k).as_str() > k);
        assert!(after(k).as_str() < "/registry/pods/default/a0");
        assert!(after(k).as_str() < "/registry/pods/default/b");
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("/registry/pods/").unwrap(), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(""), None);
    }
}
