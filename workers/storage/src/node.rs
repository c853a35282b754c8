//! A storage node: the `Storage` gRPC service (next to `P2p`) over the signed TLS transport, backed
//! by a [`ShardStore`], plus the repair [`daemon`](crate::daemon).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use magnet_p2p::auth::Verifier;
use magnet_p2p::node::NodeIdentity;
use magnet_p2p::proto::p2p_server::P2pServer;
use magnet_p2p::proto::storage_server::{Storage, StorageServer};
use magnet_p2p::proto::{
    Ack, GetShardRequest, GetShardResponse, HasShardsRequest, HasShardsResponse,
    ListManifestsRequest, ListManifestsResponse, PeerInfo, PutManifestRequest, PutShardRequest,
    ReplicateShardRequest,
};
use magnet_p2p::service::{methods, P2pService};
use magnet_p2p::transport::{self, ServerHandle, MAX_MESSAGE_BYTES};
use tonic::{Request, Response, Status};

use crate::client::Peers;
use crate::erasure::Manifest;
use crate::store::{ShardStore, StoreError};

/// Configuration of a storage node. The timing defaults are the paper's; tests shorten them here.
#[derive(Clone, Debug)]
pub struct StorageNodeConfig {
    /// Key, certificate, pins, shards and manifests live here.
    pub data_dir: PathBuf,
    /// host:port to serve on.
    pub listen: String,
    /// Addresses of the other storage nodes.
    pub peers: Vec<String>,
    /// Daemon period (default 30 s).
    pub repair_interval: Duration,
    /// A holder not heard from for this long is stale (default 120 s).
    pub stale_after: Duration,
    /// Replication target per shard (default 3).
    pub replicas_min: usize,
    /// No replication beyond this many copies (default 5).
    pub replicas_max: usize,
    /// Repair traffic budget in bytes per second (default 32 MiB/s).
    pub repair_bytes_per_sec: u64,
    /// Signature freshness window (default 5 min).
    pub auth_window: Duration,
}

impl StorageNodeConfig {
    /// Defaults for a node in `data_dir` serving on `listen`.
    pub fn new(data_dir: PathBuf, listen: String, peers: Vec<String>) -> Self {
        Self {
            data_dir,
            listen,
            peers,
            repair_interval: Duration::from_secs(30),
            stale_after: Duration::from_secs(120),
            replicas_min: 3,
            replicas_max: 5,
            repair_bytes_per_sec: 32 * 1024 * 1024,
            auth_window: magnet_p2p::auth::DEFAULT_WINDOW,
        }
    }
}

