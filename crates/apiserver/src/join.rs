//! Joining nodes, as k3s does it: the server keeps a join token in `DATA_DIR/node-token`
//! (`K10<sha256 of the CA bundle>::node:<secret>`), serves its CA bundle to anyone at
//! `GET /cacerts` (the agent checks it against the token's hash before trusting it), and at
//! `POST /v1-styrman/node-credentials` issues a node its client certificate
//! (`system:node:<name>` in `system:nodes`) and the serving certificate of its kubelet port.
//!
//! The secret, a client certificate of `system:masters`, or the node's own client certificate
//! (renewing) authorizes that request. Upstream's way (bootstrap tokens and
//! CertificateSigningRequests, the node authorizer) replaces the shared secret when the API
//! server authenticates tokens; the agent's flags stay the same.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::pki;
use crate::server::User;
use crate::status::{ApiError, ApiResult};

pub const CA_PATH: &str = "/cacerts";
pub const CREDENTIALS_PATH: &str = "/v1-styrman/node-credentials";
const TOKEN_FILE: &str = "node-token";
/// The token's user part, as in k3s's `K10<hash>::<user>:<secret>`.
const TOKEN_USER: &str = "node";

/// What a node asks for.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequest {
    pub node_name: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// What it gets: PEM texts.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsResponse {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    pub serving_cert: String,
    pub serving_key: String,
}

pub struct Join {
    data_dir: PathBuf,
    ca_pem: String,
    secret: String,
}

impl Join {
    /// Loads the join token, or makes one on first start.
    pub fn ensure(data_dir: &Path, ca_pem: &str) -> anyhow::Result<Join> {
        let path = data_dir.join(TOKEN_FILE);
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => parse_token(text.trim())
                .map(|t| t.secret)
                .with_context(|| format!("{} is not a join token", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: String = (0..32)
                    .map(|_| char::from_digit(rand::rng().random_range(0..16), 16).expect("a hex digit"))
                    .collect();
                let token = format!("K10{}::{TOKEN_USER}:{secret}\n", ca_hash(ca_pem));
                pki::write(data_dir, TOKEN_FILE, &token, true)?;
                secret
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Join {
            data_dir: data_dir.to_path_buf(),
            ca_pem: ca_pem.to_string(),
            secret,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Whether a request is one of ours; answered before anything else, since `/cacerts` is
    /// public and a token (not a certificate) may authorize the other.
    pub fn serves(path: &str) -> bool {
        path == CA_PATH || path == CREDENTIALS_PATH
    }

    /// Issues `request`'s node its credentials, when `bearer` or `user` may have them.
    pub fn credentials(&self, request: &[u8], bearer: Option<&str>, user: &User) -> ApiResult<CredentialsResponse> {
        let request: CredentialsRequest = serde_json::from_slice(request)
            .map_err(|e| ApiError::bad_request(format!("not a node credentials request: {e}")))?;
        let by_token = bearer.is_some_and(|b| {
            let secret = parse_token(b).map(|t| t.secret).unwrap_or_else(|| b.to_string());
            constant_time_eq(secret.as_bytes(), self.secret.as_bytes())
        });
        let by_certificate = user.groups.iter().any(|g| g == "system:masters")
            || user.name == format!("system:node:{}", request.node_name);
        if !by_token && !by_certificate {
            return Err(if bearer.is_some() || user.is_anonymous() {
                ApiError::unauthorized()
            } else {
                ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "user \"{}\" cannot get the credentials of node \"{}\"",
                        user.name, request.node_name
                    ),
                )
            });
        }
        if !is_dns_subdomain(&request.node_name) {
            return Err(ApiError::bad_request(format!(
                "node name {:?} is not a lowercase RFC 1123 subdomain",
                request.node_name
            )));
        }
        let issued = pki::node_credentials(&self.data_dir, &request.node_name, &request.addresses)
            .map_err(|e| ApiError::internal(format!("cannot issue node credentials: {e:#}")))?;
        tracing::info!(node = %request.node_name, by = if by_token { "token" } else { user.name.as_str() }, "issued node credentials");
        Ok(issued.into())
    }
}

impl From<pki::NodeCredentials> for CredentialsResponse {
    fn from(issued: pki::NodeCredentials) -> Self {
        CredentialsResponse {
            ca_cert: issued.ca_pem,
            client_cert: issued.client.cert_pem,
            client_key: issued.client.key_pem,
            serving_cert: issued.serving.cert_pem,
            serving_key: issued.serving.key_pem,
        }
    }
}

impl From<CredentialsResponse> for pki::NodeCredentials {
    fn from(response: CredentialsResponse) -> Self {
        pki::NodeCredentials {
            ca_pem: response.ca_cert,
            client: pki::CertAndKey {
                cert_pem: response.client_cert,
                key_pem: response.client_key,
            },
            serving: pki::CertAndKey {
                cert_pem: response.serving_cert,
                key_pem: response.serving_key,
            },
        }
    }
}

/// A join token's parts.
pub struct Token {
    /// The hex SHA-256 of the server's CA bundle, when the token pins it.
    pub ca_hash: Option<String>,
    pub secret: String,
}

/// Reads `K10<hash>::<user>:<secret>`, or a bare secret (which pins no CA).
pub fn parse_token(text: &str) -> Option<Token> {
    let Some(rest) = text.strip_prefix("K10") else {
        return (!text.is_empty() && !text.contains(char::is_whitespace)).then(|| Token {
            ca_hash: None,
            secret: text.to_string(),
        });
    };
    let (hash, credentials) = rest.split_once("::")?;
    let secret = credentials.split_once(':').map_or(credentials, |(_, s)| s);
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then(|| Token {
        ca_hash: Some(hash.to_ascii_lowercase()),
        secret: secret.to_string(),
    })
}

/// What a token pins: the hex SHA-256 of the CA bundle exactly as `/cacerts` serves it.
pub fn ca_hash(ca_pem: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(ca_pem.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A node name: a DNS subdomain, as upstream validates Node names.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(crate::selectors::is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_token_pins_the_ca_and_a_bare_one_does_not() {
        let hash = ca_hash("pem");
        let full = parse_token(&format!("K10{hash}::node:s3cret")).unwrap();
        assert_eq!(full.ca_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(full.secret, "s3cret");
        let bare = parse_token("s3cret").unwrap();
        assert_eq!((bare.ca_hash, bare.secret.as_str()), (None, "s3cret"));
        assert!(parse_token("K10abc::node:x").is_none(), "a short hash");
        assert!(parse_token(&format!("K10{hash}::node:")).is_none(), "no secret");
        assert!(parse_token("").is_none());
    }

    #[test]
    fn the_token_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = Join::ensure(dir.path(), "ca").unwrap();
        let text = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert!(text.starts_with(&format!("K10{}::node:", ca_hash("ca"))), "{text}");
        let again = Join::ensure(dir.path(), "ca").unwrap();
        assert_eq!(first.secret, again.secret);
        assert_eq!(first.secret.len(), 32);
    }

    #[test]
    fn node_names_are_checked() {
        assert!(is_dns_subdomain("node-1.example"));
        assert!(!is_dns_subdomain("Node"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a/b"));
    }
}
