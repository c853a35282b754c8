//! The `P2p` service: peer discovery and heartbeats, DiLoCo control messages (round announcement,
//! gradient-ready signal, leader proposal) and streamed gradient push/fetch. Every request is
//! verified by [`Verifier`] before it touches state; control messages are published on a broadcast
//! channel for the training loop.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{unix_now, AuthError, Signer, Verifier};
use crate::proto::p2p_server::P2p;
use crate::proto::{
    Ack, FetchGradientRequest, GradientChunk, GradientReady, HeartbeatRequest, HeartbeatResponse,
    LeaderProposal, PeerInfo, RoundAnnouncement,
};

/// Full gRPC method paths: the `method` field of the signed message.
pub mod methods {
    /// Heartbeat and peer exchange.
    pub const HEARTBEAT: &str = "/magnet.p2p.v1.P2p/Heartbeat";
    /// DiLoCo round announcement.
    pub const ANNOUNCE_ROUND: &str = "/magnet.p2p.v1.P2p/AnnounceRound";
    /// Gradient-ready signal.
    pub const SIGNAL_GRADIENT_READY: &str = "/magnet.p2p.v1.P2p/SignalGradientReady";
    /// Leader proposal.
    pub const PROPOSE_LEADER: &str = "/magnet.p2p.v1.P2p/ProposeLeader";
    /// Streamed gradient upload.
    pub const PUSH_GRADIENT: &str = "/magnet.p2p.v1.P2p/PushGradient";
    /// Streamed gradient download.
    pub const FETCH_GRADIENT: &str = "/magnet.p2p.v1.P2p/FetchGradient";
    /// Storage: put a shard.
    pub const PUT_SHARD: &str = "/magnet.p2p.v1.Storage/PutShard";
    /// Storage: get a shard.
    pub const GET_SHARD: &str = "/magnet.p2p.v1.Storage/GetShard";
    /// Storage: which of these shards are held.
    pub const HAS_SHARDS: &str = "/magnet.p2p.v1.Storage/HasShards";
    /// Storage: copy a shard to another node.
    pub const REPLICATE_SHARD: &str = "/magnet.p2p.v1.Storage/ReplicateShard";
    /// Storage: store an object manifest.
    pub const PUT_MANIFEST: &str = "/magnet.p2p.v1.Storage/PutManifest";
    /// Storage: list object manifests.
    pub const LIST_MANIFESTS: &str = "/magnet.p2p.v1.Storage/ListManifests";
}

/// Bytes per streamed gradient chunk.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// A verified control-plane message, as published to the training loop.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlEvent {
    /// A leader announced a round.
    RoundAnnounced {
        /// Authenticated sender.
        from: String,
        /// The announcement.
        msg: RoundAnnouncement,
    },
    /// A peer's gradient is ready.
    GradientReady {
        /// Authenticated sender.
        from: String,
        /// The signal.
        msg: GradientReady,
    },
    /// A peer proposes a leader.
    LeaderProposed {
        /// Authenticated sender.
        from: String,
        /// The proposal.
        msg: LeaderProposal,
    },
    /// A gradient was uploaded completely and matches its signed hash.
    GradientReceived {
        /// Authenticated sender.
        from: String,
        /// Round.
        round: u64,
        /// hex SHA-256.
        sha256: String,
        /// Bytes.
        len: u64,
    },
}

/// State of the P2p service of one node.
#[derive(Clone)]
pub struct P2pService {
    verifier: Verifier,
    me: PeerInfo,
    peers: Arc<Mutex<HashMap<String, PeerInfo>>>,
    gradients: Arc<Mutex<HashMap<(u64, String), Bytes>>>,
    events: broadcast::Sender<ControlEvent>,
    max_gradient_bytes: u64,
}

