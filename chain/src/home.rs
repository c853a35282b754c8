//! Operator commands on a node's home directory, shaped like the Cosmos SDK's
//! `simd init / genesis add-account / genesis gentx / genesis collect / export`.
//!
//! The home is shared with CometBFT: `config/` (config.toml, genesis.json, keys)
//! and `data/` belong to CometBFT; MAGNET adds `data/magnet.db` (RocksDB) and
//! `keyring-test/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use magnet_proto::magnet::chain::v1::GenTx;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::genesis::{AppGenesis, GenesisAccount, GenesisCoin};

pub fn db_path(home: &Path) -> PathBuf {
    home.join("data").join("magnet.db")
}
pub fn genesis_path(home: &Path) -> PathBuf {
    home.join("config").join("genesis.json")
}
pub fn config_path(home: &Path) -> PathBuf {
    home.join("config").join("config.toml")
}
pub fn gentx_dir(home: &Path) -> PathBuf {
    home.join("config").join("gentx")
}

/// Finds the `cometbft` binary: `$COMETBFT_BIN`, then `$PATH`, then `~/go/bin`.
pub fn cometbft_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COMETBFT_BIN") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let c = dir.join("cometbft");
            if c.is_file() {
                return c;
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join("go/bin/cometbft")
}

fn read_json(path: &Path) -> Result<Value> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Network settings written into config.toml by `init`.
#[derive(Debug, Clone)]
pub struct NodeNetwork {
    pub p2p_laddr: String,
    pub rpc_laddr: String,
    pub abci_addr: String,
    pub timeout_commit: String,
}

impl Default for NodeNetwork {
    fn default() -> Self {
        NodeNetwork {
            p2p_laddr: "tcp://0.0.0.0:26656".into(),
            rpc_laddr: "tcp://127.0.0.1:26657".into(),
            abci_addr: "tcp://127.0.0.1:26658".into(),
            timeout_commit: "1s".into(),
        }
    }
}

