//! Discovery documents, all derived from the kind table: `/api`, `/apis`, `/apis/<group>`, each
//! group-version's resource list, and the aggregated documents (`apidiscovery.k8s.io` v2 and
//! v2beta1) that kubectl 1.27+ asks for first.

use serde_json::{Value, json};

use crate::kinds::{self, Kind};

/// The Kubernetes version reported by `/version`. kubectl's dispatcher runs `kubectl.1.<minor>`.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "minCompatibilityMajor": MAJOR,
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": format!("styrman-v{}", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        // Clients read only the version numbers; these say what built this binary.
        "goVersion": concat!("styrman ", env!("CARGO_PKG_VERSION"), " (Rust, not Go)"),
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which discovery format a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Legacy,
    AggregatedV2,
    AggregatedV2Beta1,
}

impl Format {
    /// The first aggregated format in the Accept list, if any (the list is in preference order).
    pub fn from_accept(accept: &str) -> Format {
        for entry in accept.split(',') {
            let params: Vec<&str> = entry.split(';').map(str::trim).collect();
            if params.contains(&"g=apidiscovery.k8s.io") && params.contains(&"as=APIGroupDiscoveryList") {
                if params.contains(&"v=v2") {
                    return Format::AggregatedV2;
                }
                if params.contains(&"v=v2beta1") {
                    return Format::AggregatedV2Beta1;
                }
            }
            if params.first().is_some_and(|m| *m == "application/json" || *m == "*/*") {
                return Format::Legacy;
            }
        }
        Format::Legacy
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Legacy => "application/json",
            Format::AggregatedV2 => "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            Format::AggregatedV2Beta1 => "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        }
    }
}

/// `/api` or `/apis` in the requested format.
pub fn root(core: bool, format: Format, server_address: &str) -> Value {
    let groups = groups(core);
    match format {
        Format::Legacy if core => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
        Format::Legacy => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups.iter().map(|(g, versions)| group_doc(g, versions)).collect::<Vec<_>>(),
        }),
        Format::AggregatedV2 | Format::AggregatedV2Beta1 => {
            let api_version = if format == Format::AggregatedV2 {
                "apidiscovery.k8s.io/v2"
            } else {
                "apidiscovery.k8s.io/v2beta1"
            };
            json!({
                "kind": "APIGroupDiscoveryList",
                "apiVersion": api_version,
                "metadata": {},
                "items": groups.iter().map(|(g, versions)| aggregated_group(g, versions)).collect::<Vec<_>>(),
            })
        }
    }
}

/// The groups of `/api` (core only) or `/apis` (every other), each with its versions in
/// preference order and their kinds.
/// A group's versions, each with its kinds.
type Versions = Vec<(&'static str, Vec<&'static Kind>)>;

fn groups(core: bool) -> Vec<(&'static str, Versions)> {
    let mut out: Vec<(&str, Versions)> = Vec::new();
    for (group, version, kinds) in kinds::group_versions() {
        if group.is_empty() != core {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push((version, kinds)),
            None => out.push((group, vec![(version, kinds)])),
        }
    }
    out
}

fn group_doc(group: &str, versions: &[(&str, Vec<&Kind>)]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    groups(false)
        .into_iter()
        .find(|(g, _)| *g == name)
        .map(|(g, versions)| {
            let mut doc = group_doc(g, &versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/<group>/<version>`: an `APIResourceList`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let (_, _, kinds) = kinds::group_versions()
        .into_iter()
        .find(|(g, v, _)| *g == group && *v == version)?;
    let mut resources = Vec::new();
    for k in kinds {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for sub in k.subresources {
            let mut s = json!({
                "name": format!("{}/{}", k.plural, sub.name),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if (sub.group, sub.version) != (k.group, k.version) {
                s["group"] = json!(sub.group);
                s["version"] = json!(sub.version);
            }
            resources.push(s);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

fn aggregated_group(group: &str, versions: &[(&str, Vec<&Kind>)]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(version, kinds)| {
            let resources: Vec<Value> = kinds.iter().map(|k| aggregated_resource(k)).collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

fn aggregated_resource(k: &Kind) -> Value {
    let mut r = json!({
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": k.verbs,
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    if !k.subresources.is_empty() {
        r["subresources"] = json!(
            k.subresources
                .iter()
                .map(|s| json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "verbs": s.verbs,
                }))
                .collect::<Vec<_>>()
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_first_aggregated_format() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Format::from_accept(kubectl), Format::AggregatedV2);
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Format::from_accept(old), Format::AggregatedV2Beta1);
        assert_eq!(Format::from_accept("application/json"), Format::Legacy);
        assert_eq!(Format::from_accept(""), Format::Legacy);
    }

    #[test]
    fn core_is_alone_in_api_and_absent_from_apis() {
        let api = root(true, Format::AggregatedV2, "x");
        assert_eq!(api["items"].as_array().unwrap().len(), 1);
        assert_eq!(api["items"][0]["metadata"]["name"], "");
        let apis = root(false, Format::AggregatedV2, "x");
        assert!(
            apis["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["metadata"]["name"] != "")
        );
        assert!(
            apis["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
    }

    #[test]
    fn scale_subresources_name_their_group() {
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(
            (scale["group"].as_str(), scale["version"].as_str()),
            (Some("autoscaling"), Some("v1"))
        );
    }
}
