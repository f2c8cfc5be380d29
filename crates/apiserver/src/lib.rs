//! The API server: the Kubernetes REST API over HTTPS, in front of the store. The only door to
//! cluster state; every other component is its client.
//!
//! Start at [`run`]. A request goes [`server`] (TLS, authentication, routing) → [`request`]
//! (what it is about) → [`registry`] (generic REST on JSON objects, with per-kind
//! [`strategy`]) → the store. [`kinds`] is the table every route, discovery document and
//! printer derives from.

mod admission;
mod always_present;
mod apply;
mod bootstrap;
mod component_status;
mod conversion;
mod decoded;
mod defaults;
mod discovery;
mod health;
pub mod join;
pub mod kinds;
pub mod kubeconfig;
mod managed;
mod node_proxy;
mod object;
mod openapi;
mod patch;
pub mod pki;
mod protobuf;
mod registry;
mod request;
mod reviews;
mod scale;
mod schema;
mod selectors;
mod server;
mod services;
mod status;
mod strategic;
mod strategy;
mod table;
pub mod tokens;
mod validation;
mod watchcache;
mod yaml;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use styrman_store::StoreConfig;
use tokio::net::TcpListener;

pub use discovery::GIT_VERSION as KUBERNETES_VERSION;

/// What `styrman apiserver` is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds the embedded store, the PKI and `admin.kubeconfig`.
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub store: StoreConfig,
    /// How often history older than one interval is compacted away (kube-apiserver's
    /// `--etcd-compaction-interval`); zero turns compaction off.
    pub compaction_interval: std::time::Duration,
    /// More names and addresses the serving certificate covers (k3s's `--tls-san`).
    pub tls_san: Vec<String>,
}

/// Runs the API server until it fails.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let store = styrman_store::open(&config.store)
        .await
        .context("cannot open the store")?;
    bootstrap::ensure_namespaces(&store)
        .await
        .context("cannot create the system namespaces")?;
    bootstrap::ensure_priority_classes(&store)
        .await
        .context("cannot create the system priority classes")?;

    let listener = TcpListener::bind(SocketAddr::new(config.bind_address, config.secure_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.bind_address, config.secure_port))?;
    let port = listener.local_addr()?.port();
    let endpoint_ip = if config.bind_address.is_unspecified() {
        "127.0.0.1".parse()?
    } else {
        config.bind_address
    };
    bootstrap::ensure_kubernetes_service(&store, endpoint_ip, port)
        .await
        .context("cannot create the kubernetes service")?;
    let client_host = if config.bind_address.is_unspecified() || config.bind_address.is_loopback() {
        "127.0.0.1".to_string()
    } else {
        config.bind_address.to_string()
    };
    let mut hosts = vec![client_host.clone()];
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        hosts.push(name.trim().to_string());
    }
    hosts.extend(config.tls_san.iter().cloned());
    hosts.retain(|h| !h.is_empty());
    let pki = pki::Pki::ensure(&config.data_dir, &hosts)?;
    let address = format!("{client_host}:{port}");
    let kubeconfig = kubeconfig::write_admin(&config.data_dir, &pki, &format!("https://{address}"))?;
    kubeconfig::write_components(&config.data_dir, &pki, &format!("https://{address}"))?;
    tracing::info!(
        "API server ready at https://{address} (store: {}); try: kubectl --kubeconfig {} get namespaces",
        store.name(),
        kubeconfig.display()
    );
    if !config.compaction_interval.is_zero() {
        tokio::spawn(compact_periodically(store.clone(), config.compaction_interval));
    }
    let kubelets = node_proxy::KubeletClient::new(&pki)?;
    let join = join::Join::ensure(&config.data_dir, &pki.ca_pem)?;
    let server = Arc::new(server::Server::new(
        registry::Registry::new(store).with_tokens(tokens::TokenIssuer::ensure(&config.data_dir)?),
        address,
        kubelets,
        join,
    ));
    server.serve(listener, server::tls_config(&pki)?).await
}

/// Compacts the store every `interval` to the revision it had one interval before, so watches
/// and paginated lists can resume within an interval, and the history does not grow forever.
/// With several API servers on one etcd, each one compacts; the losers' "already compacted"
/// errors are expected.
async fn compact_periodically(store: styrman_store::Store, interval: std::time::Duration) {
    let mut previous: Option<styrman_store::Revision> = None;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(revision) = previous.filter(|r| *r > 0) {
            match store.compact(revision).await {
                Ok(()) => tracing::info!(revision, "compacted the store"),
                Err(styrman_store::StoreError::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, revision, "compaction failed"),
            }
        }
        match store.current_revision().await {
            Ok(current) => previous = Some(current),
            Err(e) => tracing::warn!(error = %e, "cannot read the store's revision"),
        }
    }
}
