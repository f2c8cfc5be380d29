//! What a request is about, worked out from its path, method and query, as kube-apiserver's
//! RequestInfoResolver does: the group, version, resource, namespace, name, subresource and verb.

use std::collections::HashMap;

use crate::status::{ApiError, ApiResult};

/// A request for the API's resources (not discovery, health or OpenAPI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/healthz`, `/livez` or `/readyz`, and the one check asked for.
    Health(String, Option<String>),
    /// `/api` or `/apis`
    DiscoveryRoot {
        core: bool,
    },
    /// `/apis/<group>`
    DiscoveryGroup {
        group: String,
    },
    /// `/api/v1`, `/apis/<group>/<version>`
    DiscoveryGroupVersion {
        group: String,
        version: String,
    },
    OpenApi(String),
    Resource(ResourceRequest),
    /// A resource path, with a method it does not take.
    MethodNotAllowed,
    NotFound,
}

/// Subresources of a namespace: `/api/v1/namespaces/<name>/<sub>` is about the namespace
/// itself, not about a resource in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

pub fn route(method: &http::Method, path: &str, query: &Query) -> Route {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["version"] => Route::Version,
        [h @ ("healthz" | "livez" | "readyz")] => Route::Health(h.to_string(), None),
        [h @ ("healthz" | "livez" | "readyz"), check @ ..] => Route::Health(h.to_string(), Some(check.join("/"))),
        ["openapi", rest @ ..] => Route::OpenApi(rest.join("/")),
        ["api"] => Route::DiscoveryRoot { core: true },
        ["apis"] => Route::DiscoveryRoot { core: false },
        ["api", version] => Route::DiscoveryGroupVersion {
            group: String::new(),
            version: version.to_string(),
        },
        ["apis", group] => Route::DiscoveryGroup {
            group: group.to_string(),
        },
        ["apis", group, version] => Route::DiscoveryGroupVersion {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource_route("", version, rest, method, query),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest, method, query),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str], method: &http::Method, query: &Query) -> Route {
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() && !NAMESPACE_SUBRESOURCES.contains(&tail[0]) => {
            (Some(ns), tail)
        }
        other => (None, other),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        // `nodes/<name>/proxy/<path on the node>`: the path is the proxy's to read.
        [resource, name, "proxy", ..] => (*resource, Some(*name), Some("proxy")),
        _ => return Route::NotFound,
    };
    let verb = match (method, name) {
        (&http::Method::GET, Some(_)) => Verb::Get,
        (&http::Method::GET, None) if query.flag("watch") => Verb::Watch,
        (&http::Method::GET, None) => Verb::List,
        // POST names an object only to reach a subresource of it (binding, eviction).
        (&http::Method::POST, Some(_)) if subresource.is_none() => return Route::MethodNotAllowed,
        (&http::Method::POST, _) => Verb::Create,
        (&http::Method::PUT | &http::Method::PATCH, None) => return Route::MethodNotAllowed,
        (&http::Method::PUT, _) => Verb::Update,
        (&http::Method::PATCH, _) => Verb::Patch,
        (&http::Method::DELETE, Some(_)) => Verb::Delete,
        (&http::Method::DELETE, None) => Verb::DeleteCollection,
        _ => return Route::MethodNotAllowed,
    };
    Route::Resource(ResourceRequest {
        group: group.to_string(),
        version: version.to_string(),
        resource: resource.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        verb,
    })
}

/// The query string, decoded. Repeated keys keep their last value.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter as apimachinery reads one: absent, `0` or `false` (any case) are
    /// false; anything else, even empty, is true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
        }
    }

    /// A non-negative integer parameter; garbage is a 400.
    pub fn number(&self, key: &str) -> ApiResult<Option<u64>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for query parameter {key}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn resource(method: Method, path: &str, query: &str) -> ResourceRequest {
        match route(&method, path, &Query::parse(Some(query))) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_and_cluster_paths() {
        let r = resource(Method::GET, "/apis/apps/v1/namespaces/ns/deployments/web/scale", "");
        assert_eq!(
            (
                r.group.as_str(),
                r.resource.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("apps", "deployments", Some("ns"), Some("web"), Some("scale"))
        );
        assert_eq!(r.verb, Verb::Get);
        let r = resource(Method::GET, "/api/v1/pods", "watch=1");
        assert_eq!((r.resource.as_str(), r.namespace, r.verb), ("pods", None, Verb::Watch));
        let r = resource(Method::DELETE, "/api/v1/namespaces/ns/configmaps", "");
        assert_eq!(r.verb, Verb::DeleteCollection);
        let q = Query::default();
        assert_eq!(
            route(&Method::POST, "/api/v1/namespaces/ns/pods/p", &q),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(&Method::PUT, "/api/v1/namespaces/ns/pods", &q),
            Route::MethodNotAllowed
        );
        let r = resource(Method::POST, "/api/v1/namespaces/ns/pods/p/binding", "");
        assert_eq!((r.verb, r.subresource.as_deref()), (Verb::Create, Some("binding")));
    }

    #[test]
    fn namespaces_themselves() {
        let r = resource(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let r = resource(Method::PUT, "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (r.resource.as_str(), r.subresource.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let r = resource(Method::GET, "/api/v1/namespaces", "");
        assert_eq!((r.resource.as_str(), r.verb), ("namespaces", Verb::List));
    }

    #[test]
    fn boolean_parameters_follow_apimachinery() {
        let q = Query::parse(Some("a=True&b=0&c=false&d=&e=FALSE"));
        assert!(q.flag("a") && !q.flag("b") && !q.flag("c") && q.flag("d") && !q.flag("e") && !q.flag("f"));
    }

    #[test]
    fn discovery_and_other_paths() {
        let q = Query::default();
        assert_eq!(route(&Method::GET, "/api", &q), Route::DiscoveryRoot { core: true });
        assert_eq!(
            route(&Method::GET, "/apis/apps", &q),
            Route::DiscoveryGroup { group: "apps".into() }
        );
        assert_eq!(route(&Method::GET, "/version", &q), Route::Version);
        assert_eq!(route(&Method::GET, "/nonsense/x", &q), Route::NotFound);
    }
}
