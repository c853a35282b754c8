//! Client side of storage: place the 6 shards of an object on distinct nodes, read any 4 back.
//! Also used by the repair daemon to talk to other nodes.

use std::collections::HashMap;

use anyhow::Context;
use bytes::Bytes;
use magnet_p2p::node::NodeIdentity;
use magnet_p2p::proto::p2p_client::P2pClient;
use magnet_p2p::proto::storage_client::StorageClient;
use magnet_p2p::proto::{
    GetShardRequest, HasShardsRequest, HeartbeatRequest, ListManifestsRequest, PeerInfo,
    PutManifestRequest, PutShardRequest, ReplicateShardRequest,
};
use magnet_p2p::service::methods;
use magnet_p2p::transport::MAX_MESSAGE_BYTES;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::erasure::{self, sha256_hex, Manifest, DATA_SHARDS, TOTAL_SHARDS};

/// Signed connections to storage nodes, cached per address.
#[derive(Clone)]
pub struct Peers {
    identity: NodeIdentity,
    channels: std::sync::Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// A connection pool acting as `identity`.
    pub fn new(identity: NodeIdentity) -> Self {
        Self {
            identity,
            channels: Default::default(),
        }
    }

    /// The identity requests are signed with.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    async fn channel(&self, addr: &str) -> anyhow::Result<Channel> {
        if let Some(c) = self.channels.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let channel = self.identity.connect(addr).await?;
        self.channels
            .lock()
            .await
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn client(&self, addr: &str) -> anyhow::Result<StorageClient<Channel>> {
        Ok(StorageClient::new(self.channel(addr).await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Signed P2p heartbeat to `addr`: announces `me`, returns the peer's own description.
    pub async fn heartbeat(&self, addr: &str, me: PeerInfo) -> anyhow::Result<PeerInfo> {
        let req = self.identity.signer.request(
            methods::HEARTBEAT,
            HeartbeatRequest {
                self_info: Some(me),
                known_peers: vec![],
            },
        )?;
        let mut client = P2pClient::new(self.channel(addr).await?);
        match client.heartbeat(req).await {
            Ok(r) => r
                .into_inner()
                .self_info
                .ok_or_else(|| anyhow::anyhow!("{addr}: heartbeat without self_info")),
            Err(status) => {
                self.forget(addr).await;
                Err(anyhow::anyhow!(
                    "{addr}: {}: {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    }

    async fn forget(&self, addr: &str) {
        self.channels.lock().await.remove(addr);
    }

    async fn call<T, F, Fut>(&self, addr: &str, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(StorageClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let client = self.client(addr).await?;
        match f(client).await {
            Ok(v) => Ok(v),
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) {
                    self.forget(addr).await;
                }
                Err(anyhow::anyhow!(
                    "{addr}: {}: {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    }

    /// Stores a shard on `addr`.
    pub async fn put_shard(&self, addr: &str, id: &str, data: Bytes) -> anyhow::Result<()> {
        let req = self.identity.signer.request(
            methods::PUT_SHARD,
            PutShardRequest {
                shard_id: id.to_string(),
                data,
            },
        )?;
        self.call(
            addr,
            |mut c| async move { c.put_shard(req).await.map(|_| ()) },
        )
        .await
    }

    /// Fetches a shard from `addr` and verifies it hashes to its id.
    pub async fn get_shard(&self, addr: &str, id: &str) -> anyhow::Result<Bytes> {
        let req = self.identity.signer.request(
            methods::GET_SHARD,
            GetShardRequest {
                shard_id: id.to_string(),
            },
        )?;
        let data = self
            .call(addr, |mut c| async move {
                c.get_shard(req).await.map(|r| r.into_inner().data)
            })
            .await?;
        let got = sha256_hex(&data);
        anyhow::ensure!(
            got == id,
            "{addr} served shard {id} with content hashing to {got}"
        );
        Ok(data)
    }

    /// Which of `ids` `addr` holds.
    pub async fn has_shards(&self, addr: &str, ids: Vec<String>) -> anyhow::Result<Vec<String>> {
        let req = self
            .identity
            .signer
            .request(methods::HAS_SHARDS, HasShardsRequest { shard_ids: ids })?;
        self.call(addr, |mut c| async move {
            c.has_shards(req).await.map(|r| r.into_inner().present)
        })
        .await
    }

    /// Asks `holder` to copy shard `id` to `target`.
    pub async fn replicate(&self, holder: &str, id: &str, target: &str) -> anyhow::Result<()> {
        let req = self.identity.signer.request(
            methods::REPLICATE_SHARD,
            ReplicateShardRequest {
                shard_id: id.to_string(),
                target_addr: target.to_string(),
            },
        )?;
        self.call(holder, |mut c| async move {
            c.replicate_shard(req).await.map(|_| ())
        })
        .await
    }

    /// Stores a manifest on `addr`.
    pub async fn put_manifest(&self, addr: &str, manifest: &Manifest) -> anyhow::Result<()> {
        let json = serde_json::to_vec(manifest)?;
        let req = self.identity.signer.request(
            methods::PUT_MANIFEST,
            PutManifestRequest {
                object_id: manifest.object_id.clone(),
                manifest_json: json.into(),
            },
        )?;
        self.call(addr, |mut c| async move {
            c.put_manifest(req).await.map(|_| ())
        })
        .await
    }

    /// All manifests `addr` holds (malformed ones skipped).
    pub async fn list_manifests(&self, addr: &str) -> anyhow::Result<Vec<Manifest>> {
        let req = self
            .identity
            .signer
            .request(methods::LIST_MANIFESTS, ListManifestsRequest {})?;
        let raw = self
            .call(addr, |mut c| async move {
                c.list_manifests(req)
                    .await
                    .map(|r| r.into_inner().manifests_json)
            })
            .await?;
        Ok(raw
            .iter()
            .filter_map(|j| serde_json::from_slice::<Manifest>(j).ok())
            .filter(|m| m.validate().is_ok())
            .collect())
    }
}

/// Rendezvous (highest-random-weight) order of `nodes` for `key`: stable, spreads objects evenly.
pub fn rendezvous_order<'a>(key: &str, nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<(Vec<u8>, &str)> = nodes
        .into_iter()
        .map(|n| {
            let mut h = Sha256::new();
            h.update(key.as_bytes());
            h.update(b"/");
            h.update(n.as_bytes());
            (h.finalize().to_vec(), n)
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0));
    v.into_iter().map(|(_, n)| n).collect()
}

/// Stores objects on a set of storage nodes and reads them back.
pub struct ObjectClient {
    peers: Peers,
    nodes: Vec<String>,
}

impl ObjectClient {
    /// A client for the storage nodes at `nodes`.
    pub fn new(identity: NodeIdentity, nodes: Vec<String>) -> Self {
        Self {
            peers: Peers::new(identity),
            nodes,
        }
    }

    /// The connection pool.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Encodes `object`, puts shard i on the i-th node of its rendezvous order (distinct nodes when
    /// there are at least 6; a node that refuses is skipped for the next), and the manifest on all.
    pub async fn put(&self, object: &[u8]) -> anyhow::Result<Manifest> {
        let (manifest, shards) = erasure::encode(object)?;
        let order: Vec<String> =
            rendezvous_order(&manifest.object_id, self.nodes.iter().map(String::as_str))
                .into_iter()
                .map(String::from)
                .collect();
        anyhow::ensure!(!order.is_empty(), "no storage nodes configured");
        let mut next = 0usize;
        let mut errors = Vec::new();
        for (r, shard) in manifest.shards.iter().zip(shards) {
            let data = Bytes::from(shard);
            let mut placed = false;
            for _ in 0..order.len() {
                let addr = &order[next % order.len()];
                next += 1;
                match self.peers.put_shard(addr, &r.id, data.clone()).await {
                    Ok(()) => {
                        placed = true;
                        break;
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            anyhow::ensure!(
                placed,
                "could not place shard {} anywhere: {}",
                r.index,
                errors.join("; ")
            );
        }
        let mut stored = 0;
        for addr in &order {
            match self.peers.put_manifest(addr, &manifest).await {
                Ok(()) => stored += 1,
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        anyhow::ensure!(stored > 0, "manifest stored nowhere: {}", errors.join("; "));
        Ok(manifest)
    }

    /// Finds the manifest of `object_id` on any node.
    pub async fn manifest(&self, object_id: &str) -> anyhow::Result<Manifest> {
        let mut errors = Vec::new();
        for addr in &self.nodes {
            match self.peers.list_manifests(addr).await {
                Ok(ms) => {
                    if let Some(m) = ms.into_iter().find(|m| m.object_id == object_id) {
                        return Ok(m);
                    }
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        anyhow::bail!("no node knows object {object_id} ({})", errors.join("; "))
    }

    /// Reads `manifest`'s object from any 4 intact shards, byte-exact.
    pub async fn get_with(&self, manifest: &Manifest) -> anyhow::Result<Vec<u8>> {
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; TOTAL_SHARDS];
        let mut have = 0;
        let mut errors = Vec::new();
        'shards: for r in &manifest.shards {
            for addr in rendezvous_order(&r.id, self.nodes.iter().map(String::as_str)) {
                match self.peers.get_shard(addr, &r.id).await {
                    Ok(data) => {
                        shards[usize::from(r.index)] = Some(data.to_vec());
                        have += 1;
                        if have == DATA_SHARDS {
                            break 'shards;
                        }
                        continue 'shards;
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
        erasure::decode(manifest, &shards)
            .with_context(|| format!("shard errors: {}", errors.join("; ")))
    }

    /// Reads an object by id.
    pub async fn get(&self, object_id: &str) -> anyhow::Result<Vec<u8>> {
        let m = self.manifest(object_id).await?;
        self.get_with(&m).await
    }

    /// For each shard of `manifest`, how many of `nodes` answer that they hold it.
    pub async fn replica_counts(&self, manifest: &Manifest, nodes: &[String]) -> Vec<usize> {
        let ids: Vec<String> = manifest.shards.iter().map(|s| s.id.clone()).collect();
        let mut counts = vec![0usize; TOTAL_SHARDS];
        for addr in nodes {
            if let Ok(present) = self.peers.has_shards(addr, ids.clone()).await {
                for (i, id) in ids.iter().enumerate() {
                    if present.contains(id) {
                        counts[i] += 1;
                    }
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_order_is_a_stable_permutation_that_spreads_keys() {
        let nodes: Vec<String> = (80..86).map(|x| format!("127.0.0.{x}:7400")).collect();
        let mut firsts = HashMap::new();
        for k in 0..600 {
            let key = format!("object-{k}");
            let order = rendezvous_order(&key, nodes.iter().map(String::as_str));
            assert_eq!(
                order,
                rendezvous_order(&key, nodes.iter().map(String::as_str))
            );
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, nodes.iter().map(String::as_str).collect::<Vec<_>>());
            *firsts.entry(order[0]).or_insert(0) += 1;
        }
        // Each node leads some objects (expected 100 each).
        assert_eq!(firsts.len(), 6);
        assert!(firsts.values().all(|&n| n > 50), "{firsts:?}");
        // Removing a node only moves the objects it led.
        let fewer: Vec<&str> = nodes[1..].iter().map(String::as_str).collect();
        for k in 0..100 {
            let key = format!("object-{k}");
            let full = rendezvous_order(&key, nodes.iter().map(String::as_str));
            let part = rendezvous_order(&key, fewer.iter().copied());
            if full[0] != nodes[0] {
                assert_eq!(full[0], part[0]);
            }
        }
    }
}