impl P2pService {
    /// A service for the node described by `me` (node id, advertised address, role).
    pub fn new(verifier: Verifier, me: PeerInfo, max_gradient_bytes: u64) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            verifier,
            me,
            peers: Arc::default(),
            gradients: Arc::default(),
            events,
            max_gradient_bytes,
        }
    }

    /// Verified control messages, in arrival order.
    pub fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.events.subscribe()
    }

    /// Peers heard from (directly or by gossip).
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// A gradient uploaded for `round` by `node`.
    pub fn gradient(&self, round: u64, node: &str) -> Option<Bytes> {
        self.gradients
            .lock()
            .ok()?
            .get(&(round, node.to_string()))
            .cloned()
    }

    fn learn(&self, info: PeerInfo) {
        if info.node_id == self.me.node_id || info.node_id.len() > 64 || info.addr.len() > 256 {
            return;
        }
        if let Ok(mut peers) = self.peers.lock() {
            // Bound the table against gossip floods.
            if peers.len() < 10_000 || peers.contains_key(&info.node_id) {
                let entry = peers
                    .entry(info.node_id.clone())
                    .or_insert_with(|| info.clone());
                if info.last_seen >= entry.last_seen {
                    *entry = info;
                }
            }
        }
    }

    fn publish(&self, event: ControlEvent) {
        // No subscriber is fine: the node may not be training.
        let _ = self.events.send(event);
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<GradientChunk, Status>> + Send>>;

#[tonic::async_trait]
impl P2p for P2pService {
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let from = self.verifier.verify_request(&req, methods::HEARTBEAT)?;
        let msg = req.into_inner();
        if let Some(mut info) = msg.self_info {
            if info.node_id != from {
                return Err(Status::permission_denied(format!(
                    "heartbeat describes {} but is signed by {from}",
                    info.node_id
                )));
            }
            info.last_seen = unix_now();
            self.learn(info);
        }
        for p in msg.known_peers.into_iter().take(1000) {
            self.learn(p);
        }
        let mut me = self.me.clone();
        me.last_seen = unix_now();
        Ok(Response::new(HeartbeatResponse {
            self_info: Some(me),
            known_peers: self.peers(),
            server_time: unix_now(),
        }))
    }

    async fn announce_round(
        &self,
        req: Request<RoundAnnouncement>,
    ) -> Result<Response<Ack>, Status> {
        let from = self
            .verifier
            .verify_request(&req, methods::ANNOUNCE_ROUND)?;
        let msg = req.into_inner();
        if msg.leader != from {
            return Err(Status::permission_denied(format!(
                "round {} announced for leader {} but signed by {from}",
                msg.round, msg.leader
            )));
        }
        self.publish(ControlEvent::RoundAnnounced { from, msg });
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn signal_gradient_ready(
        &self,
        req: Request<GradientReady>,
    ) -> Result<Response<Ack>, Status> {
        let from = self
            .verifier
            .verify_request(&req, methods::SIGNAL_GRADIENT_READY)?;
        let msg = req.into_inner();
        if msg.node_id != from {
            return Err(Status::permission_denied(format!(
                "gradient of {} signalled by {from}",
                msg.node_id
            )));
        }
        self.publish(ControlEvent::GradientReady { from, msg });
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn propose_leader(&self, req: Request<LeaderProposal>) -> Result<Response<Ack>, Status> {
        let from = self
            .verifier
            .verify_request(&req, methods::PROPOSE_LEADER)?;
        self.publish(ControlEvent::LeaderProposed {
            from,
            msg: req.into_inner(),
        });
        Ok(Response::new(Ack {
            accepted: true,
            detail: String::new(),
        }))
    }

    async fn push_gradient(
        &self,
        req: Request<Streaming<GradientChunk>>,
    ) -> Result<Response<Ack>, Status> {
        let headers = self
            .verifier
            .verify_stream_headers(req.metadata(), methods::PUSH_GRADIENT)?;
        let from = headers.node_id.clone();
        let mut stream = req.into_inner();
        let mut hasher = Sha256::new();
        let mut buf = BytesMut::new();
        let mut round = None;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            match round {
                None => {
                    if chunk.total_len > self.max_gradient_bytes {
                        return Err(Status::resource_exhausted(format!(
                            "gradient of {} bytes exceeds the limit of {}",
                            chunk.total_len, self.max_gradient_bytes
                        )));
                    }
                    total = chunk.total_len;
                    round = Some(chunk.round);
                    buf.reserve(usize::try_from(total).unwrap_or(0));
                }
                Some(r) if r != chunk.round || chunk.total_len != total => {
                    return Err(Status::invalid_argument(
                        "round or total_len changed mid-stream",
                    ));
                }
                Some(_) => {}
            }
            if chunk.offset != buf.len() as u64
                || buf.len() as u64 + chunk.data.len() as u64 > total
            {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} of {} bytes does not continue {} of {total} bytes",
                    chunk.offset,
                    chunk.data.len(),
                    buf.len()
                )));
            }
            hasher.update(&chunk.data);
            buf.extend_from_slice(&chunk.data);
        }
        let round = round.ok_or_else(|| Status::invalid_argument("empty gradient stream"))?;
        if buf.len() as u64 != total {
            return Err(Status::invalid_argument(format!(
                "stream ended at {} of {total} bytes",
                buf.len()
            )));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != headers.body_sha256 {
            return Err(AuthError::BodyMismatch {
                signed: headers.body_sha256,
                actual,
            }
            .into());
        }
        if let Ok(mut g) = self.gradients.lock() {
            g.insert((round, from.clone()), buf.freeze());
        }
        self.publish(ControlEvent::GradientReceived {
            from,
            round,
            sha256: actual.clone(),
            len: total,
        });
        Ok(Response::new(Ack {
            accepted: true,
            detail: actual,
        }))
    }

    type FetchGradientStream = ChunkStream;

    async fn fetch_gradient(
        &self,
        req: Request<FetchGradientRequest>,
    ) -> Result<Response<Self::FetchGradientStream>, Status> {
        self.verifier
            .verify_request(&req, methods::FETCH_GRADIENT)?;
        let FetchGradientRequest { round, node_id } = req.into_inner();
        let data = self.gradient(round, &node_id).ok_or_else(|| {
            Status::not_found(format!("no gradient for round {round} from {node_id}"))
        })?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            gradient_chunks(round, &node_id, data).into_iter().map(Ok),
        ))))
    }
}

