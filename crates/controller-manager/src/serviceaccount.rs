//! The service account controller: every active namespace has a `default` ServiceAccount,
//! made when the namespace appears and made again if it is deleted.

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use styrman_runtime::WorkQueue;

const DEFAULT: &str = "default";
/// kube-controller-manager's `--concurrent-serviceaccount-syncs`.
const WORKERS: usize = 5;

/// What woke the controller: a namespace, or a change to one namespace's `default` account.
enum Wake {
    Namespace(Namespace),
    Account(Event<ServiceAccount>),
}

pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    let workers = tokio::spawn(Arc::clone(&queue).run_workers(WORKERS, "serviceaccount", {
        let client = client.clone();
        move |namespace: String| {
            let client = client.clone();
            async move { sync(&client, &namespace).await }
        }
    }));
    let namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map(|r| r.map(Wake::Namespace));
    let defaults = watcher::watcher(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
    )
    .default_backoff()
    .map(|r| r.map(Wake::Account));
    let mut wakes = futures::stream::select(namespaces.boxed(), defaults.boxed());
    while let Some(wake) = wakes.next().await {
        match wake {
            Ok(Wake::Namespace(ns)) => {
                if let Some(name) = ns.metadata.name {
                    queue.add(name);
                }
            }
            Ok(Wake::Account(Event::Delete(account))) => {
                if let Some(namespace) = account.metadata.namespace {
                    queue.add(namespace);
                }
            }
            Ok(Wake::Account(_)) => {}
            Err(e) => tracing::warn!(error = %e, "serviceaccount controller watch failed; retrying"),
        }
    }
    workers.abort();
    anyhow::bail!("the serviceaccount controller's watches ended")
}

async fn sync(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let Some(ns) = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .context("reading the namespace")?
    else {
        return Ok(());
    };
    let terminating =
        ns.metadata.deletion_timestamp.is_some() || ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
    if terminating {
        return Ok(());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts
        .get_opt(DEFAULT)
        .await
        .context("reading the default service account")?
        .is_some()
    {
        return Ok(());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(()),
        // Made meanwhile (409), or the namespace began terminating (403) or went (404).
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(()),
        Err(e) => Err(e).context("creating the default service account"),
    }
}
