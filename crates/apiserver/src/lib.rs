//! The API server: the Kubernetes REST API over HTTPS, in front of the store. The only door to
//! cluster state; every other component is its client.
//!
//! Start at [`run`]. A request goes [`server`] (TLS, authentication, routing) → [`request`]
//! (what it is about) → [`registry`] (generic REST on JSON objects, with per-kind
//! [`strategy`]) → the store. [`kinds`] is the table every route, discovery document and
//! printer derives from.

mod bootstrap;
mod defaults;
mod discovery;
pub mod kinds;
mod kubeconfig;
mod managed;
mod object;
mod openapi;
mod patch;
pub mod pki;
mod protobuf;
mod registry;
mod request;
mod scale;
mod schema;
mod selectors;
mod server;
mod services;
mod status;
mod strategic;
mod strategy;
mod table;
mod validation;
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

    let listener = TcpListener::bind(SocketAddr::new(config.bind_address, config.secure_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.bind_address, config.secure_port))?;
    let port = listener.local_addr()?.port();
    let client_host = if config.bind_address.is_unspecified() || config.bind_address.is_loopback() {
        "127.0.0.1".to_string()
    } else {
        config.bind_address.to_string()
    };
    let mut hosts = vec![client_host.clone()];
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        hosts.push(name.trim().to_string());
    }
    hosts.retain(|h| !h.is_empty());
    let pki = pki::Pki::ensure(&config.data_dir, &hosts)?;
    let address = format!("{client_host}:{port}");
    let kubeconfig = kubeconfig::write_admin(&config.data_dir, &pki, &format!("https://{address}"))?;
    tracing::info!(
        "API server ready at https://{address} (store: {}); try: kubectl --kubeconfig {} get namespaces",
        store.name(),
        kubeconfig.display()
    );
    let server = Arc::new(server::Server::new(registry::Registry::new(store), address));
    server.serve(listener, server::tls_config(&pki)?).await
}
