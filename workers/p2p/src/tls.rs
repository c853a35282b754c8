//! TLS 1.3 only, with trust-on-first-use pinning of self-signed peer certificates.
//!
//! Each node creates a self-signed certificate (`tls_cert.pem`, `tls_key.pem`, 0600) in its data
//! dir on first start. A client pins the SHA-256 of the certificate a peer address presents on first
//! contact (`known_peers.json`); afterwards the pin is checked by the rustls verifier inside the very
//! handshake of the connection that carries the RPC, and a different certificate aborts it.
//! `MAGNET_P2P_CERT` / `MAGNET_P2P_KEY` replace the self-signed pair, and `MAGNET_P2P_CA` switches
//! peers to ordinary CA verification (the peer's IP or DNS name must be in its certificate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::auth::sha256_hex;

/// Environment variable: PEM certificate chain to serve instead of the self-signed one.
pub const ENV_CERT: &str = "MAGNET_P2P_CERT";
/// Environment variable: PEM private key for `MAGNET_P2P_CERT`.
pub const ENV_KEY: &str = "MAGNET_P2P_KEY";
/// Environment variable: PEM CA bundle; when set, peers are verified against it instead of pinned.
pub const ENV_CA: &str = "MAGNET_P2P_CA";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key this node serves.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// From `MAGNET_P2P_CERT`/`MAGNET_P2P_KEY` if both are set, else the self-signed pair in `dir`
    /// (created on first start).
    pub fn load_or_create(dir: &Path, names: &[String]) -> anyhow::Result<Self> {
        match (std::env::var_os(ENV_CERT), std::env::var_os(ENV_KEY)) {
            (Some(cert), Some(key)) => Self::from_pem_files(Path::new(&cert), Path::new(&key)),
            (None, None) => Self::self_signed(dir, names),
            _ => anyhow::bail!("{ENV_CERT} and {ENV_KEY} must be set together"),
        }
    }

    /// Loads a PEM certificate chain and key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("open {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parse {}", cert.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("parse key {}", key.display()))?;
        Ok(Self { certs, key })
    }

    /// Loads or creates `dir/tls_cert.pem` and `dir/tls_key.pem` (0600).
    pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<Self> {
        let cert = dir.join("tls_cert.pem");
        let key = dir.join("tls_key.pem");
        if !cert.exists() || !key.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let mut sans = vec!["localhost".to_string()];
            sans.extend(names.iter().cloned());
            let generated = rcgen::generate_simple_self_signed(sans)
                .context("generate self-signed certificate")?;
            crate::identity::write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
            crate::identity::write_private(&cert, generated.cert.pem().as_bytes())?;
        }
        Self::from_pem_files(&cert, &key)
    }

    /// SHA-256 fingerprint of the leaf certificate.
    pub fn fingerprint(&self) -> String {
        self.certs
            .first()
            .map(|c| sha256_hex(c.as_ref()))
            .unwrap_or_default()
    }

    /// Server configuration: TLS 1.3 only, ALPN h2, no client certificates (requests are signed).
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 protocol")?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .context("server certificate")?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Pins of peer certificates, by peer address, persisted as JSON.
#[derive(Debug)]
pub struct PinStore {
    path: Option<PathBuf>,
    pins: Mutex<BTreeMap<String, String>>,
}

