//! `--web.config.file`: TLS and basic authentication in the Prometheus
//! exporter-toolkit format (YAML), so operators reuse the file they already
//! write for node_exporter:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: ca.crt                         # with client auth
//!   min_version: TLS12                             # TLS12 (default) or TLS13
//! basic_auth_users:
//!   alice: $2y$10$...              # bcrypt hash
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! ```
//!
//! Unknown keys are errors, as in exporter-toolkit. bcrypt is slow on
//! purpose, so a verified (user, password) is remembered by a keyed digest,
//! never in clear.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    http_server_config: Option<RawHttpServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpServer {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The loaded web configuration.
pub struct WebSecurity {
    /// TLS settings, when the file has `tls_server_config`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Extra response headers.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 20]>>,
    cache_key: [u8; 16],
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// No authentication configured, or the credentials are right.
    Allowed,
    /// Missing or wrong credentials.
    Denied,
}

impl WebSecurity {
    /// No TLS, no authentication.
    pub fn open() -> WebSecurity {
        WebSecurity::new(None, Vec::new(), BTreeMap::new())
    }

    fn new(
        tls: Option<Arc<rustls::ServerConfig>>,
        headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
        users: BTreeMap<String, String>,
    ) -> WebSecurity {
        let seed = std::collections::hash_map::RandomState::new();
        let mut key = [0u8; 16];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            let mut hasher = seed.build_hasher();
            hasher.write_usize(i);
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        WebSecurity {
            tls,
            headers,
            users,
            verified: Mutex::new(HashSet::new()),
            cache_key: key,
        }
    }

    /// Load and validate a web config file.
    ///
    /// # Errors
    /// A message naming the file and the problem (YAML, unknown key, unreadable
    /// certificate or key, bad bcrypt hash, unsupported option).
    pub fn load(path: &str) -> Result<WebSecurity, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
        let raw: RawWebConfig =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let base = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let resolve = |file: &str| -> PathBuf {
            let p = Path::new(file);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let tls = match raw.tls_server_config {
            Some(tls) => Some(Arc::new(
                server_config(&tls, resolve)
                    .map_err(|e| format!("{path}: tls_server_config: {e}"))?,
            )),
            None => None,
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(format!(
                    "{path}: basic_auth_users: user name {user:?} contains ':'"
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!("{path}: basic_auth_users: {user}: not a bcrypt hash ({e})")
            })?;
        }
        let mut headers = Vec::new();
        for (name, value) in raw
            .http_server_config
            .map(|h| h.headers)
            .unwrap_or_default()
        {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("{path}: http_server_config.headers: invalid header name {name:?}")
            })?;
            let value = hyper::header::HeaderValue::from_str(&value).map_err(|_| {
                format!("{path}: http_server_config.headers: invalid value for {name}")
            })?;
            headers.push((name, value));
        }
        Ok(WebSecurity::new(tls, headers, users))
    }

    /// True when basic auth is configured.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check an `Authorization` header. bcrypt runs only for credentials not
    /// verified before; call from a blocking-safe context (it takes ~50 ms at cost 10).
    pub fn check(&self, authorization: Option<&str>) -> Access {
        if self.users.is_empty() {
            return Access::Allowed;
        }
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return Access::Denied;
        };
        let Some(hash) = self.users.get(&user) else {
            return Access::Denied;
        };
        let mut mac =
            Hmac::<Sha1>::new_from_slice(&self.cache_key).expect("HMAC accepts any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.update(&[0]);
        mac.update(hash.as_bytes());
        let digest: [u8; 20] = mac.finalize().into_bytes().into();
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&digest)
        {
            return Access::Allowed;
        }
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(digest);
            Access::Allowed
        } else {
            Access::Denied
        }
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn server_config(
    tls: &RawTls,
    resolve: impl Fn(&str) -> PathBuf,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let cert_path = resolve(&tls.cert_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| format!("cert_file {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert_file {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no certificate found",
            cert_path.display()
        ));
    }
    let key_path = resolve(&tls.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("key_file {}: {e}", key_path.display()))?;

    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(format!(
                "min_version {other:?} is not supported (TLS12 or TLS13)"
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let client_auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match client_auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca_file = tls
                .client_ca_file
                .as_deref()
                .ok_or_else(|| format!("client_auth_type {client_auth} needs client_ca_file"))?;
            let ca_path = resolve(ca_file);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca_path)
                .map_err(|e| format!("client_ca_file {}: {e}", ca_path.display()))?
            {
                let cert =
                    cert.map_err(|e| format!("client_ca_file {}: {e}", ca_path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_path.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if client_auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca_file: {e}"))?,
            )
        }
        other => {
            return Err(format!(
                "client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mqaudit-webcfg-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn basic_auth_accepts_the_right_password_only_and_caches() {
        let dir = temp_dir("auth");
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let path = write(
            &dir,
            "web.yml",
            &format!("basic_auth_users:\n  alice: {hash}\n"),
        );
        let security = WebSecurity::load(&path).expect("loads");
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert_eq!(
            security.check(Some(&header("alice", "s3cret"))),
            Access::Allowed
        );
        assert_eq!(
            security.check(Some(&header("alice", "s3cret"))),
            Access::Allowed
        );
        assert_eq!(security.verified.lock().expect("lock").len(), 1);
        assert_eq!(
            security.check(Some(&header("alice", "wrong"))),
            Access::Denied
        );
        assert_eq!(
            security.check(Some(&header("bob", "s3cret"))),
            Access::Denied
        );
        assert_eq!(security.check(None), Access::Denied);
        assert_eq!(security.check(Some("Bearer x")), Access::Denied);
        assert_eq!(WebSecurity::open().check(None), Access::Allowed);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = temp_dir("bad");
        for (yaml, expected) in [
            (
                "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
                "cert_file",
            ),
            (
                "basic_auth_users:\n  alice: not-a-hash\n",
                "not a bcrypt hash",
            ),
            ("basic_auth_user:\n  alice: x\n", "unknown field"),
            (
                "http_server_config:\n  headers:\n    \"bad name\": x\n",
                "invalid header name",
            ),
        ] {
            let path = write(&dir, "web.yml", yaml);
            let err = WebSecurity::load(&path).expect_err(yaml);
            assert!(
                err.contains(expected) && err.contains("web.yml"),
                "{yaml}: {err}"
            );
        }
    }
}
