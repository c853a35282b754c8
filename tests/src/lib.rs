//! Test harness for MAGNET end-to-end tests: builds a localnet with
//! `localnet/setup.sh` (the operator commands a real network uses) and runs each
//! validator as two real processes, `magnetd start` and `cometbft start`.
//! Every process is killed when the [`Localnet`] is dropped.

// Test code: plain arithmetic and indexing are fine here.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::needless_range_loop,
    clippy::unwrap_used
)]

pub mod abci;
pub mod driver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use magnet_chain::client::{KeyFile, Keyring, Node};

pub fn magnetd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MAGNETD_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/magnetd
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("magnetd")
}

pub fn cometbft_bin() -> PathBuf {
    magnet_chain::home::cometbft_bin()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Default)]
struct NodeProcs {
    magnetd: Option<Child>,
    cometbft: Option<Child>,
}

pub struct Localnet {
    pub dir: tempfile::TempDir,
    pub n: usize,
    pub ip_base: u8,
    procs: Vec<NodeProcs>,
}

impl Localnet {
    /// Creates homes for `n` validators on 127.0.0.(ip_base+i) and `users` funded users.
    pub fn setup(n: usize, users: usize, ip_base: u8) -> Result<Localnet> {
        Self::setup_with(n, users, ip_base, &[])
    }

    /// As [`Localnet::setup`], with extra environment for `localnet/setup.sh`
    /// (e.g. `LOCALNET_COMPUTE_PARAMS`).
    pub fn setup_with(
        n: usize,
        users: usize,
        ip_base: u8,
        env: &[(&str, &str)],
    ) -> Result<Localnet> {
        let bin = magnetd_bin();
        if !bin.is_file() {
            bail!(
                "magnetd binary not found at {} (build it or set MAGNETD_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let out = Command::new("bash")
            .arg(repo_root().join("localnet/setup.sh"))
            .arg(dir.path())
            .arg(n.to_string())
            .arg(users.to_string())
            .env("MAGNETD_BIN", &bin)
            .env("COMETBFT_BIN", cometbft_bin())
            .env("LOCALNET_IP_BASE", ip_base.to_string())
            .envs(env.iter().copied())
            .output()
            .context("running localnet/setup.sh")?;
        if !out.status.success() {
            bail!(
                "localnet/setup.sh failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Localnet {
            dir,
            n,
            ip_base,
            procs: (0..n).map(|_| NodeProcs::default()).collect(),
        })
    }

    pub fn home(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    pub fn ip(&self, i: usize) -> String {
        format!("127.0.0.{}", usize::from(self.ip_base) + i)
    }

    pub fn rpc_url(&self, i: usize) -> String {
        format!("http://{}:26657", self.ip(i))
    }

    pub fn node(&self, i: usize) -> Result<Node> {
        Node::connect(&self.rpc_url(i))
    }

    pub fn user(&self, j: usize) -> Result<KeyFile> {
        Keyring::open(&self.dir.path().join("client")).get(&format!("user{j}"))
    }

    fn log(&self, i: usize, name: &str) -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home(i).join(format!("{name}.log")))?)
    }

    /// Starts magnetd (with extra env, e.g. a MAGNETD_FAULT) then cometbft for node i.
    pub fn start_node_with(&mut self, i: usize, env: &[(&str, String)]) -> Result<()> {
        let mut cmd = Command::new(magnetd_bin());
        cmd.arg("start")
            .arg("--home")
            .arg(self.home(i))
            .stdout(Stdio::null())
            .stderr(self.log(i, "magnetd")?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let magnetd = cmd.spawn().context("spawning magnetd")?;
        std::thread::sleep(Duration::from_millis(400));
        let cometbft = Command::new(cometbft_bin())
            .arg("start")
            .arg("--home")
            .arg(self.home(i))
            .stdout(self.log(i, "cometbft")?)
            .stderr(Stdio::null())
            .spawn()
            .context("spawning cometbft")?;
        self.procs[i] = NodeProcs {
            magnetd: Some(magnetd),
            cometbft: Some(cometbft),
        };
        Ok(())
    }

    pub fn start_node(&mut self, i: usize) -> Result<()> {
        self.start_node_with(i, &[])
    }

    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.n {
            self.start_node(i)?;
        }
        Ok(())
    }

