//! What the API server serves, from aggregated discovery: for controllers that act on every
//! kind (the garbage collector, the namespace controller), as upstream ones do.

use std::collections::HashMap;

use anyhow::Context;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Resource {
    fn new(api: ApiResource, caps: &ApiCapabilities) -> Resource {
        Resource {
            api,
            namespaced: caps.scope == Scope::Namespaced,
            verbs: caps.operations.clone(),
        }
    }

    pub fn supports(&self, verbs: &[&str]) -> bool {
        verbs.iter().all(|v| self.verbs.iter().any(|x| x == v))
    }

    /// `pods.` or `deployments.apps`: how upstream names a resource in messages.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.api.plural, self.api.group)
    }
}

pub struct Resources {
    /// Each resource once, at its group's preferred version.
    pub preferred: Vec<Resource>,
    /// Every (apiVersion, kind) served, at every version.
    pub by_kind: HashMap<(String, String), Resource>,
}

pub async fn discover(client: &kube::Client) -> anyhow::Result<Resources> {
    let discovery = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .context("API discovery failed")?;
    let mut preferred = Vec::new();
    let mut by_kind = HashMap::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (api, caps) in group.versioned_resources(version) {
                by_kind.insert((api.api_version.clone(), api.kind.clone()), Resource::new(api, &caps));
            }
        }
        for (api, caps) in group.recommended_resources() {
            preferred.push(Resource::new(api, &caps));
        }
    }
    Ok(Resources { preferred, by_kind })
}
