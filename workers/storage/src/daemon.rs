//! The repair daemon of a storage node. Every `repair_interval` (30 s by default) it
//!
//! 1. sends a signed P2p `Heartbeat` to every peer; a peer not heard from for `stale_after`
//!    (120 s) is stale and its shards no longer count;
//! 2. scrubs its own shards (bit rot is quarantined, so the shard counts as lost);
//! 3. copies manifests it lacks from live peers, so every node knows every object;
//! 4. for the objects it is responsible for (first live node in the object's rendezvous order, so
//!    exactly one live node repairs each object when views agree; duplicate repairs are harmless as
//!    shards are content-addressed), counts live holders of each shard and queues repairs by
//!    priority: **critical** (only K = 4 distinct shards left: one more loss is data loss),
//!    **high** (5 left), **normal** (all 6 present but a shard has fewer than `replicas_min` copies);
//! 5. works the queue in priority order within a byte budget (`repair_bytes_per_sec` × interval):
//!    a lost shard is rebuilt from any 4 others and written to the live node holding fewest shards
//!    of the object; an under-replicated shard is copied holder → node (never above `replicas_max`).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use magnet_p2p::proto::PeerInfo;

use crate::client::{rendezvous_order, Peers};
use crate::erasure::{self, Manifest, DATA_SHARDS, TOTAL_SHARDS};
use crate::node::StorageNodeConfig;
use crate::store::ShardStore;

/// Repair urgency, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Only K distinct shards left (or fewer: unrecoverable until a holder returns).
    Critical,
    /// K + 1 distinct shards left.
    High,
    /// Every shard present, some under-replicated.
    Normal,
}