    /// `kill -9` both processes of node i.
    pub fn kill_node(&mut self, i: usize) {
        let p = &mut self.procs[i];
        for c in [p.cometbft.as_mut(), p.magnetd.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        *p = NodeProcs::default();
    }

    /// Whether node i's magnetd process has exited (e.g. after an injected fault).
    pub fn magnetd_exited(&mut self, i: usize) -> bool {
        match self.procs[i].magnetd.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    pub async fn height(&self, i: usize) -> Result<u64> {
        self.node(i)?.latest_height().await
    }

    /// Waits until node i's *application* has committed height `h`. (CometBFT's
    /// status height counts blocks stored, which during catch-up runs ahead of the
    /// blocks applied, so queries could still see older state.)
    pub async fn wait_height(&self, i: usize, h: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok((cur, _)) = self.abci_info(i).await {
                if cur >= h {
                    return Ok(cur);
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("node{i} did not reach height {h} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The app's own view (ABCI Info through CometBFT): last committed height and app hash.
    pub async fn abci_info(&self, i: usize) -> Result<(u64, String)> {
        use tendermint_rpc::Client;
        let info = self.node(i)?.rpc.abci_info().await?;
        let raw = info.last_block_app_hash.as_bytes();
        // tendermint-rpc 0.40 hands back the JSON's base64 text undecoded for this field.
        let bytes = match std::str::from_utf8(raw).ok().and_then(|s| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).ok()
        }) {
            Some(b) if b.len() == 32 => b,
            _ => raw.to_vec(),
        };
        Ok((info.last_block_height.value(), hex::encode(bytes)))
    }

    /// Checks that every node's application computed, at its last committed height h,
    /// exactly the app hash the network agreed on in block h+1's header, and that
    /// block headers 1..=upto are identical on every node.
    pub async fn assert_app_hashes_agree(&self, upto: u64) -> Result<()> {
        for h in 1..=upto {
            let reference = self.node(0)?.app_hash_at(h).await?;
            for i in 1..self.n {
                let other = self.node(i)?.app_hash_at(h).await?;
                if other != reference {
                    bail!("app hash in header {h}: node0 has {reference}, node{i} has {other}");
                }
            }
        }
        for i in 0..self.n {
            let (h, app_hash) = self.abci_info(i).await?;
            let next = h.checked_add(1).ok_or_else(|| anyhow!("height overflow"))?;
            self.wait_height(0, next, Duration::from_secs(30)).await?;
            let agreed = self.node(0)?.app_hash_at(next).await?;
            if agreed != app_hash {
                bail!("node{i}'s app computed {app_hash} at height {h}, the network agreed on {agreed}");
            }
        }
        Ok(())
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        for i in 0..self.n {
            self.kill_node(i);
        }
    }
}

/// Sends bank transfers and remembers what every balance must become.
pub struct TransferLoad {
    pub expected: std::collections::BTreeMap<String, u128>,
    pub hashes: Vec<String>,
    signers: Vec<magnet_chain::client::TxSigner>,
    recipients: Vec<String>,
    counter: u128,
}

impl TransferLoad {
    /// Users `senders` send to users `recipients`; starting balances are read from node 0.
    pub async fn new(
        net: &Localnet,
        senders: std::ops::Range<usize>,
        recipients: std::ops::Range<usize>,
    ) -> Result<Self> {
        let node = net.node(0)?;
        let mut expected = std::collections::BTreeMap::new();
        let mut signers = Vec::new();
        for j in senders.clone().chain(recipients.clone()) {
            let k = net.user(j)?;
            expected.insert(k.address.clone(), node.balance(&k.address, "umag").await?);
        }
        for j in senders {
            signers.push(node.signer_for(net.user(j)?.signing_key()?, None).await?);
        }
        let recipients = recipients
            .map(|j| net.user(j).map(|k| k.address))
            .collect::<Result<_>>()?;
        Ok(TransferLoad {
            expected,
            hashes: vec![],
            signers,
            recipients,
            counter: 0,
        })
    }

    /// Sender `s` broadcasts `count` sends to `node` (a sender always uses one node, so its
    /// sequence numbers reach one mempool in order). Returns how many CheckTx accepted.
    pub async fn send(&mut self, s: usize, node: &Node, count: usize) -> Result<()> {
        let gas = magnet_chain::client::GasSettings::default();
        for _ in 0..count {
            self.counter += 1;
            let amount = 1000 + self.counter;
            let idx = usize::try_from(self.counter).unwrap_or(0) % self.recipients.len();
            let to = self.recipients[idx].clone();
            let signer = &mut self.signers[s];
            let from = signer.address.to_string();
            let tx = signer.sign_send(&to, &[("umag".into(), amount)], "", gas)?;
            let r = node.broadcast(tx).await?;
            if r.code != 0 {
                bail!(
                    "CheckTx rejected a valid send from {from}: code {} {}",
                    r.code,
                    r.log
                );
            }
            self.hashes.push(r.txhash);
            let fb = self
                .expected
                .get_mut(&from)
                .ok_or_else(|| anyhow!("unknown sender"))?;
            *fb = fb
                .checked_sub(amount + gas.fee)
                .ok_or_else(|| anyhow!("sender ran dry"))?;
            let tb = self
                .expected
                .get_mut(&to)
                .ok_or_else(|| anyhow!("unknown recipient"))?;
            *tb += amount;
        }
        Ok(())
    }

    /// Re-reads a sender's sequence from chain (after moving it to another node).
    pub async fn resync(&mut self, s: usize, node: &Node) -> Result<()> {
        let addr = self.signers[s].address.to_string();
        let acc = node
            .account(&addr)
            .await?
            .ok_or_else(|| anyhow!("no account {addr}"))?;
        self.signers[s].sequence = acc.sequence;
        Ok(())
    }

    /// Waits for every sent tx to be in a block with code 0.
    pub async fn wait_all_included(&self, node: &Node) -> Result<u64> {
        let mut max_h = 0;
        for h in &self.hashes {
            let inc = node.wait_for_tx(h, Duration::from_secs(60)).await?;
            if inc.code != 0 {
                bail!(
                    "tx {h} failed in block {}: code {} {}",
                    inc.height,
                    inc.code,
                    inc.log
                );
            }
            max_h = max_h.max(inc.height);
        }
        Ok(max_h)
    }

    /// Checks every tracked balance on the given node.
    pub async fn check_balances(&self, node: &Node) -> Result<()> {
        for (addr, want) in &self.expected {
            let got = node.balance(addr, "umag").await?;
            if got != *want {
                bail!(
                    "balance of {addr} on {}: expected {want}, got {got}",
                    node.url
                );
            }
        }
        Ok(())
    }
}

/// Runs `magnetd ARGS -o json` and parses its output; fails with stdout+stderr if it failed.
pub fn magnetd_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(magnetd_bin())
        .args(args)
        .args(["-o", "json"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "magnetd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
