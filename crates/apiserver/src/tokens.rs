//! Service account tokens as TokenRequest (`serviceaccounts/<name>/token`) issues them: a JWT
//! (ES256, the key made on first start in `DATA_DIR/pki/sa.key`) with upstream's claims: the
//! issuer, `system:serviceaccount:<namespace>:<name>` as subject, the audiences asked for (the
//! API server's by default), expiry (1 h by default, 10 min at least), and the
//! `kubernetes.io` claim naming the namespace, the service account and the pod it is bound to.
//! The kubelet writes them into projected volumes. Authenticating them (and the keys' discovery
//! document) comes with the API server's token authenticators.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const KEY_FILE: &str = "sa.key";

pub struct TokenIssuer {
    key: EcdsaKeyPair,
    key_id: String,
    rng: ring::rand::SystemRandom,
}

/// What a token is for.
pub struct Claims<'a> {
    pub namespace: &'a str,
    pub service_account: (&'a str, &'a str),
    /// The pod it is bound to: name and uid.
    pub pod: Option<(&'a str, &'a str)>,
    pub audiences: &'a [String],
    pub expiration_seconds: i64,
}

impl TokenIssuer {
    /// Loads the signing key from `data_dir/pki`, or makes it.
    pub fn ensure(data_dir: &Path) -> anyhow::Result<TokenIssuer> {
        let dir = data_dir.join("pki");
        let path = dir.join(KEY_FILE);
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                let pem = rcgen::KeyPair::generate()?.serialize_pem();
                crate::pki::write(&dir, KEY_FILE, &pem, true)?;
                pem
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let der = rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a key", path.display()))?
            .serialize_der();
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| anyhow::anyhow!("{} is not an ECDSA P-256 key: {e}", path.display()))?;
        // The key id upstream uses: the SHA-256 of the public key, base64url.
        let key_id = {
            use sha2::Digest;
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.public_key().as_ref()))
        };
        Ok(TokenIssuer { key, key_id, rng })
    }

    /// A signed token; its expiry as Unix seconds.
    pub fn issue(&self, claims: &Claims<'_>, now: i64) -> anyhow::Result<(String, i64)> {
        let expires = now + claims.expiration_seconds;
        let (sa_name, sa_uid) = claims.service_account;
        let mut kubernetes = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": sa_name, "uid": sa_uid},
        });
        if let Some((pod_name, pod_uid)) = claims.pod {
            kubernetes["pod"] = json!({"name": pod_name, "uid": pod_uid});
        }
        let body = json!({
            "aud": claims.audiences,
            "exp": expires,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": kubernetes,
            "sub": format!("system:serviceaccount:{}:{sa_name}", claims.namespace),
        });
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON values encode"));
        let signed = format!("{}.{}", encode(&header), encode(&body));
        let signature = self
            .key
            .sign(&self.rng, signed.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing a token failed"))?;
        Ok((
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())),
            expires,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_upstreams_claims_and_verify_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::ensure(dir.path()).unwrap();
        let audiences = vec!["vault".to_string()];
        let claims = Claims {
            namespace: "ns",
            service_account: ("default", "sa-uid"),
            pod: Some(("p", "pod-uid")),
            audiences: &audiences,
            expiration_seconds: 600,
        };
        let (token, expires) = issuer.issue(&claims, 1000).unwrap();
        assert_eq!(expires, 1600);
        let parts: Vec<&str> = token.split('.').collect();
        let body: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body["sub"], "system:serviceaccount:ns:default");
        assert_eq!(body["aud"][0], "vault");
        assert_eq!(body["kubernetes.io"]["pod"]["uid"], "pod-uid");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            issuer.key.public_key().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .unwrap();
        // The same key after a restart.
        let again = TokenIssuer::ensure(dir.path()).unwrap();
        assert_eq!(again.key_id, issuer.key_id);
    }
}
