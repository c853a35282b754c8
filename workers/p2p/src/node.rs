//! Everything a node needs from its data dir: key, node id, signer, verifier, TLS identity and
//! peer trust; plus `serve_p2p` to run the P2p service.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::{AuthMode, Signer, Verifier};
use crate::proto::p2p_server::P2pServer;
use crate::proto::PeerInfo;
use crate::service::P2pService;
use crate::tls::{PeerTrust, TlsIdentity};
use crate::transport::{self, ServerHandle, MAX_MESSAGE_BYTES};

/// Environment variable with the cluster shared secret; when set, requests use HMAC (cluster mode).
pub const ENV_CLUSTER_SECRET: &str = "MAGNET_P2P_CLUSTER_SECRET";

/// A node's credentials, loaded from (or created in) its data dir.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// `node-<16 hex>`.
    pub node_id: String,
    /// Signs outgoing requests.
    pub signer: Signer,
    /// Verifies incoming requests.
    pub verifier: Verifier,
    /// Served certificate.
    pub tls: Arc<TlsIdentity>,
    /// How peers' certificates are trusted.
    pub trust: PeerTrust,
}

impl NodeIdentity {
    /// Loads or creates the node key, TLS certificate and pin store in `dir`.
    pub fn load(dir: &Path, mode: AuthMode, window: Duration) -> anyhow::Result<Self> {
        let key = crate::identity::load_or_create_key(dir)?;
        let node_id = crate::identity::node_id(key.verifying_key());
        let tls = TlsIdentity::load_or_create(dir, std::slice::from_ref(&node_id))?;
        let trust = PeerTrust::from_env_or_dir(dir)?;
        Ok(Self {
            signer: Signer::new(key, mode.clone()),
            verifier: Verifier::new(mode, window),
            node_id,
            tls: Arc::new(tls),
            trust,
        })
    }

    /// Cluster mode if `MAGNET_P2P_CLUSTER_SECRET` is set, else wallet mode.
    pub fn mode_from_env() -> AuthMode {
        match std::env::var(ENV_CLUSTER_SECRET) {
            Ok(s) if !s.is_empty() => AuthMode::Cluster(Arc::new(s.into_bytes())),
            _ => AuthMode::Wallet,
        }
    }

    /// Dials a peer.
    pub async fn connect(&self, peer: &str) -> anyhow::Result<tonic::transport::Channel> {
        transport::connect(peer, &self.trust).await
    }

    /// A P2p client for a peer, with MAGNET's message limits.
    pub async fn p2p_client(
        &self,
        peer: &str,
    ) -> anyhow::Result<crate::proto::p2p_client::P2pClient<tonic::transport::Channel>> {
        Ok(
            crate::proto::p2p_client::P2pClient::new(self.connect(peer).await?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }
}

/// Binds `listen` and serves the P2p service over TLS.
pub async fn serve_p2p(
    identity: &NodeIdentity,
    listen: &str,
    role: &str,
    max_gradient_bytes: u64,
) -> anyhow::Result<(ServerHandle, P2pService)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let addr = listener.local_addr()?;
    let me = PeerInfo {
        node_id: identity.node_id.clone(),
        addr: addr.to_string(),
        role: role.to_string(),
        last_seen: 0,
    };
    let service = P2pService::new(identity.verifier.clone(), me, max_gradient_bytes);
    let router = transport::server_builder().add_service(
        P2pServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let handle = transport::serve(listener, identity.tls.server_config()?, router)?;
    Ok((handle, service))
}
