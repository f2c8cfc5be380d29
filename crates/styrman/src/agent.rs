//! `styrman agent`: joins this machine to a server as k3s's agent does, then runs its node.
//! With `--token` (the server's `DATA_DIR/node-token`) the agent fetches the server's CA
//! bundle, checks it against the hash the token carries (so a server in the middle cannot
//! pose as the cluster), and asks for its credentials with the token's secret; with
//! `--kubeconfig` that kubeconfig's user asks (an admin, or the node itself) and the kubelet
//! keeps using it. The credentials are kept under `DATA_DIR/agent/pki` and asked for again at
//! every start, so an address change is picked up. A server that cannot be reached yet is
//! retried; a refused token is an error.

use std::time::Duration;

use anyhow::Context;
use http::Request;
use rustls_pki_types::pem::PemObject;
use styrman_apiserver::join::{self, CredentialsResponse};
use styrman_apiserver::pki::NodeCredentials;

use crate::KubeletArgs;

/// How often an unreachable server is tried again.
const RETRY: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The server's join token (its DATA_DIR/node-token)
    #[arg(long, conflicts_with_all = ["token_file", "kubeconfig"])]
    token: Option<String>,
    /// A file holding the join token
    #[arg(long, conflicts_with = "kubeconfig")]
    token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    kubelet: KubeletArgs,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut kubelet = args.kubelet;
    anyhow::ensure!(
        kubelet.server_data_dir.is_none(),
        "styrman agent joins through --server; --server-data-dir is for styrman kubelet"
    );
    let token = match (args.token, args.token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    anyhow::ensure!(
        token.is_some() || kubelet.kubeconfig.is_some(),
        "give --token, --token-file or --kubeconfig to join a server"
    );
    let node = crate::kubelet::node_config(&kubelet)?;
    let ip = styrman_kubelet::machine::resolve_node_ip(&node)?;
    let client = match (&token, &kubelet.kubeconfig) {
        (Some(token), _) => with_token(&kubelet, token).await?,
        (None, Some(kubeconfig)) => with_kubeconfig(kubeconfig).await?,
        (None, None) => unreachable!("checked above"),
    };
    let credentials = retrying("ask for the node's credentials", || {
        ask_credentials(&client, &node.name, ip)
    })
    .await?;
    let root = kubelet.data_dir.join("agent");
    let dir = crate::kubelet::write_credentials(&kubelet, &root, &node.name, &credentials)?;
    tracing::info!(node = %node.name, server = %kubelet.server, "joined");
    kubelet.kubeconfig.get_or_insert_with(|| dir.join("kubelet.kubeconfig"));
    kubelet.tls_cert_file.get_or_insert_with(|| dir.join("kubelet.crt"));
    kubelet
        .tls_private_key_file
        .get_or_insert_with(|| dir.join("kubelet.key"));
    kubelet.client_ca_file.get_or_insert_with(|| dir.join("ca.crt"));
    crate::kubelet::run(kubelet).await
}

/// A client of `--server` that trusts the CA bundle the token pins and sends its secret.
async fn with_token(args: &KubeletArgs, token: &str) -> anyhow::Result<kube::Client> {
    let token = join::parse_token(token).context("the join token is malformed (K10<hash>::node:<secret>)")?;
    let url: http::Uri = args
        .server
        .parse()
        .with_context(|| format!("--server {:?} is not a URL", args.server))?;
    // The CA bundle comes from a server not trusted yet: the token's hash is what vouches.
    let mut untrusted = kube::Config::new(url.clone());
    untrusted.accept_invalid_certs = true;
    let untrusted = kube::Client::try_from(untrusted)?;
    let ca_pem = retrying("fetch the server's CA bundle", || async {
        Ok(untrusted
            .request_text(Request::get(join::CA_PATH).body(Vec::new())?)
            .await?)
    })
    .await?;
    match &token.ca_hash {
        Some(hash) => anyhow::ensure!(
            join::ca_hash(&ca_pem) == *hash,
            "the CA bundle of {} does not match the join token's hash: is --server this token's server?",
            args.server
        ),
        None => tracing::warn!("the join token pins no CA: trusting the one {} offers", args.server),
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(
        rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .context("the server's CA bundle is not PEM")?,
    );
    config.tls_server_name = args.tls_server_name.clone();
    config.headers.push((
        http::header::AUTHORIZATION,
        format!("Bearer {}", token.secret)
            .parse()
            .context("the join token holds characters a header cannot")?,
    ));
    Ok(kube::Client::try_from(config)?)
}

async fn with_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn ask_credentials(client: &kube::Client, node: &str, ip: std::net::IpAddr) -> anyhow::Result<NodeCredentials> {
    let body = serde_json::json!({ "nodeName": node, "addresses": [ip] });
    let request = Request::post(join::CREDENTIALS_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    let text = client.request_text(request).await?;
    let response: CredentialsResponse =
        serde_json::from_str(&text).context("the server's answer holds no node credentials")?;
    Ok(response.into())
}

/// Runs `attempt` until it succeeds or the server answers with a refusal; a server that is not
/// reachable (yet) is tried again, as k3s's agent waits for its server.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
                    let why = match status.code {
                        401 => "the server refused the join token",
                        403 => "the server refused this user",
                        _ => "the server refused",
                    };
                    return Err(e).with_context(|| format!("cannot {what}: {why}"));
                }
                tracing::warn!(error = %format!("{e:#}"), "cannot {what} yet; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