/// The `Storage` service of one node.
#[derive(Clone)]
pub struct StorageService {
    verifier: Verifier,
    store: ShardStore,
    peers: Peers,
    allowed_targets: Vec<String>,
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidId(_)
        | StoreError::ContentMismatch { .. }
        | StoreError::BadManifest(..) => Status::invalid_argument(e.to_string()),
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::Corrupt { .. } => Status::data_loss(e.to_string()),
        StoreError::Io { .. } => Status::internal(e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("storage task failed: {e}")))?
        .map_err(store_status)
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn put_shard(&self, req: Request<PutShardRequest>) -> Result<Response<Ack>, Status> {
        self.verifier.verify_request(&req, methods::PUT_SHARD)?;
        let PutShardRequest { shard_id, data } = req.into_inner();
        let store = self.store.clone();
        blocking(move || store.put(&shard_id, &data)).await?;
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn get_shard(
        &self,
        req: Request<GetShardRequest>,
    ) -> Result<Response<GetShardResponse>, Status> {
        self.verifier.verify_request(&req, methods::GET_SHARD)?;
        let shard_id = req.into_inner().shard_id;
        let store = self.store.clone();
        let id = shard_id.clone();
        let data = blocking(move || store.get(&id)).await?;
        Ok(Response::new(GetShardResponse {
            shard_id,
            data: data.into(),
        }))
    }

    async fn has_shards(
        &self,
        req: Request<HasShardsRequest>,
    ) -> Result<Response<HasShardsResponse>, Status> {
        self.verifier.verify_request(&req, methods::HAS_SHARDS)?;
        let ids = req.into_inner().shard_ids;
        if ids.len() > 100_000 {
            return Err(Status::invalid_argument("at most 100000 ids per query"));
        }
        let present = ids.into_iter().filter(|id| self.store.has(id)).collect();
        Ok(Response::new(HasShardsResponse { present }))
    }

    async fn replicate_shard(
        &self,
        req: Request<ReplicateShardRequest>,
    ) -> Result<Response<Ack>, Status> {
        self.verifier
            .verify_request(&req, methods::REPLICATE_SHARD)?;
        let ReplicateShardRequest {
            shard_id,
            target_addr,
        } = req.into_inner();
        if !self.allowed_targets.contains(&target_addr) {
            return Err(Status::permission_denied(format!(
                "{target_addr} is not a known storage node"
            )));
        }
        let store = self.store.clone();
        let id = shard_id.clone();
        let data = blocking(move || store.get(&id)).await?;
        self.peers
            .put_shard(&target_addr, &shard_id, data.into())
            .await
            .map_err(|e| {
                Status::unavailable(format!("replicate {shard_id} to {target_addr}: {e:#}"))
            })?;
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn put_manifest(
        &self,
        req: Request<PutManifestRequest>,
    ) -> Result<Response<Ack>, Status> {
        self.verifier.verify_request(&req, methods::PUT_MANIFEST)?;
        let PutManifestRequest {
            object_id,
            manifest_json,
        } = req.into_inner();
        let manifest: Manifest = serde_json::from_slice(&manifest_json)
            .map_err(|e| Status::invalid_argument(format!("manifest: {e}")))?;
        if manifest.object_id != object_id {
            return Err(Status::invalid_argument(format!(
                "manifest is for {} but was sent as {object_id}",
                manifest.object_id
            )));
        }
        let store = self.store.clone();
        blocking(move || store.put_manifest(&manifest)).await?;
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn list_manifests(
        &self,
        req: Request<ListManifestsRequest>,
    ) -> Result<Response<ListManifestsResponse>, Status> {
        self.verifier
            .verify_request(&req, methods::LIST_MANIFESTS)?;
        let store = self.store.clone();
        let manifests = blocking(move || store.manifests()).await?;
        let manifests_json = manifests
            .iter()
            .filter_map(|m| serde_json::to_vec(m).ok())
            .map(Into::into)
            .collect();
        Ok(Response::new(ListManifestsResponse { manifests_json }))
    }
}

/// A running storage node.
pub struct RunningNode {
    /// The server.
    pub server: ServerHandle,
    /// The repair daemon.
    pub daemon: tokio::task::JoinHandle<()>,
    /// Node id.
    pub node_id: String,
}

/// Starts a storage node: Storage + P2p services over TLS and the repair daemon.
pub async fn start(config: StorageNodeConfig) -> anyhow::Result<RunningNode> {
    let identity = NodeIdentity::load(
        &config.data_dir,
        NodeIdentity::mode_from_env(),
        config.auth_window,
    )?;
    let store = ShardStore::open(&config.data_dir.join("store"))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    let addr = listener.local_addr()?.to_string();
    let peers = Peers::new(identity.clone());
    let storage = StorageService {
        verifier: identity.verifier.clone(),
        store: store.clone(),
        peers: peers.clone(),
        allowed_targets: config.peers.clone(),
    };
    let me = PeerInfo {
        node_id: identity.node_id.clone(),
        addr: addr.clone(),
        role: "storage".into(),
        last_seen: 0,
    };
    let p2p = P2pService::new(identity.verifier.clone(), me, 0);
    let router = transport::server_builder()
        .add_service(
            StorageServer::new(storage)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(P2pServer::new(p2p));
    let server = transport::serve(listener, identity.tls.server_config()?, router)?;
    tracing::info!(node = %identity.node_id, %addr, "storage node serving");
    let daemon = tokio::spawn(crate::daemon::run(crate::daemon::Daemon::new(
        config, addr, store, peers,
    )));
    Ok(RunningNode {
        server,
        daemon,
        node_id: identity.node_id,
    })
}
