//! The namespace controller: a namespace being deleted (Terminating) has everything in it
//! deleted; once nothing is left, its `kubernetes` finalizer is removed through the `finalize`
//! subresource and the API server deletes it. Its status conditions say how far it got, in
//! upstream's words (`kubectl describe namespace` shows them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::discovery::verbs;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use styrman_runtime::WorkQueue;

use crate::discovery::Resource;

/// The spec finalizer this controller owns.
const FINALIZER: &str = "kubernetes";
/// kube-controller-manager's `--concurrent-namespace-syncs`.
const WORKERS: usize = 10;
/// How soon a namespace with content still going away is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

type Metadata = PartialObjectMeta<DynamicObject>;

pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let workers = tokio::spawn(Arc::clone(&queue).run_workers(WORKERS, "namespace", {
        let client = client.clone();
        let queue = Arc::clone(&queue);
        move |name: String| {
            let client = client.clone();
            let queue = Arc::clone(&queue);
            async move {
                if sync(&client, &name).await? == Progress::ContentRemains {
                    queue.add_after(name, RECHECK);
                }
                Ok(())
            }
        }
    }));
    let namespaces: Api<Namespace> = Api::all(client);
    let mut events = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(ns) | Event::InitApply(ns)) if ns.metadata.deletion_timestamp.is_some() => {
                if let Some(name) = ns.metadata.name {
                    queue.add(name);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
        }
    }
    workers.abort();
    anyhow::bail!("the namespace watch ended")
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Done,
    ContentRemains,
}

/// One pass over a Terminating namespace: delete what is in it, report what remains, and
/// finalize it once empty.
async fn sync(client: &kube::Client, name: &str) -> anyhow::Result<Progress> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(namespace) = namespaces.get_opt(name).await.context("reading the namespace")? else {
        return Ok(Progress::Done);
    };
    let finalizers = namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Progress::Done);
    }
    let resources: Vec<Resource> = crate::discovery::discover(client)
        .await?
        .preferred
        .into_iter()
        .filter(|r| r.namespaced && r.supports(&[verbs::LIST, verbs::DELETE]))
        .collect();

    let mut failures = Vec::new();
    for resource in &resources {
        if let Err(e) = delete_content(client, name, resource).await {
            failures.push(format!("{}: {e:#}", resource.group_resource()));
        }
    }
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers_left: BTreeMap<String, usize> = BTreeMap::new();
    for resource in &resources {
        let api: Api<Metadata> = Api::namespaced_with(client.clone(), name, &resource.api);
        let left = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                failures.push(format!("{}: {e}", resource.group_resource()));
                continue;
            }
        };
        if left.is_empty() {
            continue;
        }
        remaining.insert(resource.group_resource(), left.len());
        for object in &left {
            for f in object.metadata.finalizers.iter().flatten() {
                *finalizers_left.entry(f.clone()).or_default() += 1;
            }
        }
    }
    let conditions = conditions(&failures, &remaining, &finalizers_left);
    let namespace = update_conditions(&namespaces, namespace, conditions).await?;
    if !failures.is_empty() {
        anyhow::bail!("cannot delete the content of namespace {name}: {}", failures.join("; "));
    }
    if !remaining.is_empty() {
        return Ok(Progress::ContentRemains);
    }
    let mut finalized = namespace;
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    match namespaces
        .replace_subresource::<Namespace>("finalize", name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace content deleted; finalized");
            Ok(Progress::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Progress::Done),
        Err(e) => Err(e).context("finalizing the namespace"),
    }
}

async fn delete_content(client: &kube::Client, namespace: &str, resource: &Resource) -> anyhow::Result<()> {
    let api: Api<Metadata> = Api::namespaced_with(client.clone(), namespace, &resource.api);
    if resource.supports(&[verbs::DELETE_COLLECTION]) {
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
        return Ok(());
    }
    for object in api.list(&ListParams::default()).await?.items {
        let Some(name) = object.metadata.name else { continue };
        if object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The deletion conditions kube-controller-manager sets, with its reasons and messages.
fn conditions(
    failures: &[String],
    remaining: &BTreeMap<String, usize>,
    finalizers: &BTreeMap<String, usize>,
) -> Vec<(&'static str, bool, &'static str, String)> {
    let content_failure = if failures.is_empty() {
        (
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        )
    } else {
        (
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                failures.len(),
                failures.join(", ")
            ),
        )
    };
    let content_remaining = if remaining.is_empty() {
        (false, "ContentRemoved", "All content successfully removed".to_string())
    } else {
        let list: Vec<String> = remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", list.join(", ")),
        )
    };
    let finalizers_remaining = if finalizers.is_empty() {
        (
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".to_string(),
        )
    } else {
        let list: Vec<String> = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                list.join(", ")
            ),
        )
    };
    vec![
        (
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".to_string(),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
        ),
        (
            "NamespaceDeletionContentFailure",
            content_failure.0,
            content_failure.1,
            content_failure.2,
        ),
        (
            "NamespaceContentRemaining",
            content_remaining.0,
            content_remaining.1,
            content_remaining.2,
        ),
        (
            "NamespaceFinalizersRemaining",
            finalizers_remaining.0,
            finalizers_remaining.1,
            finalizers_remaining.2,
        ),
    ]
}

/// Writes the conditions through `status`, keeping a condition's transition time while its
/// status stays the same; writes nothing when nothing changed. Returns the namespace as
/// stored afterwards.
async fn update_conditions(
    namespaces: &Api<Namespace>,
    namespace: Namespace,
    wanted: Vec<(&'static str, bool, &'static str, String)>,
) -> anyhow::Result<Namespace> {
    let original = namespace.clone();
    let mut namespace = namespace;
    let status = namespace.status.get_or_insert_with(Default::default);
    let old = status.conditions.clone().unwrap_or_default();
    let now = Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    let mut changed = false;
    let conditions: Vec<NamespaceCondition> = wanted
        .into_iter()
        .map(|(type_, on, reason, message)| {
            let status_text = if on { "True" } else { "False" };
            let before = old.iter().find(|c| c.type_ == type_);
            let same = before.is_some_and(|c| c.status == status_text);
            if !before.is_some_and(|c| {
                c.status == status_text && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(&message)
            }) {
                changed = true;
            }
            NamespaceCondition {
                type_: type_.to_string(),
                status: status_text.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: if same {
                    before.and_then(|c| c.last_transition_time.clone())
                } else {
                    Some(now.clone())
                },
            }
        })
        .collect();
    if !changed {
        return Ok(original);
    }
    status.conditions = Some(conditions);
    let name = namespace.metadata.name.clone().unwrap_or_default();
    namespaces
        .replace_status(&name, &PostParams::default(), &namespace)
        .await
        .context("updating the namespace's conditions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_speak_upstreams_words() {
        let remaining = BTreeMap::from([("pods.".to_string(), 2), ("deployments.apps".to_string(), 1)]);
        let finalizers = BTreeMap::from([("example.com/hold".to_string(), 1)]);
        let c = conditions(&[], &remaining, &finalizers);
        let find = |t: &str| c.iter().find(|x| x.0 == t).unwrap();
        assert_eq!(
            find("NamespaceContentRemaining").3,
            "Some resources are remaining: deployments.apps has 1 resource instances, pods. has 2 resource instances"
        );
        assert_eq!(
            find("NamespaceFinalizersRemaining").3,
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        assert!(!find("NamespaceDeletionContentFailure").1);
        let done = conditions(&[], &BTreeMap::new(), &BTreeMap::new());
        assert!(done.iter().all(|x| !x.1));
    }
}
