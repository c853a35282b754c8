//! Signed requests. Every RPC carries, in gRPC metadata, the sender's node id, a Unix timestamp
//! (seconds), a random nonce, the SHA-256 of the request body and a signature over
//!
//! ```text
//! SHA-256("magnet-p2p/v1\n" nodeId "\n" timestamp "\n" method "\n" bodySha256Hex "\n" nonce)
//! ```
//!
//! Wallet mode signs with secp256k1 (65-byte compact recoverable signature r‖s‖v, low-S only); the
//! verifier recovers the key and requires `node_id(key) == nodeId`. Cluster mode is HMAC-SHA256 with a
//! shared secret, compared in constant time. Timestamps more than `window` away from now are refused,
//! and a nonce seen inside the window is a replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::identity::node_id;

/// Metadata key: claimed node id.
pub const H_NODE: &str = "x-magnet-node-id";
/// Metadata key: Unix seconds.
pub const H_TS: &str = "x-magnet-timestamp";
/// Metadata key: 128-bit random nonce, hex.
pub const H_NONCE: &str = "x-magnet-nonce";
/// Metadata key: hex SHA-256 of the request body (protobuf bytes, or the whole streamed payload).
pub const H_BODY: &str = "x-magnet-body-sha256";
/// Metadata key: hex signature (65 bytes wallet, 32 bytes cluster).
pub const H_SIG: &str = "x-magnet-signature";

/// Default freshness window (paper: 5 minutes).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Bound on remembered nonces, so a flood cannot exhaust memory.
const MAX_NONCES: usize = 1_000_000;

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A metadata entry is absent or not ASCII.
    #[error("missing or unreadable signature header {0}")]
    MissingHeader(&'static str),
    /// A metadata entry does not parse.
    #[error("malformed header {header}: {detail}")]
    Malformed {
        /// Header name.
        header: &'static str,
        /// Why.
        detail: String,
    },
    /// Timestamp older than the window.
    #[error("stale timestamp: {ts} is {age}s old, window is {window}s")]
    Stale {
        /// Claimed time.
        ts: i64,
        /// now - ts.
        age: i64,
        /// Window in seconds.
        window: i64,
    },
    /// Timestamp ahead of the window.
    #[error("timestamp from the future: {ts} is {ahead}s ahead, window is {window}s")]
    Future {
        /// Claimed time.
        ts: i64,
        /// ts - now.
        ahead: i64,
        /// Window in seconds.
        window: i64,
    },
    /// The nonce was already used by this node inside the window.
    #[error("replayed request: nonce {nonce} from {node} already seen inside the window")]
    Replay {
        /// Sender.
        node: String,
        /// Nonce.
        nonce: String,
    },
    /// Too many outstanding nonces.
    #[error("nonce cache full ({0} entries); refusing until entries expire")]
    NonceCacheFull(usize),
    /// The body does not hash to the signed body hash.
    #[error("body hash mismatch: signed {signed}, received body hashes to {actual}")]
    BodyMismatch {
        /// From metadata.
        signed: String,
        /// Computed.
        actual: String,
    },
    /// s > n/2: malleable signature.
    #[error("high-S signature refused (only low-S signatures are accepted)")]
    HighS,
    /// The signature does not verify or recover.
    #[error("invalid signature: {0}")]
    BadSignature(String),
    /// The recovered key belongs to another node id.
    #[error("signature is by {recovered}, not by the claimed node {claimed}")]
    WrongSigner {
        /// Claimed node id.
        claimed: String,
        /// Node id of the recovered key.
        recovered: String,
    },
    /// HMAC does not match.
    #[error("HMAC mismatch: request not signed with this cluster's shared secret")]
    BadHmac,
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// The bytes whose SHA-256 is signed.
pub fn signing_message(
    node: &str,
    ts: i64,
    method: &str,
    body_sha256: &str,
    nonce: &str,
) -> Vec<u8> {
    format!("magnet-p2p/v1\n{node}\n{ts}\n{method}\n{body_sha256}\n{nonce}").into_bytes()
}

/// hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How requests are signed and verified.
#[derive(Clone)]
pub enum AuthMode {
    /// secp256k1 recoverable signatures by the node key.
    Wallet,
    /// HMAC-SHA256 with a secret shared by the cluster.
    Cluster(Arc<Vec<u8>>),
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMode::Wallet => write!(f, "Wallet"),
            AuthMode::Cluster(_) => write!(f, "Cluster(<secret>)"),
        }
    }
}