/// `magnetd init`: CometBFT keys and config, then a MAGNET genesis with no validators
/// (they come from gentxs) and default params.
pub fn init(home: &Path, moniker: &str, chain_id: &str, net: &NodeNetwork) -> Result<()> {
    if genesis_path(home).exists() {
        bail!(
            "{} already exists: refusing to overwrite a node home",
            genesis_path(home).display()
        );
    }
    let out = Command::new(cometbft_bin())
        .arg("init")
        .arg("--home")
        .arg(home)
        .output()
        .with_context(|| {
            format!(
                "running {} init (is CometBFT installed? see scripts/setup.sh)",
                cometbft_bin().display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "cometbft init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut g = read_json(&genesis_path(home))?;
    g["chain_id"] = Value::String(chain_id.to_string());
    g["validators"] = Value::Array(vec![]);
    g["app_state"] = serde_json::to_value(AppGenesis::default())?;
    write_json(&genesis_path(home), &g)?;

    let cfg_path = config_path(home);
    let text = std::fs::read_to_string(&cfg_path)?;
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing config.toml")?;
    doc["moniker"] = toml_edit::value(moniker);
    doc["proxy_app"] = toml_edit::value(net.abci_addr.as_str());
    doc["p2p"]["laddr"] = toml_edit::value(net.p2p_laddr.as_str());
    doc["rpc"]["laddr"] = toml_edit::value(net.rpc_laddr.as_str());
    doc["consensus"]["timeout_commit"] = toml_edit::value(net.timeout_commit.as_str());
    // Localnets run many nodes on 127.0.0.x: loopback peers must be allowed.
    doc["p2p"]["addr_book_strict"] = toml_edit::value(false);
    doc["p2p"]["allow_duplicate_ip"] = toml_edit::value(true);
    // Bigger mempool batches for throughput; txs are re-checked after each block.
    doc["mempool"]["size"] = toml_edit::value(20000);
    std::fs::write(&cfg_path, doc.to_string())?;
    Ok(())
}

/// Reads `proxy_app` (the ABCI address magnetd listens on) from config.toml.
pub fn abci_addr(home: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config_path(home))?;
    let doc: toml_edit::DocumentMut = text.parse()?;
    doc["proxy_app"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("proxy_app missing in config.toml"))
}

fn set_config(home: &Path, f: impl FnOnce(&mut toml_edit::DocumentMut)) -> Result<()> {
    let p = config_path(home);
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&p)?.parse()?;
    f(&mut doc);
    std::fs::write(&p, doc.to_string())?;
    Ok(())
}

fn app_genesis(g: &Value) -> Result<AppGenesis> {
    serde_json::from_value(g["app_state"].clone()).context("app_state in genesis.json")
}

/// `magnetd genesis add-account`: adds (or tops up) an account in app_state.
/// `magnetd genesis set-params --compute PATCH`: applies a JSON merge patch to the genesis
/// x-compute params (validated exactly as a governance proposal would be).
pub fn set_compute_params(home: &Path, patch: &str) -> Result<magnet_x_compute::ComputeParams> {
    let path = genesis_path(home);
    let mut g = read_json(&path)?;
    let mut app = app_genesis(&g)?;
    let patch: Value = serde_json::from_str(patch).context("--compute: expected a JSON object")?;
    app.compute = crate::gov::apply_changes(&app.compute, &patch).map_err(|e| anyhow!("{e}"))?;
    app.validate().map_err(|e| anyhow!(e))?;
    g["app_state"] = serde_json::to_value(&app)?;
    write_json(&path, &g)?;
    Ok(app.compute)
}

pub fn add_account(home: &Path, address: &str, coins: &[(String, u128)]) -> Result<()> {
    let address = crate::auth::validate_address(address)?;
    let path = genesis_path(home);
    let mut g = read_json(&path)?;
    let mut app = app_genesis(&g)?;
    if app.accounts.iter().any(|a| a.address == address) {
        bail!("account {address} is already in genesis");
    }
    app.accounts.push(GenesisAccount {
        address,
        coins: coins
            .iter()
            .map(|(d, a)| GenesisCoin {
                denom: d.clone(),
                amount: a.to_string(),
            })
            .collect(),
    });
    app.validate().map_err(|e| anyhow!(e))?;
    g["app_state"] = serde_json::to_value(&app)?;
    write_json(&path, &g)
}

/// The on-disk form of a gentx (`config/gentx/gentx-<node_id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenTxFile {
    pub moniker: String,
    pub operator_address: String,
    /// base64 Ed25519 consensus key, as in CometBFT's JSON.
    pub consensus_pub_key: String,
    pub power: i64,
    pub memo: String,
    pub chain_id: String,
    pub operator_pub_key: String,
    pub signature: String,
}

impl GenTxFile {
    fn to_proto(&self, with_sig: bool) -> Result<GenTx> {
        Ok(GenTx {
            moniker: self.moniker.clone(),
            operator_address: self.operator_address.clone(),
            consensus_pub_key: base64::engine::general_purpose::STANDARD
                .decode(&self.consensus_pub_key)?,
            power: self.power,
            memo: self.memo.clone(),
            chain_id: self.chain_id.clone(),
            operator_pub_key: if with_sig {
                hex::decode(&self.operator_pub_key)?
            } else {
                vec![]
            },
            signature: if with_sig {
                hex::decode(&self.signature)?
            } else {
                vec![]
            },
        })
    }

