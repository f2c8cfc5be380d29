//! `styrman kubelet`: the node agent's flags into its configuration. With `--server-data-dir`
//! (the server's own node, or a node on the server's machine) the node's credentials are
//! issued from the cluster CA there at every start (a kubeconfig for `system:node:<name>` and
//! a serving certificate for its name and address) and kept under `DATA_DIR/agent/pki`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::KubeletArgs;

/// How long to wait for the server to create its CA (it starts beside us).
const CA_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("agent");
    let node = node_config(&args)?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let issued = match &args.server_data_dir {
        Some(server_dir) => Some(issue(&args, server_dir, &root, &node).await?),
        None => None,
    };
    let pick = |given: &Option<PathBuf>, issued_path: Option<PathBuf>, flag: &str| {
        given
            .clone()
            .or(issued_path)
            .with_context(|| format!("give {flag} (or --server-data-dir)"))
    };
    let config = styrman_kubelet::agent::Config {
        kubeconfig: pick(
            &args.kubeconfig,
            issued.as_ref().map(|i| i.join("kubelet.kubeconfig")),
            "--kubeconfig",
        )?,
        tls_cert_file: pick(
            &args.tls_cert_file,
            issued.as_ref().map(|i| i.join("kubelet.crt")),
            "--tls-cert-file",
        )?,
        tls_private_key_file: pick(
            &args.tls_private_key_file,
            issued.as_ref().map(|i| i.join("kubelet.key")),
            "--tls-private-key-file",
        )?,
        client_ca_file: pick(
            &args.client_ca_file,
            issued.as_ref().map(|i| i.join("ca.crt")),
            "--client-ca-file",
        )?,
        node,
        runtime_endpoint: args.container_runtime_endpoint.clone(),
        airgap: args.airgap,
        cgroup_root: args.cgroup_root.clone(),
        pod_manifest_path: args.pod_manifest_path.clone(),
        address: std::net::SocketAddr::new(args.address, args.port),
    };
    styrman_kubelet::agent::run(config).await
}

/// The node the flags describe.
pub fn node_config(args: &KubeletArgs) -> anyhow::Result<styrman_kubelet::machine::NodeConfig> {
    let name = args
        .hostname_override
        .clone()
        .unwrap_or_else(styrman_runtime::hostname)
        .to_lowercase();
    anyhow::ensure!(
        !name.is_empty(),
        "this machine has no host name: give --hostname-override"
    );
    let labels = crate::parse_labels("--node-labels", &args.node_labels)?;
    Ok(styrman_kubelet::machine::NodeConfig {
        name,
        node_ip: args.node_ip,
        labels,
        taints: args
            .register_with_taints
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect(),
        max_pods: args.max_pods,
        root_dir: args.data_dir.join("agent"),
    })
}

/// Issues the node's credentials from the CA in `server_dir`; the directory holding them.
async fn issue(
    args: &KubeletArgs,
    server_dir: &Path,
    root: &Path,
    node: &styrman_kubelet::machine::NodeConfig,
) -> anyhow::Result<PathBuf> {
    let deadline = tokio::time::Instant::now() + CA_WAIT;
    while !server_dir.join("pki").join("ca.key").exists() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no cluster CA in {} after {CA_WAIT:?}",
            server_dir.join("pki").display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ip = styrman_kubelet::machine::resolve_node_ip(node)?;
    let credentials = styrman_apiserver::pki::node_credentials(server_dir, &node.name, &[ip])?;
    write_credentials(args, root, &node.name, &credentials)
}

/// Keeps a node's credentials under `root/pki` (the serving certificate and key, the CA and,
/// unless `--kubeconfig` names another, a kubeconfig for `args.server`); the directory.
pub fn write_credentials(
    args: &KubeletArgs,
    root: &Path,
    node: &str,
    credentials: &styrman_apiserver::pki::NodeCredentials,
) -> anyhow::Result<PathBuf> {
    let dir = root.join("pki");
    std::fs::create_dir_all(&dir)?;
    let write = styrman_apiserver::pki::write;
    if args.kubeconfig.is_none() {
        let kubeconfig = styrman_apiserver::kubeconfig::render_with_server_name(
            &args.server,
            args.tls_server_name.as_deref(),
            &credentials.ca_pem,
            &format!("system:node:{node}"),
            &credentials.client,
        );
        write(&dir, "kubelet.kubeconfig", &kubeconfig, true)?;
    }
    write(&dir, "kubelet.crt", &credentials.serving.cert_pem, false)?;
    write(&dir, "kubelet.key", &credentials.serving.key_pem, true)?;
    write(&dir, "ca.crt", &credentials.ca_pem, false)?;
    Ok(dir)
}
