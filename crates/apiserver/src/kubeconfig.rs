//! `admin.kubeconfig`, what `kubectl --kubeconfig DATA_DIR/admin.kubeconfig` uses, and one
//! kubeconfig per control-plane component (`controller-manager.kubeconfig`, ...).

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::pki::{CertAndKey, Pki};

pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

/// A kubeconfig for `user` with the given credentials, against `server`.
pub fn render(server: &str, ca_pem: &str, user: &str, credentials: &CertAndKey) -> String {
    render_with_server_name(server, None, ca_pem, user, credentials)
}

/// The same, checking the server's certificate for `server_name` instead of the host in
/// `server` (a node that reaches the server at an address its certificate does not name).
pub fn render_with_server_name(
    server: &str,
    server_name: Option<&str>,
    ca_pem: &str,
    user: &str,
    credentials: &CertAndKey,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let server_name = server_name
        .map(|n| format!("\n    tls-server-name: {n}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}{server_name}
  name: styrman
contexts:
- context:
    cluster: styrman
    user: {user}
  name: {user}@styrman
current-context: {user}@styrman
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(ca_pem),
        cert = b64(&credentials.cert_pem),
        key = b64(&credentials.key_pem),
    )
}

/// Writes `DATA_DIR/admin.kubeconfig` (owner-readable only: it holds the admin key).
pub fn write_admin(data_dir: &Path, pki: &Pki, server: &str) -> anyhow::Result<PathBuf> {
    let text = render(server, &pki.ca_pem, "admin", &pki.admin);
    crate::pki::write(data_dir, ADMIN_KUBECONFIG, &text, true)?;
    Ok(data_dir.join(ADMIN_KUBECONFIG))
}

/// Writes `DATA_DIR/<component>.kubeconfig` for each component, with its own identity.
pub fn write_components(data_dir: &Path, pki: &Pki, server: &str) -> anyhow::Result<()> {
    for (component, credentials) in &pki.components {
        let text = render(server, &pki.ca_pem, component.user, credentials);
        crate::pki::write(data_dir, &format!("{}.kubeconfig", component.file_stem), &text, true)?;
    }
    Ok(())
}