/// Splits a payload into stream chunks (zero-copy slices).
pub fn gradient_chunks(round: u64, node_id: &str, data: Bytes) -> Vec<GradientChunk> {
    let total = data.len();
    let mut out = Vec::with_capacity(total.div_ceil(CHUNK_BYTES).max(1));
    let mut offset = 0;
    loop {
        let end = (offset + CHUNK_BYTES).min(total);
        out.push(GradientChunk {
            round,
            node_id: node_id.to_string(),
            total_len: total as u64,
            offset: offset as u64,
            data: data.slice(offset..end),
        });
        offset = end;
        if offset >= total {
            return out;
        }
    }
}

/// Uploads a gradient with the signature covering the SHA-256 of the whole payload.
pub async fn push_gradient(
    client: &mut crate::proto::p2p_client::P2pClient<tonic::transport::Channel>,
    signer: &Signer,
    round: u64,
    data: Bytes,
) -> Result<Ack, Status> {
    let body = crate::auth::sha256_hex(&data);
    let headers = signer.sign(methods::PUSH_GRADIENT, &body);
    let chunks = gradient_chunks(round, signer.node_id(), data);
    let mut req = Request::new(tokio_stream::iter(chunks));
    headers.insert_into(req.metadata_mut())?;
    Ok(client.push_gradient(req).await?.into_inner())
}

/// Downloads a gradient and checks the chunks are contiguous.
pub async fn fetch_gradient(
    client: &mut crate::proto::p2p_client::P2pClient<tonic::transport::Channel>,
    signer: &Signer,
    round: u64,
    node_id: &str,
) -> Result<Bytes, Status> {
    let req = signer.request(
        methods::FETCH_GRADIENT,
        FetchGradientRequest {
            round,
            node_id: node_id.to_string(),
        },
    )?;
    let mut stream = client.fetch_gradient(req).await?.into_inner();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if chunk.offset != buf.len() as u64 {
            return Err(Status::data_loss(format!(
                "chunk at {} after {} bytes",
                chunk.offset,
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk.data);
    }
    Ok(buf.freeze())
}