/// The signature headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Claimed node id.
    pub node_id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// hex nonce.
    pub nonce: String,
    /// hex SHA-256 of the body.
    pub body_sha256: String,
    /// hex signature.
    pub signature: String,
}

impl SignedHeaders {
    /// Writes the headers into request metadata.
    pub fn insert_into(&self, md: &mut MetadataMap) -> Result<(), AuthError> {
        let pairs: [(&'static str, String); 5] = [
            (H_NODE, self.node_id.clone()),
            (H_TS, self.timestamp.to_string()),
            (H_NONCE, self.nonce.clone()),
            (H_BODY, self.body_sha256.clone()),
            (H_SIG, self.signature.clone()),
        ];
        for (k, v) in pairs {
            let v = v.parse().map_err(|_| AuthError::Malformed {
                header: k,
                detail: "not ASCII".into(),
            })?;
            md.insert(k, v);
        }
        Ok(())
    }

    /// Reads the headers from request metadata.
    pub fn from_metadata(md: &MetadataMap) -> Result<Self, AuthError> {
        let get = |k: &'static str| -> Result<String, AuthError> {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or(AuthError::MissingHeader(k))
        };
        let ts = get(H_TS)?;
        Ok(Self {
            node_id: get(H_NODE)?,
            timestamp: ts
                .parse()
                .map_err(|e: std::num::ParseIntError| AuthError::Malformed {
                    header: H_TS,
                    detail: e.to_string(),
                })?,
            nonce: get(H_NONCE)?,
            body_sha256: get(H_BODY)?,
            signature: get(H_SIG)?,
        })
    }
}

/// Signs outgoing requests as this node.
#[derive(Clone, Debug)]
pub struct Signer {
    key: SigningKey,
    node_id: String,
    mode: AuthMode,
}

impl Signer {
    /// A signer for `key` in `mode`.
    pub fn new(key: SigningKey, mode: AuthMode) -> Self {
        let node_id = node_id(key.verifying_key());
        Self { key, node_id, mode }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Signs a request whose body hashes to `body_sha256`, at time `ts` with `nonce`.
    pub fn sign_at(&self, method: &str, body_sha256: &str, ts: i64, nonce: &str) -> SignedHeaders {
        let msg = signing_message(&self.node_id, ts, method, body_sha256, nonce);
        let signature = match &self.mode {
            AuthMode::Wallet => {
                let digest = Sha256::digest(&msg);
                match self.key.sign_prehash_recoverable(&digest) {
                    // k256 signs with low-S already; normalize defensively.
                    Ok((sig, recid)) => {
                        let (sig, recid) = match sig.normalize_s() {
                            Some(n) => {
                                (n, RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced()))
                            }
                            None => (sig, recid),
                        };
                        let mut bytes = sig.to_bytes().to_vec();
                        bytes.push(recid.to_byte());
                        hex::encode(bytes)
                    }
                    // Signing a 32-byte digest with a valid key cannot fail; an empty signature is refused by peers.
                    Err(_) => String::new(),
                }
            }
            AuthMode::Cluster(secret) => hex::encode(hmac_sha256(secret, &msg)),
        };
        SignedHeaders {
            node_id: self.node_id.clone(),
            timestamp: ts,
            nonce: nonce.to_string(),
            body_sha256: body_sha256.to_string(),
            signature,
        }
    }

    /// Signs a request now with a fresh random nonce.
    pub fn sign(&self, method: &str, body_sha256: &str) -> SignedHeaders {
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        self.sign_at(method, body_sha256, unix_now(), &hex::encode(nonce))
    }