/// Priority of an object with `shards_left` distinct shards alive, or None if nothing to do.
pub fn priority(shards_left: usize, under_replicated: bool) -> Option<Priority> {
    match shards_left {
        n if n <= DATA_SHARDS => Some(Priority::Critical),
        n if n < TOTAL_SHARDS => Some(Priority::High),
        _ if under_replicated => Some(Priority::Normal),
        _ => None,
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Live storage nodes including this one.
    pub live: usize,
    /// Objects this node is responsible for.
    pub responsible: usize,
    /// Objects per priority queued this pass: critical, high, normal.
    pub queued: [usize; 3],
    /// Shards rebuilt by erasure decoding.
    pub rebuilt: usize,
    /// Shard copies made.
    pub replicated: usize,
    /// Objects left for the next pass (budget exhausted or failures).
    pub deferred: usize,
    /// Local shards found corrupt.
    pub scrubbed_corrupt: usize,
    /// Objects with fewer than K shards alive.
    pub unrecoverable_now: usize,
}

/// State of the daemon.
pub struct Daemon {
    cfg: StorageNodeConfig,
    self_addr: String,
    store: ShardStore,
    peers: Peers,
    last_seen: HashMap<String, Instant>,
}

struct ObjectState {
    manifest: Manifest,
    /// holders[i] = live nodes holding shard i.
    holders: Vec<Vec<String>>,
}

impl Daemon {
    /// A daemon for the node serving at `self_addr`.
    pub fn new(cfg: StorageNodeConfig, self_addr: String, store: ShardStore, peers: Peers) -> Self {
        Self {
            cfg,
            self_addr,
            store,
            peers,
            last_seen: HashMap::new(),
        }
    }

    async fn probe(&mut self) -> Vec<String> {
        for addr in self.cfg.peers.clone() {
            if addr == self.self_addr {
                continue;
            }
            let me = PeerInfo {
                node_id: self.peers.identity().node_id.clone(),
                addr: self.self_addr.clone(),
                role: "storage".into(),
                last_seen: 0,
            };
            let limit = self.cfg.stale_after.min(std::time::Duration::from_secs(5));
            match tokio::time::timeout(limit, self.peers.heartbeat(&addr, me)).await {
                Ok(Ok(_)) => {
                    self.last_seen.insert(addr, Instant::now());
                }
                Ok(Err(e)) => tracing::debug!("heartbeat to {addr} failed: {e:#}"),
                Err(_) => tracing::debug!("heartbeat to {addr} timed out"),
            }
        }
        let mut live = vec![self.self_addr.clone()];
        live.extend(
            self.last_seen
                .iter()
                .filter(|(_, t)| t.elapsed() < self.cfg.stale_after)
                .map(|(a, _)| a.clone()),
        );
        live.sort();
        live
    }

    async fn holders(&self, manifest: &Manifest, live: &[String]) -> Vec<Vec<String>> {
        let ids: Vec<String> = manifest.shards.iter().map(|s| s.id.clone()).collect();
        let mut holders = vec![Vec::new(); TOTAL_SHARDS];
        for addr in live {
            let present: Vec<String> = if *addr == self.self_addr {
                ids.iter()
                    .filter(|id| self.store.has(id))
                    .cloned()
                    .collect()
            } else {
                self.peers
                    .has_shards(addr, ids.clone())
                    .await
                    .unwrap_or_default()
            };
            for (i, id) in ids.iter().enumerate() {
                if present.contains(id) {
                    holders[i].push(addr.clone());
                }
            }
        }
        holders
    }

    async fn fetch(&self, addr: &str, id: &str) -> anyhow::Result<Bytes> {
        if addr == self.self_addr {
            let store = self.store.clone();
            let id = id.to_string();
            Ok(tokio::task::spawn_blocking(move || store.get(&id))
                .await??
                .into())
        } else {
            self.peers.get_shard(addr, id).await
        }
    }

    async fn put(&self, addr: &str, id: &str, data: Bytes) -> anyhow::Result<()> {
        if addr == self.self_addr {
            let store = self.store.clone();
            let id = id.to_string();
            Ok(tokio::task::spawn_blocking(move || store.put(&id, &data)).await??)
        } else {
            self.peers.put_shard(addr, id, data).await
        }
    }

    /// Live node holding the fewest shards of the object and not shard `index` (rendezvous tie-break).
    fn pick_target(
        &self,
        obj: &ObjectState,
        index: usize,
        live: &[String],
        extra: &[String],
    ) -> Option<String> {
        let load = |a: &str| {
            obj.holders
                .iter()
                .filter(|h| h.iter().any(|x| x == a))
                .count()
        };
        rendezvous_order(
            &obj.manifest.shards[index].id,
            live.iter().map(String::as_str),
        )
        .into_iter()
        .filter(|a| !obj.holders[index].iter().any(|h| h == a) && !extra.iter().any(|x| x == a))
        .min_by_key(|a| load(a))
        .map(String::from)
    }

    async fn rebuild(&self, obj: &mut ObjectState, live: &[String]) -> anyhow::Result<usize> {
        let mut available: Vec<Option<Vec<u8>>> = vec![None; TOTAL_SHARDS];
        let mut got = 0;
        for (i, hs) in obj.holders.iter().enumerate() {
            for h in hs {
                if let Ok(data) = self.fetch(h, &obj.manifest.shards[i].id).await {
                    available[i] = Some(data.to_vec());
                    got += 1;
                    break;
                }
            }
            if got == DATA_SHARDS {
                break;
            }
        }
        let shards = erasure::reconstruct_all(&obj.manifest, &available)?;
        let mut rebuilt = 0;
        #[allow(clippy::needless_range_loop)] // i indexes holders and shards in step
        for i in 0..TOTAL_SHARDS {
            if !obj.holders[i].is_empty() {
                continue;
            }
            let target = self
                .pick_target(obj, i, live, &[])
                .unwrap_or_else(|| self.self_addr.clone());
            self.put(
                &target,
                &obj.manifest.shards[i].id,
                Bytes::from(shards[i].clone()),
            )
            .await?;
            obj.holders[i].push(target);
            rebuilt += 1;
        }
        Ok(rebuilt)
    }

    async fn replicate(
        &self,
        obj: &mut ObjectState,
        live: &[String],
        target_count: usize,
        budget: &mut u64,
    ) -> anyhow::Result<usize> {
        let mut copies = 0;
        for i in 0..TOTAL_SHARDS {
            while !obj.holders[i].is_empty()
                && obj.holders[i].len() < target_count.min(self.cfg.replicas_max)
            {
                if *budget < obj.manifest.shard_len {
                    return Ok(copies);
                }
                let Some(target) = self.pick_target(obj, i, live, &[]) else {
                    break;
                };
                let id = obj.manifest.shards[i].id.clone();
                let holder = obj.holders[i].first().cloned().unwrap_or_default();
                if holder == self.self_addr || target == self.self_addr {
                    let data = self.fetch(&holder, &id).await?;
                    self.put(&target, &id, data).await?;
                } else {
                    self.peers.replicate(&holder, &id, &target).await?;
                }
                *budget = budget.saturating_sub(obj.manifest.shard_len);
                obj.holders[i].push(target);
                copies += 1;
            }
        }
        Ok(copies)
    }

    /// One pass of liveness, scrub, manifest sync and repair.
    pub async fn tick(&mut self) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        let live = self.probe().await;
        report.live = live.len();

        let store = self.store.clone();
        report.scrubbed_corrupt = tokio::task::spawn_blocking(move || store.scrub())
            .await??
            .len();

        let mut known: HashMap<String, Manifest> = self
            .store
            .manifests()?
            .into_iter()
            .map(|m| (m.object_id.clone(), m))
            .collect();
        for addr in live.iter().filter(|a| **a != self.self_addr) {
            if let Ok(ms) = self.peers.list_manifests(addr).await {
                for m in ms {
                    if !known.contains_key(&m.object_id) && self.store.put_manifest(&m).is_ok() {
                        known.insert(m.object_id.clone(), m);
                    }
                }
            }
        }

        let target_count = self.cfg.replicas_min.min(live.len());
        let mut queue: Vec<(Priority, usize, ObjectState)> = Vec::new();
        for manifest in known.into_values() {
            let responsible =
                rendezvous_order(&manifest.object_id, live.iter().map(String::as_str))
                    .first()
                    .copied();
            if responsible != Some(self.self_addr.as_str()) {
                continue;
            }
            report.responsible += 1;
            let holders = self.holders(&manifest, &live).await;
            let left = holders.iter().filter(|h| !h.is_empty()).count();
            let under = holders.iter().any(|h| h.len() < target_count);
            if left < DATA_SHARDS {
                report.unrecoverable_now += 1;
                tracing::error!(object = %manifest.object_id, left, "fewer than 4 shards alive: waiting for holders to return");
                continue;
            }
            if let Some(p) = priority(left, under) {
                report.queued[p as usize] += 1;
                queue.push((p, left, ObjectState { manifest, holders }));
            }
        }
        queue.sort_by_key(|(p, left, o)| (*p, *left, o.manifest.object_id.clone()));

        let secs = self.cfg.repair_interval.as_secs_f64().max(0.001);
        let mut budget = (self.cfg.repair_bytes_per_sec as f64 * secs) as u64;
        for (p, _, mut obj) in queue {
            let rebuild_cost = obj.manifest.shard_len.saturating_mul(TOTAL_SHARDS as u64);
            if p != Priority::Normal {
                if budget < rebuild_cost && report.rebuilt > 0 {
                    report.deferred += 1;
                    continue;
                }
                match self.rebuild(&mut obj, &live).await {
                    Ok(n) => {
                        report.rebuilt += n;
                        budget = budget.saturating_sub(rebuild_cost);
                    }
                    Err(e) => {
                        tracing::warn!(object = %obj.manifest.object_id, "rebuild failed: {e:#}");
                        report.deferred += 1;
                        continue;
                    }
                }
            }
            match self
                .replicate(&mut obj, &live, target_count, &mut budget)
                .await
            {
                Ok(n) => report.replicated += n,
                Err(e) => {
                    tracing::warn!(object = %obj.manifest.object_id, "replication failed: {e:#}");
                    report.deferred += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Runs the daemon forever.
pub async fn run(mut daemon: Daemon) {
    let mut ticker = tokio::time::interval(daemon.cfg.repair_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match daemon.tick().await {
            Ok(r)
                if r.rebuilt
                    + r.replicated
                    + r.deferred
                    + r.scrubbed_corrupt
                    + r.unrecoverable_now
                    > 0 =>
            {
                tracing::info!(?r, "repair pass")
            }
            Ok(r) => tracing::debug!(?r, "repair pass"),
            Err(e) => tracing::warn!("repair pass failed: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_shards_left() {
        assert_eq!(priority(3, true), Some(Priority::Critical));
        assert_eq!(priority(4, false), Some(Priority::Critical));
        assert_eq!(priority(5, false), Some(Priority::High));
        assert_eq!(priority(6, true), Some(Priority::Normal));
        assert_eq!(priority(6, false), None);
        assert!(Priority::Critical < Priority::High && Priority::High < Priority::Normal);
    }

    fn single_node(dir: &std::path::Path, bytes_per_sec: u64) -> (Daemon, ShardStore) {
        let id = magnet_p2p::node::NodeIdentity::load(
            &dir.join("id"),
            magnet_p2p::auth::AuthMode::Wallet,
            magnet_p2p::auth::DEFAULT_WINDOW,
        )
        .expect("identity");
        let store = ShardStore::open(&dir.join("store")).expect("store");
        let mut cfg = StorageNodeConfig::new(dir.to_path_buf(), "127.0.0.90:1".into(), vec![]);
        cfg.repair_interval = std::time::Duration::from_secs(1);
        cfg.repair_bytes_per_sec = bytes_per_sec;
        (
            Daemon::new(cfg, "127.0.0.90:1".into(), store.clone(), Peers::new(id)),
            store,
        )
    }

    fn store_object(store: &ShardStore, seed: u8, lose: &[usize]) -> Manifest {
        let object: Vec<u8> = (0..40_000u32)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        let (m, shards) = erasure::encode(&object).expect("encode");
        for (i, (r, s)) in m.shards.iter().zip(&shards).enumerate() {
            if !lose.contains(&i) {
                store.put(&r.id, s).expect("put");
            }
        }
        store.put_manifest(&m).expect("manifest");
        m
    }

    #[tokio::test]
    async fn daemon_rebuilds_lost_shards_most_urgent_first_within_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Budget 1 byte/s: only the first (most urgent) rebuild of a pass goes ahead.
        let (mut daemon, store) = single_node(dir.path(), 1);
        let high = store_object(&store, 3, &[5]);
        let critical = store_object(&store, 7, &[0, 1]);
        let whole = store_object(&store, 11, &[]);
        let r = daemon.tick().await.expect("tick");
        assert_eq!(r.live, 1);
        assert_eq!(r.responsible, 3);
        assert_eq!(r.queued, [1, 1, 0]);
        assert_eq!((r.rebuilt, r.deferred), (2, 1), "{r:?}");
        let held = |m: &Manifest| m.shards.iter().filter(|s| store.has(&s.id)).count();
        assert_eq!((held(&critical), held(&high), held(&whole)), (6, 5, 6));
        // Next pass: the deferred object is repaired.
        let r = daemon.tick().await.expect("tick");
        assert_eq!((r.queued, r.rebuilt, r.deferred), ([0, 1, 0], 1, 0));
        assert_eq!(held(&high), 6);
        // Rebuilt shards are the original bytes.
        for m in [&high, &critical] {
            for s in &m.shards {
                assert_eq!(erasure::sha256_hex(&store.get(&s.id).expect("get")), s.id);
            }
        }
        // Three lost: reported, not attempted, no panic.
        let gone = store_object(&store, 13, &[0, 2, 4]);
        let r = daemon.tick().await.expect("tick");
        assert_eq!(r.unrecoverable_now, 1);
        assert_eq!(held(&gone), 3);
    }
}
