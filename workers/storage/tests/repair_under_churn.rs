//! Six real storage-node processes on 127.0.0.80-85. Objects are stored; nodes are killed (one
//! also loses its shards, another gets a flipped bit in a shard) and restarted while at least four
//! stay up. Every object must read back exactly after each disruption, and every shard set must be
//! whole again (each of the 6 shards with min(3, live) live copies) within REPAIR_BOUND.
#![allow(clippy::arithmetic_side_effects)] // test data generation

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use magnet_p2p::auth::{AuthMode, DEFAULT_WINDOW};
use magnet_p2p::node::NodeIdentity;
use magnet_storage::client::ObjectClient;
use magnet_storage::erasure::Manifest;

/// Stated bound: with a 1 s daemon period and 3 s staleness, shard sets are whole within this.
const REPAIR_BOUND: Duration = Duration::from_secs(30);

struct StorageNode {
    addr: String,
    dir: PathBuf,
    peers: Vec<String>,
    child: Option<Child>,
}

impl StorageNode {
    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_magnet-storage-node"));
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(&self.addr)
            .args([
                "--repair-interval-secs",
                "1",
                "--stale-after-secs",
                "3",
                "--repair-mib-per-sec",
                "64",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for p in &self.peers {
            cmd.arg("--peer").arg(p);
        }
        self.child = Some(cmd.spawn().expect("spawn magnet-storage-node"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on `ip` (bound then released; nodes each have their own IP, so clashes are unlikely).
fn free_addr(ip: &str) -> String {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn object(i: usize) -> Vec<u8> {
    let len = [1, 4097, 65_536, 200_001, 350_000, 10][i % 6];
    (0..len).map(|j| ((j * 131 + i * 7) % 251) as u8).collect()
}

async fn wait_until<F, Fut>(what: &str, bound: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < bound {
        match f().await {
            Ok(()) => return start.elapsed(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} not reached within {bound:?}: {last}");
}

async fn whole(
    client: &ObjectClient,
    manifests: &[Manifest],
    live: &[String],
) -> Result<(), String> {
    let target = 3.min(live.len());
    for m in manifests {
        let counts = client.replica_counts(m, live).await;
        if counts.iter().any(|&c| c < target) {
            return Err(format!(
                "object {} copies per shard {counts:?}, want >= {target}",
                &m.object_id[..8]
            ));
        }
    }
    Ok(())
}

async fn read_all(client: &ObjectClient, manifests: &[Manifest]) {
    for (i, m) in manifests.iter().enumerate() {
        let got = client
            .get_with(m)
            .await
            .unwrap_or_else(|e| panic!("object {i} unreadable: {e:#}"));
        assert_eq!(got, object(i), "object {i} read back differently");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_under_churn_with_six_real_processes() {
    let t0 = Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let addrs: Vec<String> = (80..86)
        .map(|x| free_addr(&format!("127.0.0.{x}")))
        .collect();
    let mut nodes: Vec<StorageNode> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| StorageNode {
            addr: a.clone(),
            dir: root.path().join(format!("node{i}")),
            peers: addrs.iter().filter(|p| *p != a).cloned().collect(),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let identity = NodeIdentity::load(
        &root.path().join("client"),
        AuthMode::Wallet,
        DEFAULT_WINDOW,
    )
    .expect("id");
    let client = ObjectClient::new(identity, addrs.clone());

    // All six up.
    wait_until("all nodes serving", Duration::from_secs(20), || async {
        let probe = client.peers();
        for a in &addrs {
            probe
                .has_shards(a, vec![])
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    })
    .await;

    let mut manifests = Vec::new();
    for i in 0..6 {
        manifests.push(client.put(&object(i)).await.expect("put"));
    }
    // Initial placement: 6 shards on 6 distinct nodes.
    for m in &manifests {
        let counts = client.replica_counts(m, &addrs).await;
        assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
    }
    let took = wait_until("initial replication", REPAIR_BOUND, || {
        whole(&client, &manifests, &addrs)
    })
    .await;
    eprintln!("initial replication to 3 copies: {took:?}");
    read_all(&client, &manifests).await;

    // Disruption 1: kill node 0; kill node 1 and wipe its shards (disk loss, identity kept);
    // flip a bit in one shard file of node 2 (bit rot). Four stay up.
    nodes[0].kill();
    nodes[1].kill();
    std::fs::remove_dir_all(nodes[1].dir.join("store")).expect("wipe");
    let shards_dir = nodes[2].dir.join("store").join("shards");
    let rotten = std::fs::read_dir(&shards_dir)
        .expect("shards")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64)
        })
        .expect("node 2 holds shards");
    let mut b = std::fs::read(&rotten).expect("read");
    let mid = b.len() / 2;
    b[mid] ^= 0x04;
    std::fs::write(&rotten, b).expect("write");
    let rotten_id = rotten
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let live: Vec<String> = addrs[2..].to_vec();
    read_all(&client, &manifests).await;
    let took = wait_until("whole on 4 live nodes", REPAIR_BOUND, || {
        whole(&client, &manifests, &live)
    })
    .await;
    eprintln!("repair after killing 2 nodes + bit rot on a third: {took:?}");
    let quarantined = nodes[2]
        .dir
        .join("store")
        .join("quarantine")
        .join(&rotten_id);
    wait_until(
        "bit rot quarantined by node 2's scrub",
        REPAIR_BOUND,
        || {
            let q = quarantined.clone();
            async move {
                if q.exists() {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            }
        },
    )
    .await;
    read_all(&client, &manifests).await;

    // Disruption 2: restart 0 and 1, then kill 3 and 4.
    nodes[0].start();
    nodes[1].start();
    nodes[3].kill();
    nodes[4].kill();
    let live: Vec<String> = [0, 1, 2, 5].iter().map(|&i| addrs[i].clone()).collect();
    let took = wait_until("whole after second churn", REPAIR_BOUND, || {
        whole(&client, &manifests, &live)
    })
    .await;
    eprintln!("repair after restarting 2 and killing 2 others: {took:?}");
    read_all(&client, &manifests).await;

    // Everyone back.
    nodes[3].start();
    nodes[4].start();
    let took = wait_until("whole with all six", REPAIR_BOUND, || {
        whole(&client, &manifests, &addrs)
    })
    .await;
    eprintln!("whole with all six back: {took:?}");
    read_all(&client, &manifests).await;
    for m in &manifests {
        let counts = client.replica_counts(m, &addrs).await;
        assert!(counts.iter().all(|&c| (3..=6).contains(&c)), "{counts:?}");
    }
    eprintln!("churn test total {:?}", t0.elapsed());
}