    /// Builds a signed `tonic::Request` for a unary message.
    pub fn request<T: prost::Message>(
        &self,
        method: &str,
        msg: T,
    ) -> Result<tonic::Request<T>, AuthError> {
        let body = sha256_hex(&msg.encode_to_vec());
        let headers = self.sign(method, &body);
        let mut req = tonic::Request::new(msg);
        headers.insert_into(req.metadata_mut())?;
        Ok(req)
    }
}

fn hmac_sha256(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Verifies incoming requests: signature, freshness window and nonce replay cache.
#[derive(Clone, Debug)]
pub struct Verifier {
    mode: AuthMode,
    window: Duration,
    nonces: Arc<Mutex<HashMap<(String, String), i64>>>,
}

impl Verifier {
    /// A verifier with the given mode and freshness window.
    pub fn new(mode: AuthMode, window: Duration) -> Self {
        Self {
            mode,
            window,
            nonces: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Verifies `headers` for `method` at time `now`; returns the authenticated node id.
    /// `body_sha256` is the hash of the body actually received, when known (unary requests).
    pub fn verify_at(
        &self,
        headers: &SignedHeaders,
        method: &str,
        body_sha256: Option<&str>,
        now: i64,
    ) -> Result<String, AuthError> {
        let window = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        let delta = now.saturating_sub(headers.timestamp);
        if delta > window {
            return Err(AuthError::Stale {
                ts: headers.timestamp,
                age: delta,
                window,
            });
        }
        if delta < window.saturating_neg() {
            return Err(AuthError::Future {
                ts: headers.timestamp,
                ahead: delta.saturating_neg(),
                window,
            });
        }
        if let Some(actual) = body_sha256 {
            if actual != headers.body_sha256 {
                return Err(AuthError::BodyMismatch {
                    signed: headers.body_sha256.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        if headers.nonce.is_empty() || headers.nonce.len() > 64 {
            return Err(AuthError::Malformed {
                header: H_NONCE,
                detail: "nonce must be 1..=64 characters".into(),
            });
        }
        let msg = signing_message(
            &headers.node_id,
            headers.timestamp,
            method,
            &headers.body_sha256,
            &headers.nonce,
        );
        let sig = hex::decode(&headers.signature).map_err(|e| AuthError::Malformed {
            header: H_SIG,
            detail: e.to_string(),
        })?;
        match &self.mode {
            AuthMode::Wallet => {
                if sig.len() != 65 {
                    return Err(AuthError::Malformed {
                        header: H_SIG,
                        detail: format!("expected 65 bytes (r‖s‖v), got {}", sig.len()),
                    });
                }
                let signature = Signature::from_slice(&sig[..64])
                    .map_err(|e| AuthError::BadSignature(e.to_string()))?;
                if signature.normalize_s().is_some() {
                    return Err(AuthError::HighS);
                }
                let recid = RecoveryId::from_byte(sig[64]).ok_or_else(|| {
                    AuthError::BadSignature(format!("recovery id {} out of range", sig[64]))
                })?;
                let digest = Sha256::digest(&msg);
                let key = VerifyingKey::recover_from_prehash(&digest, &signature, recid)
                    .map_err(|e| AuthError::BadSignature(format!("key recovery failed: {e}")))?;
                let recovered = node_id(&key);
                if recovered != headers.node_id {
                    return Err(AuthError::WrongSigner {
                        claimed: headers.node_id.clone(),
                        recovered,
                    });
                }
            }
            AuthMode::Cluster(secret) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadHmac)?;
                mac.update(&msg);
                mac.verify_slice(&sig).map_err(|_| AuthError::BadHmac)?;
            }
        }
        // Only authentic requests reach the nonce cache, so forgers cannot fill it.
        let mut nonces = self
            .nonces
            .lock()
            .map_err(|_| AuthError::NonceCacheFull(0))?;
        if nonces.len() >= MAX_NONCES {
            nonces.retain(|_, expiry| *expiry >= now);
            if nonces.len() >= MAX_NONCES {
                return Err(AuthError::NonceCacheFull(nonces.len()));
            }
        }
        let key = (headers.node_id.clone(), headers.nonce.clone());
        match nonces.get(&key) {
            Some(expiry) if *expiry >= now => {
                return Err(AuthError::Replay {
                    node: headers.node_id.clone(),
                    nonce: headers.nonce.clone(),
                })
            }
            _ => {}
        }
        // A nonce must be remembered as long as its timestamp is acceptable: until ts + window.
        nonces.insert(key, headers.timestamp.saturating_add(window));
        Ok(headers.node_id.clone())
    }

    /// Verifies a unary request: recomputes the body hash from the decoded message.
    pub fn verify_request<T: prost::Message>(
        &self,
        req: &tonic::Request<T>,
        method: &str,
    ) -> Result<String, tonic::Status> {
        let headers = SignedHeaders::from_metadata(req.metadata())?;
        let body = sha256_hex(&req.get_ref().encode_to_vec());
        Ok(self.verify_at(&headers, method, Some(&body), unix_now())?)
    }

    /// Verifies the headers of a streaming request; the caller checks the payload against
    /// the returned signed body hash once the stream is complete.
    pub fn verify_stream_headers(
        &self,
        md: &MetadataMap,
        method: &str,
    ) -> Result<SignedHeaders, tonic::Status> {
        let headers = SignedHeaders::from_metadata(md)?;
        self.verify_at(&headers, method, None, unix_now())?;
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "/magnet.p2p.v1.P2p/AnnounceRound";
    const NOW: i64 = 1_800_000_000;

    fn wallet() -> (Signer, Verifier) {
        let key = SigningKey::random(&mut rand_core::OsRng);
        (
            Signer::new(key, AuthMode::Wallet),
            Verifier::new(AuthMode::Wallet, DEFAULT_WINDOW),
        )
    }

    fn body() -> String {
        sha256_hex(b"round 7")
    }

    #[test]
    fn wallet_signature_verifies_and_binds_node_id() {
        let (s, v) = wallet();
        let h = s.sign_at(M, &body(), NOW, "n1");
        assert_eq!(
            v.verify_at(&h, M, Some(&body()), NOW).expect("valid"),
            s.node_id()
        );
    }

    #[test]
    fn forged_signature_is_refused() {
        let (s, v) = wallet();
        let mut h = s.sign_at(M, &body(), NOW, "n1");
        // Flip a bit of r.
        let mut sig = hex::decode(&h.signature).expect("hex");
        sig[5] ^= 1;
        h.signature = hex::encode(sig);
        let err = v.verify_at(&h, M, Some(&body()), NOW).expect_err("forged");
        assert!(
            matches!(
                err,
                AuthError::WrongSigner { .. } | AuthError::BadSignature(_)
            ),
            "{err}"
        );
        // Signed for another method: recovers another key, so the binding fails.
        let h = s.sign_at("/magnet.p2p.v1.P2p/ProposeLeader", &body(), NOW, "n2");
        assert!(v.verify_at(&h, M, Some(&body()), NOW).is_err());
    }

    #[test]
    fn signature_by_another_key_than_the_claimed_node_is_refused() {
        let (s, v) = wallet();
        let (mallory, _) = wallet();
        let mut h = mallory.sign_at(M, &body(), NOW, "n1");
        h.node_id = s.node_id().to_string();
        let err = v
            .verify_at(&h, M, Some(&body()), NOW)
            .expect_err("impostor");
        // The message names the claimed node, so recovery yields some third key, never the claimed one.
        match &err {
            AuthError::WrongSigner { claimed, recovered } => {
                assert_eq!(claimed, s.node_id());
                assert_ne!(recovered, s.node_id());
            }
            other => panic!("expected WrongSigner, got {other:?}"),
        }
        assert!(err.to_string().contains("not by the claimed node"));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let (s, v) = wallet();
        let h = s.sign_at(M, &body(), NOW - 301, "old");
        assert!(matches!(
            v.verify_at(&h, M, Some(&body()), NOW),
            Err(AuthError::Stale { age: 301, .. })
        ));
        let h = s.sign_at(M, &body(), NOW + 301, "new");
        assert!(matches!(
            v.verify_at(&h, M, Some(&body()), NOW),
            Err(AuthError::Future { ahead: 301, .. })
        ));
        // The edges of the window are accepted.
        let h = s.sign_at(M, &body(), NOW - 300, "edge1");
        assert!(v.verify_at(&h, M, Some(&body()), NOW).is_ok());
        let h = s.sign_at(M, &body(), NOW + 300, "edge2");
        assert!(v.verify_at(&h, M, Some(&body()), NOW).is_ok());
    }

    #[test]
    fn replay_inside_the_window_is_refused_and_nonce_expires_after() {
        let (s, v) = wallet();
        let h = s.sign_at(M, &body(), NOW, "same-nonce");
        assert!(v.verify_at(&h, M, Some(&body()), NOW).is_ok());
        let err = v
            .verify_at(&h, M, Some(&body()), NOW + 10)
            .expect_err("replay");
        assert!(matches!(err, AuthError::Replay { .. }), "{err}");
        // After the window the timestamp itself is stale, so the replay is still refused.
        assert!(matches!(
            v.verify_at(&h, M, Some(&body()), NOW + 301),
            Err(AuthError::Stale { .. })
        ));
    }

    #[test]
    fn high_s_signature_is_refused() {
        let (s, v) = wallet();
        let h = s.sign_at(M, &body(), NOW, "n1");
        let raw = hex::decode(&h.signature).expect("hex");
        let sig = Signature::from_slice(&raw[..64]).expect("sig");
        // (r, n - s) with the flipped recovery parity is the same signature, malleated to high-S.
        let (r, s_low) = sig.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s_low).to_bytes()).expect("high-s");
        assert!(
            high.normalize_s().is_some(),
            "constructed signature must be high-S"
        );
        let mut bytes = high.to_bytes().to_vec();
        bytes.push(raw[64] ^ 1);
        let forged = SignedHeaders {
            signature: hex::encode(bytes),
            nonce: "n2".into(),
            ..h
        };
        assert_eq!(
            v.verify_at(&forged, M, Some(&body()), NOW),
            Err(AuthError::HighS)
        );
    }

    #[test]
    fn body_hash_mismatch_is_refused() {
        let (s, v) = wallet();
        let h = s.sign_at(M, &body(), NOW, "n1");
        let other = sha256_hex(b"round 8");
        assert!(matches!(
            v.verify_at(&h, M, Some(&other), NOW),
            Err(AuthError::BodyMismatch { .. })
        ));
    }

    #[test]
    fn cluster_hmac_verifies_and_wrong_secret_is_refused() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let s = Signer::new(
            key.clone(),
            AuthMode::Cluster(Arc::new(b"cluster-secret".to_vec())),
        );
        let v = Verifier::new(
            AuthMode::Cluster(Arc::new(b"cluster-secret".to_vec())),
            DEFAULT_WINDOW,
        );
        let h = s.sign_at(M, &body(), NOW, "n1");
        assert_eq!(
            v.verify_at(&h, M, Some(&body()), NOW).expect("ok"),
            s.node_id()
        );
        assert!(matches!(
            v.verify_at(&h, M, Some(&body()), NOW),
            Err(AuthError::Replay { .. })
        ));
        let wrong = Signer::new(key, AuthMode::Cluster(Arc::new(b"other-secret".to_vec())));
        let h = wrong.sign_at(M, &body(), NOW, "n2");
        assert_eq!(
            v.verify_at(&h, M, Some(&body()), NOW),
            Err(AuthError::BadHmac)
        );
        // A wallet signature presented to a cluster verifier fails as a bad HMAC too.
        let (w, _) = wallet();
        let h = w.sign_at(M, &body(), NOW, "n3");
        assert_eq!(
            v.verify_at(&h, M, Some(&body()), NOW),
            Err(AuthError::BadHmac)
        );
    }

    #[test]
    fn headers_roundtrip_through_metadata() {
        let (s, _) = wallet();
        let h = s.sign_at(M, &body(), NOW, "abc");
        let mut md = MetadataMap::new();
        h.insert_into(&mut md).expect("insert");
        assert_eq!(SignedHeaders::from_metadata(&md).expect("read"), h);
        md.remove(H_SIG);
        assert_eq!(
            SignedHeaders::from_metadata(&md),
            Err(AuthError::MissingHeader(H_SIG))
        );
    }
}