    fn sign_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.to_proto(false)?.encode_to_vec())
    }

    /// Checks the operator's signature and that the address belongs to the key.
    pub fn verify(&self, chain_id: &str) -> Result<()> {
        if self.chain_id != chain_id {
            bail!(
                "gentx of {}: expected chain-id {chain_id}, got {}",
                self.moniker,
                self.chain_id
            );
        }
        if self.power <= 0 {
            bail!(
                "gentx of {}: expected a positive power, got {}",
                self.moniker,
                self.power
            );
        }
        let pk = hex::decode(&self.operator_pub_key)?;
        let addr = crate::auth::address_of(&pk)?;
        if addr != self.operator_address {
            bail!(
                "gentx of {}: operator key belongs to {addr}, not {}",
                self.moniker,
                self.operator_address
            );
        }
        let sig = hex::decode(&self.signature)?;
        crate::auth::verify_signature(&pk, &self.sign_bytes()?, &sig)
            .map_err(|e| anyhow!("gentx of {}: {e}", self.moniker))?;
        if self.to_proto(true)?.consensus_pub_key.len() != 32 {
            bail!(
                "gentx of {}: expected a 32-byte ed25519 consensus key",
                self.moniker
            );
        }
        Ok(())
    }
}

/// CometBFT node id: hex of the first 20 bytes of SHA-256 of the node's ed25519 key.
pub fn node_id(home: &Path) -> Result<String> {
    let nk = read_json(&home.join("config").join("node_key.json"))?;
    let b64 = nk["priv_key"]["value"]
        .as_str()
        .ok_or_else(|| anyhow!("node_key.json: priv_key.value missing"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    if bytes.len() != 64 {
        bail!("node_key.json: expected 64 key bytes, got {}", bytes.len());
    }
    let digest = Sha256::digest(&bytes[32..]);
    Ok(hex::encode(&digest[..20]))
}

/// `magnetd genesis gentx`: the operator signs that this node's consensus key joins
/// the genesis validator set. `p2p_external` is the address peers dial (`host:port`).
pub fn gentx(
    home: &Path,
    key: &crate::client::KeyFile,
    power: i64,
    p2p_external: &str,
) -> Result<PathBuf> {
    let g = read_json(&genesis_path(home))?;
    let chain_id = g["chain_id"]
        .as_str()
        .ok_or_else(|| anyhow!("genesis.json: chain_id missing"))?
        .to_string();
    let app = app_genesis(&g)?;
    if !app.accounts.iter().any(|a| a.address == key.address) {
        bail!(
            "operator {} has no genesis account: run `magnetd genesis add-account` first",
            key.address
        );
    }
    let pv = read_json(&home.join("config").join("priv_validator_key.json"))?;
    let cons = pv["pub_key"]["value"]
        .as_str()
        .ok_or_else(|| anyhow!("priv_validator_key.json: pub_key.value missing"))?;
    let cfg: toml_edit::DocumentMut = std::fs::read_to_string(config_path(home))?.parse()?;
    let moniker = cfg["moniker"].as_str().unwrap_or("node").to_string();
    let id = node_id(home)?;
    let mut file = GenTxFile {
        moniker,
        operator_address: key.address.clone(),
        consensus_pub_key: cons.to_string(),
        power,
        memo: format!("{id}@{p2p_external}"),
        chain_id,
        operator_pub_key: key.pub_key.clone(),
        signature: String::new(),
    };
    let sk = k256::ecdsa::SigningKey::from_slice(&hex::decode(&key.priv_key)?)?;
    let sig: k256::ecdsa::Signature =
        k256::ecdsa::signature::Signer::sign(&sk, &file.sign_bytes()?);
    file.signature = hex::encode(sig.to_bytes());
    file.verify(&file.chain_id.clone())?;
    let dir = gentx_dir(home);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("gentx-{id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&file)?)?;
    Ok(path)
}

/// `magnetd genesis collect`: verifies gentxs, writes the validator set into genesis
/// and every other validator as a persistent peer into config.toml.
pub fn collect(home: &Path, dir: Option<&Path>) -> Result<usize> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| gentx_dir(home));
    let path = genesis_path(home);
    let mut g = read_json(&path)?;
    let chain_id = g["chain_id"]
        .as_str()
        .ok_or_else(|| anyhow!("genesis.json: chain_id missing"))?
        .to_string();
    let mut app = app_genesis(&g)?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading gentx dir {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no gentx files in {}", dir.display());
    }
    let own_id = node_id(home)?;
    let mut validators = Vec::new();
    let mut operators = Vec::new();
    let mut peers = Vec::new();
    for f in &files {
        let gt: GenTxFile = serde_json::from_slice(&std::fs::read(f)?)
            .with_context(|| format!("parsing {}", f.display()))?;
        gt.verify(&chain_id)?;
        if !app
            .accounts
            .iter()
            .any(|a| a.address == gt.operator_address)
        {
            bail!(
                "gentx of {}: operator {} has no genesis account",
                gt.moniker,
                gt.operator_address
            );
        }
        let cons = base64::engine::general_purpose::STANDARD.decode(&gt.consensus_pub_key)?;
        let address = hex::encode_upper(&Sha256::digest(&cons)[..20]);
        validators.push(serde_json::json!({
            "address": address,
            "pub_key": {"type": "tendermint/PubKeyEd25519", "value": gt.consensus_pub_key},
            "power": gt.power.to_string(),
            "name": gt.moniker,
        }));
        operators.push(crate::gov::GenesisValidator {
            operator: gt.operator_address.clone(),
            power: u64::try_from(gt.power).unwrap_or(0),
        });
        if !gt.memo.starts_with(&own_id) {
            peers.push(gt.memo.clone());
        }
    }
    let n = validators.len();
    g["validators"] = Value::Array(validators);
    app.gov.validators = operators;
    app.validate().map_err(|e| anyhow!(e))?;
    g["app_state"] = serde_json::to_value(&app)?;
    write_json(&path, &g)?;
    let peers = peers.join(",");
    set_config(home, |doc| {
        doc["p2p"]["persistent_peers"] = toml_edit::value(peers.as_str())
    })?;
    Ok(n)
}

/// `magnetd export`: the committed state as a genesis `app_state`, with height and app hash.
pub async fn export(home: &Path) -> Result<Value> {
    use futures::StreamExt;
    let storage = cnidarium::Storage::load(db_path(home), vec![]).await?;
    let snap = storage.latest_snapshot();
    let version = snap.version();
    if version == u64::MAX {
        bail!("no committed state in {}", db_path(home).display());
    }
    let params = crate::App::params(&snap).await?;
    let compute = crate::compute::params(&snap).await?;
    let chain_id = crate::App::chain_id(&snap).await?;
    let mut accounts = Vec::new();
    let mut stream = Box::pin(cnidarium::StateRead::prefix_raw(
        &snap,
        crate::state_key::auth::account_prefix(),
    ));
    let mut addrs = Vec::new();
    while let Some(item) = stream.next().await {
        let (_, raw) = item?;
        let acc = magnet_proto::magnet::chain::v1::AccountState::decode(raw.as_slice())?;
        addrs.push(acc);
    }
    addrs.sort_by_key(|a| a.account_number);
    let mut sequences = Vec::new();
    for acc in &addrs {
        let coins = crate::bank::all_balances(&snap, &acc.address).await?;
        sequences.push(serde_json::json!({"address": acc.address, "account_number": acc.account_number, "sequence": acc.sequence}));
        if !coins.is_empty() {
            accounts.push(GenesisAccount {
                address: acc.address.clone(),
                coins: coins
                    .into_iter()
                    .map(|(d, a)| GenesisCoin {
                        denom: d,
                        amount: a.to_string(),
                    })
                    .collect(),
            });
        }
    }
    let gov = crate::gov::export(&snap).await?;
    let supply = crate::bank::all_supply(&snap).await?;
    let root = snap.root_hash().await?;
    let out = serde_json::json!({
        "chain_id": chain_id,
        "height": version,
        "app_hash": hex::encode(root.0),
        "app_state": AppGenesis { params, accounts, compute, gov },
        "auth": sequences,
        "supply": supply.into_iter().map(|(d, a)| serde_json::json!({"denom": d, "amount": a.to_string()})).collect::<Vec<_>>(),
    });
    storage.release().await;
    Ok(out)
}
