//! The cluster's certificates: a CA made on first start, a serving certificate for the API
//! server, and an admin client certificate (group `system:masters`) for `admin.kubeconfig`.
//!
//! Everything lives under `DATA_DIR/pki/`. The CA and the admin credentials are kept across
//! restarts (the kubeconfig users copied keeps working); the serving certificate is issued anew
//! on every start, so it always covers the addresses the server listens on.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// PEM-encoded certificate and private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Pki {
    pub ca_pem: String,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
    /// What the API server calls kubelets with (`kube-apiserver-kubelet-client`).
    pub kubelet_client: CertAndKey,
    /// One client credential per control-plane component that is an API client.
    pub components: Vec<(Component, CertAndKey)>,
    dir: PathBuf,
}

/// A control-plane component that talks to the API server with its own identity, as upstream
/// components do (`system:kube-controller-manager`, ...), and gets `DATA_DIR/<file>`.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    pub user: &'static str,
    pub file_stem: &'static str,
}

pub const COMPONENTS: &[Component] = &[
    Component {
        user: "system:kube-controller-manager",
        file_stem: "controller-manager",
    },
    Component {
        user: "system:kube-scheduler",
        file_stem: "scheduler",
    },
];

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const VALID_DAYS: i64 = 3650;

impl Pki {
    /// Loads the cluster CA and admin credentials from `data_dir/pki`, creating them on first
    /// start, and issues a serving certificate for `hosts` (names and addresses clients dial).
    pub fn ensure(data_dir: &Path, hosts: &[String]) -> anyhow::Result<Pki> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (ca_pem, ca_key) = match (read(&dir, CA_CERT)?, read(&dir, CA_KEY)?) {
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                let (cert, key) = new_ca()?;
                write(&dir, CA_KEY, &key, true)?;
                write(&dir, CA_CERT, &cert, false)?;
                tracing::info!(dir = %dir.display(), "created the cluster CA");
                (cert, key)
            }
        };
        let ca_key_pair = KeyPair::from_pem(&ca_key).context("the cluster CA key is unreadable")?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair).context("the cluster CA certificate is unreadable")?;

        let admin = client_credentials(&dir, &issuer, "admin", "kubernetes-admin", &["system:masters"])?;
        let components = COMPONENTS
            .iter()
            .map(|c| Ok((*c, client_credentials(&dir, &issuer, c.file_stem, c.user, &[])?)))
            .collect::<anyhow::Result<_>>()?;
        let serving = issue_serving(&issuer, hosts)?;
        let kubelet_client = client_credentials(
            &dir,
            &issuer,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &[],
        )?;
        Ok(Pki {
            ca_pem,
            serving,
            admin,
            kubelet_client,
            components,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Client credentials kept as `<stem>.crt` and `<stem>.key`, issued on first start.
fn client_credentials(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    stem: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<CertAndKey> {
    let (cert_file, key_file) = (format!("{stem}.crt"), format!("{stem}.key"));
    if let (Some(cert_pem), Some(key_pem)) = (read(dir, &cert_file)?, read(dir, &key_file)?) {
        return Ok(CertAndKey { cert_pem, key_pem });
    }
    let issued = issue_client(issuer, user, groups)?;
    write(dir, &key_file, &issued.key_pem, true)?;
    write(dir, &cert_file, &issued.cert_pem, false)?;
    Ok(issued)
}

fn read(dir: &Path, name: &str) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.join(name).display())),
    }
}

/// Writes atomically (temp file + rename); private keys are readable by the owner only.
pub fn write(dir: &Path, name: &str, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Valid from an hour ago (clock skew between nodes) for ten years.
fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
}

fn new_ca() -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "styrman-ca");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A node's credentials, issued by the cluster CA under `data_dir/pki`: its client certificate
/// (`system:node:<name>` in `system:nodes`, as the kubelet's TLS bootstrap gets it) and the
/// serving certificate of its HTTPS port for its name and addresses.
pub struct NodeCredentials {
    pub ca_pem: String,
    pub client: CertAndKey,
    pub serving: CertAndKey,
}

pub fn node_credentials(data_dir: &Path, node: &str, addresses: &[IpAddr]) -> anyhow::Result<NodeCredentials> {
    let dir = data_dir.join("pki");
    let (Some(ca_pem), Some(ca_key)) = (read(&dir, CA_CERT)?, read(&dir, CA_KEY)?) else {
        anyhow::bail!("no cluster CA in {} (has the server started there?)", dir.display());
    };
    let key = KeyPair::from_pem(&ca_key).context("the cluster CA key is unreadable")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).context("the cluster CA certificate is unreadable")?;
    let client = issue_client(&issuer, &format!("system:node:{node}"), &["system:nodes"])?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("system:node:{node}"));
    name.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name = name;
    params.subject_alt_names = std::iter::once(Ok(SanType::DnsName(node.try_into()?)))
        .chain(addresses.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    let serving = sign(params, ExtendedKeyUsagePurpose::ServerAuth, &issuer)?;
    Ok(NodeCredentials {
        ca_pem,
        client,
        serving,
    })
}

fn issue_serving(issuer: &Issuer<'_, KeyPair>, hosts: &[String]) -> anyhow::Result<CertAndKey> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = name;
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    sans.extend(hosts.iter().cloned());
    sans.sort();
    sans.dedup();
    params.subject_alt_names = sans
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(h.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    sign(params, ExtendedKeyUsagePurpose::ServerAuth, issuer)
}

/// A client certificate: the common name is the user, each organisation a group.
pub fn issue_client(issuer: &Issuer<'_, KeyPair>, user: &str, groups: &[&str]) -> anyhow::Result<CertAndKey> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, user);
    for group in groups {
        name.push(DnType::OrganizationName, *group);
    }
    params.distinguished_name = name;
    sign(params, ExtendedKeyUsagePurpose::ClientAuth, issuer)
}

/// Issues a leaf certificate for one purpose (server or client authentication) with a new key.
fn sign(
    mut params: CertificateParams,
    purpose: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<CertAndKey> {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![purpose];
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