impl PinStore {
    /// Opens `path` (created on the first pin).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let pins = if path.exists() {
            let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            pins: Mutex::new(pins),
        })
    }

    /// A store that is not persisted (tools and benchmarks).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            pins: Mutex::new(BTreeMap::new()),
        }
    }

    /// The pinned fingerprint of `peer`, if any.
    pub fn get(&self, peer: &str) -> Option<String> {
        self.pins.lock().ok().and_then(|p| p.get(peer).cloned())
    }

    /// Pins on first contact, accepts the same certificate later, refuses a different one.
    fn check_or_pin(&self, peer: &str, fingerprint: &str) -> Result<(), rustls::Error> {
        let mut pins = self
            .pins
            .lock()
            .map_err(|_| rustls::Error::General("pin store poisoned".into()))?;
        match pins.get(peer) {
            Some(pinned) if pinned == fingerprint => Ok(()),
            Some(pinned) => Err(rustls::Error::General(format!(
                "TLS certificate of peer {peer} changed: pinned sha256 {pinned}, presented {fingerprint}; \
                 refusing (possible impersonation). If the peer really rotated its key, remove its entry from {}",
                self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the pin store".into())
            ))),
            None => {
                pins.insert(peer.to_string(), fingerprint.to_string());
                if let Some(path) = &self.path {
                    let json = serde_json::to_vec_pretty(&*pins)
                        .map_err(|e| rustls::Error::General(format!("serialize pins: {e}")))?;
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, json)
                        .and_then(|()| std::fs::rename(&tmp, path))
                        .map_err(|e| rustls::Error::General(format!("persist pin for {peer}: {e}")))?;
                }
                tracing::info!(peer, fingerprint, "pinned peer certificate on first contact");
                Ok(())
            }
        }
    }
}

/// How a client decides to trust a peer's certificate.
#[derive(Clone, Debug)]
pub enum PeerTrust {
    /// Trust on first use, pinned per peer address.
    Tofu(Arc<PinStore>),
    /// Certificates signed by these CAs.
    Ca(Arc<RootCertStore>),
}

impl PeerTrust {
    /// `MAGNET_P2P_CA` if set, else TOFU pins in `dir/known_peers.json`.
    pub fn from_env_or_dir(dir: &Path) -> anyhow::Result<Self> {
        match std::env::var_os(ENV_CA) {
            Some(ca) => Self::ca_from_pem(Path::new(&ca)),
            None => Ok(PeerTrust::Tofu(Arc::new(PinStore::open(
                &dir.join("known_peers.json"),
            )?))),
        }
    }

    /// CA verification with the certificates of a PEM bundle.
    pub fn ca_from_pem(path: &Path) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("open {}", path.display()))?
        {
            roots
                .add(cert.with_context(|| format!("parse {}", path.display()))?)
                .context("add CA certificate")?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "{} holds no CA certificate",
            path.display()
        );
        Ok(PeerTrust::Ca(Arc::new(roots)))
    }

    /// Client configuration for dialing `peer` (host:port): TLS 1.3 only, ALPN h2.
    pub fn client_config(&self, peer: &str) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 protocol")?;
        let mut cfg = match self {
            PeerTrust::Tofu(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TofuVerifier {
                    peer: peer.to_string(),
                    pins: pins.clone(),
                    provider: provider(),
                }))
                .with_no_client_auth(),
            PeerTrust::Ca(roots) => builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Accepts the certificate pinned for `peer` (or pins it on first contact) and checks that the
/// handshake is signed by that certificate's key.
#[derive(Debug)]
struct TofuVerifier {
    peer: String,
    pins: Arc<PinStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for TofuVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.pins
            .check_or_pin(&self.peer, &sha256_hex(end_entity.as_ref()))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not accepted by MAGNET p2p".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_is_persisted_with_0600_and_pins_refuse_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = TlsIdentity::self_signed(dir.path(), &[]).expect("create");
        let b = TlsIdentity::self_signed(dir.path(), &[]).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        for f in ["tls_key.pem", "tls_cert.pem"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        a.server_config().expect("server config");
        let pins = PinStore::open(&dir.path().join("known_peers.json")).expect("pins");
        pins.check_or_pin("127.0.0.70:1", "aa")
            .expect("first contact pins");
        pins.check_or_pin("127.0.0.70:1", "aa")
            .expect("same cert accepted");
        let err = pins
            .check_or_pin("127.0.0.70:1", "bb")
            .expect_err("changed");
        assert!(err.to_string().contains("changed"), "{err}");
        let reopened = PinStore::open(&dir.path().join("known_peers.json")).expect("reopen");
        assert_eq!(reopened.get("127.0.0.70:1").as_deref(), Some("aa"));
    }
}
