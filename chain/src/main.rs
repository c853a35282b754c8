//! `magnetd`: node, operator and client commands of the MAGNET chain, in the shape
//! Cosmos SDK operators know from `simd`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use magnet_chain::client::{parse_coins_arg, GasSettings, Keyring, Node};
use magnet_chain::{home, server, App};
use serde_json::json;
use tendermint_rpc::Client as _;

mod bench;
mod bench_settlement;

#[derive(Parser)]
#[command(name = "magnetd", version, about = "MAGNET chain daemon and CLI")]
struct Cli {
    /// Node home directory (shared with CometBFT).
    #[arg(long, global = true, env = "MAGNETD_HOME", default_value_os_t = default_home())]
    home: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

fn default_home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".magnetd")
}

#[derive(Args, Clone)]
struct NodeArg {
    /// CometBFT RPC endpoint of a node.
    #[arg(long, default_value = "tcp://127.0.0.1:26657")]
    node: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a node home: CometBFT keys/config and a MAGNET genesis.
    Init {
        moniker: String,
        #[arg(long, default_value = "magnet-local-1")]
        chain_id: String,
        #[arg(long, default_value = "tcp://0.0.0.0:26656")]
        p2p_laddr: String,
        #[arg(long, default_value = "tcp://127.0.0.1:26657")]
        rpc_laddr: String,
        #[arg(long, default_value = "tcp://127.0.0.1:26658")]
        abci_addr: String,
        #[arg(long, default_value = "1s")]
        timeout_commit: String,
    },
    /// Run the ABCI application (and optionally CometBFT alongside it).
    Start {
        /// Address to serve ABCI on; defaults to `proxy_app` from config.toml.
        #[arg(long)]
        abci_addr: Option<String>,
        /// Also start `cometbft start --home <home>` as a child process.
        #[arg(long)]
        with_cometbft: bool,
    },
    /// Manage keys in the home's test keyring (unencrypted, 0600 files).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Build the genesis file.
    #[command(subcommand)]
    Genesis(GenesisCmd),
    /// Sign and broadcast transactions.
    #[command(subcommand)]
    Tx(TxCmd),
    /// Query state.
    #[command(subcommand)]
    Query(QueryCmd),
    /// Dump committed state as genesis JSON (node must be stopped).
    Export,
    /// Show a node's status.
    Status {
        #[command(flatten)]
        node: NodeArg,
    },
    /// Measure committed tx/s and inclusion latency against a running localnet.
    Bench(bench::BenchArgs),
    /// Time the settlement of one x-compute epoch with N workers inside FinalizeBlock.
    BenchSettlement(bench_settlement::SettlementArgs),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key (random, or from a hex secret with --secret-hex).
    Add {
        name: String,
        #[arg(long)]
        secret_hex: Option<String>,
    },
    List,
    Show {
        name: String,
        /// Print only the address.
        #[arg(long, short = 'a')]
        address: bool,
    },
}

#[derive(Subcommand)]
enum GenesisCmd {
    /// Give an address (or a key name from the keyring) coins at genesis.
    AddAccount {
        address_or_key: String,
        coins: String,
    },
    /// Sign this node's validator declaration.
    Gentx {
        key: String,
        #[arg(long, default_value_t = 10)]
        power: i64,
        /// host:port other validators dial to reach this node.
        #[arg(long, default_value = "127.0.0.1:26656")]
        p2p_external: String,
    },
    /// Change x-compute params in genesis with a JSON merge patch, e.g.
    /// `--compute '{"epoch_length_secs":60}'` (validated like a gov proposal).
    SetParams {
        #[arg(long)]
        compute: String,
    },
    /// Put all gentxs into genesis.json and peers into config.toml.
    Collect {
        #[arg(long)]
        gentx_dir: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct TxFlags {
    #[command(flatten)]
    node: NodeArg,
    /// Chain id (read from the node when omitted).
    #[arg(long)]
    chain_id: Option<String>,
    #[arg(long, default_value_t = GasSettings::default().gas_limit)]
    gas: u64,
    /// Fee, e.g. 1000umag (default: the minimum for --gas).
    #[arg(long)]
    fees: Option<String>,
    #[arg(long, default_value = "")]
    memo: String,
    /// Return after CheckTx instead of waiting for the block.
    #[arg(long)]
    no_wait: bool,
    /// Accepted for Cosmos CLI compatibility; magnetd never prompts.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Subcommand)]
enum TxCmd {
    #[command(subcommand)]
    Bank(BankTx),
    /// x-compute: the bonded worker registry.
    #[command(subcommand)]
    Compute(ComputeTx),
    /// gov: parameter-change proposals and validator votes.
    #[command(subcommand)]
    Gov(GovTx),
}

#[derive(Subcommand)]
enum GovTx {
    /// Propose an x-compute params change: `--changes '{"tier_multiplier_ppm":{"gpu_compute":2000000}}'`
    /// (a JSON merge patch; `@file.json` reads it from a file).
    SubmitProposal {
        key: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        changes: String,
        #[arg(long)]
        deposit: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Vote as a validator operator: yes | no | abstain.
    Vote {
        key: String,
        proposal_id: u64,
        option: String,
        #[command(flatten)]
        flags: TxFlags,
    },
}

#[derive(Subcommand)]
enum GovQuery {
    Proposal {
        id: u64,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Gov params and the validator operators with their voting power.
    Params {
        #[command(flatten)]
        node: NodeArg,
    },
}

/// `1700000000` (unix seconds) or `+600` (seconds from now).
fn parse_time_arg(s: &str) -> Result<i64> {
    match s.strip_prefix('+') {
        Some(rel) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let rel: u64 = rel
                .parse()
                .map_err(|_| anyhow!("expected +SECONDS, got {s:?}"))?;
            Ok(i64::try_from(now.saturating_add(rel))?)
        }
        None => s
            .parse()
            .map_err(|_| anyhow!("expected unix seconds or +SECONDS, got {s:?}")),
    }
}

fn umag_arg(flag: &str, s: &str) -> Result<u128> {
    match parse_coins_arg(s)?.as_slice() {
        [(d, a)] if d == magnet_chain::params::BOND_DENOM => Ok(*a),
        _ => bail!("expected {flag} in umag, got {s}"),
    }
}

#[derive(Args, Clone)]
struct HardwareArgs {
    #[arg(long, default_value_t = 0)]
    cpu_cores: u32,
    #[arg(long, default_value_t = 0)]
    ram_mb: u64,
    #[arg(long, default_value = "")]
    gpu_model: String,
    #[arg(long, default_value_t = 0)]
    gpu_vram_mb: u64,
    /// SSD provisioning report (from `magnet-worker provision`): 4 KB random read MB/s.
    #[arg(long, default_value_t = 0)]
    ssd_read_mbps: u64,
    #[arg(long, default_value_t = 0)]
    ssd_write_mbps: u64,
    #[arg(long, default_value_t = 0)]
    ssd_blocks: u64,
}

#[derive(Subcommand)]
enum ComputeTx {
    /// Register as a worker: `magnetd tx compute register-worker <key> --tier gpu_compute --bond 1000000000umag`.
    RegisterWorker {
        key: String,
        #[arg(long)]
        tier: String,
        #[arg(long)]
        bond: String,
        #[command(flatten)]
        hw: HardwareArgs,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Liveness heartbeat.
    Heartbeat {
        key: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Report training compute for the current epoch (steps × model size + checkpoint hash).
    SubmitContribution {
        key: String,
        #[arg(long)]
        steps: u64,
        #[arg(long)]
        model_params: u64,
        /// SHA-256 of the checkpoint, 64 hex characters.
        #[arg(long)]
        checkpoint_hash: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Commit to a result: SHA-256(result || nonce) with a 32-byte hex nonce.
    Commit {
        key: String,
        task_id: String,
        /// The result to commit to (revealed later with the same nonce).
        #[arg(long)]
        result: String,
        #[arg(long)]
        nonce_hex: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Reveal a committed result inside the reveal window.
    Reveal {
        key: String,
        task_id: String,
        #[arg(long)]
        result: String,
        #[arg(long)]
        nonce_hex: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Settle a paid (x402) inference call: `--contributor ADDR:WEIGHT` may repeat.
    SettleInference {
        payer: String,
        #[arg(long)]
        request_id: String,
        #[arg(long)]
        serving_node: String,
        #[arg(long)]
        amount: String,
        #[arg(long = "contributor")]
        contributors: Vec<String>,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Open the next DiLoCo round (`--eligible ADDR` repeats).
    OpenRound {
        key: String,
        #[arg(long)]
        round: u64,
        #[arg(long)]
        inner_steps: u64,
        #[arg(long)]
        duration_secs: u64,
        #[arg(long)]
        base_checkpoint_hash: String,
        #[arg(long = "eligible")]
        eligible: Vec<String>,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Commit a pseudo-gradient to a round.
    SubmitGradient {
        key: String,
        #[arg(long)]
        round: u64,
        #[arg(long)]
        gradient_hash: String,
        #[arg(long)]
        content_id: String,
        #[arg(long, default_value_t = 0)]
        local_loss_ppm: u64,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// As the round's leader, record the merged checkpoint.
    FinalizeRound {
        key: String,
        #[arg(long)]
        round: u64,
        #[arg(long)]
        merged_checkpoint_hash: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Begin unbonding (bond returns after the unbonding delay).
    Unbond {
        key: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Collect rewards of settled epochs (heartbeats and unbonding also collect them).
    ClaimRewards {
        key: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Join the notary panel with a bond (>= notary_min_bond).
    JoinNotaryPanel {
        key: String,
        #[arg(long)]
        bond: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Register a data set (pays data_registration_fee; confirmed after the challenge window).
    RegisterData {
        key: String,
        #[arg(long)]
        data_hash: String,
        #[arg(long)]
        uri: String,
        #[arg(long)]
        size_bytes: u64,
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Challenge before the notary panel: --kind data|contribution|reveal --target
    /// <data hash> | <epoch>:<owner> | <task_id>:<owner>.
    Challenge {
        key: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// A notary's vote on a dispute: `--uphold` (the challenge is right) or `--reject`.
    VoteDispute {
        key: String,
        dispute_id: u64,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        uphold: bool,
        #[arg(long)]
        reject: bool,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Create a research job escrowing --budget; times are unix seconds or +SECONDS from now.
    CreateJob {
        key: String,
        #[arg(long)]
        job_id: String,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        budget: String,
        #[arg(long)]
        commit_end: String,
        #[arg(long)]
        reveal_end: String,
        #[arg(long)]
        deadline: String,
        /// Comma-separated evaluator addresses or key names.
        #[arg(long, value_delimiter = ',')]
        evaluators: Vec<String>,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Claim a research job (then commit/reveal with task id `job:<job_id>`).
    ClaimJob {
        key: String,
        job_id: String,
        #[command(flatten)]
        flags: TxFlags,
    },
    /// Score a job's revealed results as one of its evaluators: `--scores addr=900000,addr2=500000`.
    ScoreJob {
        key: String,
        job_id: String,
        #[arg(long, value_delimiter = ',')]
        scores: Vec<String>,
        #[command(flatten)]
        flags: TxFlags,
    },
}

#[derive(Subcommand)]
enum ComputeQuery {
    Worker {
        address: String,
        #[command(flatten)]
        node: NodeArg,
    },
    Params {
        #[command(flatten)]
        node: NodeArg,
    },
    /// A commit-reveal task's windows.
    Task {
        task_id: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// One worker's commitment to a task and its outcome.
    Commitment {
        task_id: String,
        owner: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// The receipt of a settled x402 call.
    Receipt {
        request_id: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A DiLoCo round: eligible workers, leader, gradients, merged checkpoint.
    Round {
        round: u64,
        #[command(flatten)]
        node: NodeArg,
    },
    /// The epoch being accumulated.
    Epoch {
        #[command(flatten)]
        node: NodeArg,
    },
    /// The recorded settlement of an epoch.
    Settlement {
        epoch: u64,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A worker's reward for a settled epoch (owed or paid).
    Reward {
        epoch: u64,
        owner: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A notary on the panel.
    Notary {
        address: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A dispute: target, votes, verdict.
    Dispute {
        id: u64,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A data record by its hash.
    Data {
        data_hash: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A research job and, once settled, its payouts.
    Job {
        job_id: String,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Subcommand)]
enum BankTx {
    /// Send coins: `magnetd tx bank send <from-key> <to-address> 1000umag`.
    Send {
        from: String,
        to: String,
        amount: String,
        #[command(flatten)]
        flags: TxFlags,
    },
}

#[derive(Subcommand)]
enum QueryCmd {
    #[command(subcommand)]
    Bank(BankQuery),
    /// x-compute records.
    #[command(subcommand)]
    Compute(ComputeQuery),
    /// gov proposals and params.
    #[command(subcommand)]
    Gov(GovQuery),
    /// Account number, sequence and public key.
    Account {
        address: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A tx by hash.
    Tx {
        hash: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// A raw store key, with an ICS23 proof against the app hash when --prove.
    Store {
        key: String,
        #[arg(long)]
        prove: bool,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Subcommand)]
enum BankQuery {
    Balances {
        address: String,
        #[command(flatten)]
        node: NodeArg,
    },
    Total {
        #[command(flatten)]
        node: NodeArg,
    },
}

fn print(output: Output, value: serde_json::Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{value}"),
        Output::Text => println!("{}", text()),
    }
}

/// Prints a JSON value: compact with `-o json`, pretty otherwise.
fn print_json(output: Output, value: serde_json::Value) {
    match output {
        Output::Json => println!("{value}"),
        Output::Text => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
    }
}

fn resolve_address(home: &std::path::Path, s: &str) -> Result<String> {
    if s.starts_with("magnet1") {
        Ok(magnet_chain::auth::validate_address(s)?)
    } else {
        Ok(Keyring::open(home).get(s)?.address)
    }
}

/// Runs an ABCI query whose answer is a protobuf message, failing with the node's code.
async fn proto_query<M: prost::Message + Default>(
    node: &str,
    path: &str,
    data: Vec<u8>,
) -> Result<M> {
    let n = Node::connect(node)?;
    let r = n
        .rpc
        .abci_query(Some(path.into()), data, None, false)
        .await?;
    if r.code.is_err() {
        bail!(
            "query {path} failed: code {} ({}): {}",
            r.code.value(),
            r.codespace,
            r.log
        );
    }
    magnet_chain::app::decode_msg(&r.value)
}

/// Runs an x-compute query whose answer is JSON and prints it.
async fn compute_json_query(out: Output, node: &str, path: &str, data: Vec<u8>) -> Result<()> {
    let n = Node::connect(node)?;
    let r = n
        .rpc
        .abci_query(Some(path.into()), data, None, false)
        .await?;
    if r.code.is_err() {
        bail!(
            "query {path} failed: code {} ({}): {}",
            r.code.value(),
            r.codespace,
            r.log
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&r.value)?;
    print_json(out, v);
    Ok(())
}

fn any_of<M: prost::Message>(type_url: &str, msg: &M) -> cosmrs::Any {
    cosmrs::Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

/// Signs `msgs` with keyring key `key`, broadcasts, and (unless --no-wait) waits for
/// the block; prints the outcome and exits non-zero on rejection.
async fn send_tx(
    out: Output,
    home: &std::path::Path,
    key: &str,
    flags: &TxFlags,
    msgs: Vec<cosmrs::Any>,
) -> Result<()> {
    let _ = flags.yes;
    let node = Node::connect(&flags.node.node)?;
    let kf = Keyring::open(home).get(key)?;
    let fee = match &flags.fees {
        Some(f) => match parse_coins_arg(f)?.as_slice() {
            [(d, a)] if d == magnet_chain::params::BOND_DENOM => *a,
            _ => bail!("expected --fees in umag, got {f}"),
        },
        None => magnet_chain::params::ChainParams::default().required_fee(flags.gas),
    };
    let mut signer = node
        .signer_for(kf.signing_key()?, flags.chain_id.as_deref())
        .await?;
    let tx = signer.sign_msgs(
        msgs,
        &flags.memo,
        GasSettings {
            gas_limit: flags.gas,
            fee,
        },
    )?;
    let r = node.broadcast(tx).await?;
    if r.code != 0 {
        print(out, json!(r), || {
            format!("rejected: code {} ({}): {}", r.code, r.codespace, r.log)
        });
        std::process::exit(1);
    }
    if flags.no_wait {
        print(out, json!(r), || format!("txhash: {}", r.txhash));
        return Ok(());
    }
    let inc = node.wait_for_tx(&r.txhash, Duration::from_secs(30)).await?;
    print(out, json!(inc), || {
        format!(
            "txhash: {} height: {} code: {} {}",
            inc.txhash, inc.height, inc.code, inc.log
        )
    });
    if inc.code != 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let out = cli.output;
    let home = cli.home.clone();
    match cli.cmd {
        Cmd::Init {
            moniker,
            chain_id,
            p2p_laddr,
            rpc_laddr,
            abci_addr,
            timeout_commit,
        } => {
            let net = home::NodeNetwork {
                p2p_laddr,
                rpc_laddr,
                abci_addr,
                timeout_commit,
            };
            home::init(&home, &moniker, &chain_id, &net)?;
            let id = home::node_id(&home)?;
            print(
                out,
                json!({"moniker": moniker, "chain_id": chain_id, "node_id": id, "home": home}),
                || {
                    format!(
                        "initialised {moniker} (node {id}) for chain {chain_id} in {}",
                        home.display()
                    )
                },
            );
        }
        Cmd::Start {
            abci_addr,
            with_cometbft,
        } => {
            let addr = match abci_addr {
                Some(a) => a,
                None => home::abci_addr(&home)?,
            };
            let storage = cnidarium::Storage::load(home::db_path(&home), vec![])
                .await
                .with_context(|| format!("opening {}", home::db_path(&home).display()))?;
            let app = App::new(storage);
            tracing::info!(%addr, height = app.committed_height(), "magnetd serving ABCI");
            let serve = tokio::spawn({
                let addr = addr.clone();
                async move { server::serve(app, &addr).await }
            });
            if with_cometbft {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut child = tokio::process::Command::new(home::cometbft_bin())
                    .arg("start")
                    .arg("--home")
                    .arg(&home)
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting cometbft")?;
                tokio::select! {
                    r = serve => { r??; }
                    s = child.wait() => { bail!("cometbft exited: {:?}", s?); }
                    _ = tokio::signal::ctrl_c() => { child.kill().await.ok(); }
                }
            } else {
                tokio::select! {
                    r = serve => { r??; }
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
        }
        Cmd::Keys(k) => {
            let kr = Keyring::open(&home);
            match k {
                KeysCmd::Add { name, secret_hex } => {
                    let secret = match secret_hex {
                        Some(h) => {
                            let b = hex::decode(h.trim()).context("secret is not hex")?;
                            Some(<[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                                anyhow!("expected a 32-byte secret, got {} bytes", b.len())
                            })?)
                        }
                        None => None,
                    };
                    let kf = kr.add(&name, secret)?;
                    print(
                        out,
                        json!({"name": kf.name, "address": kf.address, "pubkey": kf.pub_key}),
                        || {
                            format!(
                                "- name: {}\n  address: {}\n  pubkey: {}",
                                kf.name, kf.address, kf.pub_key
                            )
                        },
                    );
                }
                KeysCmd::List => {
                    let keys = kr.list()?;
                    let v: Vec<_> = keys
                        .iter()
                        .map(|k| json!({"name": k.name, "address": k.address, "pubkey": k.pub_key}))
                        .collect();
                    print(out, json!(v), || {
                        keys.iter()
                            .map(|k| format!("{}\t{}", k.name, k.address))
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
                KeysCmd::Show { name, address } => {
                    let k = kr.get(&name)?;
                    if address {
                        println!("{}", k.address);
                    } else {
                        print(
                            out,
                            json!({"name": k.name, "address": k.address, "pubkey": k.pub_key}),
                            || format!("{}\t{}", k.name, k.address),
                        );
                    }
                }
            }
        }
        Cmd::Genesis(g) => match g {
            GenesisCmd::AddAccount {
                address_or_key,
                coins,
            } => {
                let addr = resolve_address(&home, &address_or_key)?;
                let coins = parse_coins_arg(&coins)?;
                home::add_account(&home, &addr, &coins)?;
                print(out, json!({"address": addr}), || {
                    format!("added genesis account {addr}")
                });
            }
            GenesisCmd::Gentx {
                key,
                power,
                p2p_external,
            } => {
                let kf = Keyring::open(&home).get(&key)?;
                let path = home::gentx(&home, &kf, power, &p2p_external)?;
                print(out, json!({"gentx": path}), || {
                    format!("wrote {}", path.display())
                });
            }
            GenesisCmd::SetParams { compute } => {
                let p = home::set_compute_params(&home, &compute)?;
                print_json(out, json!({"compute": p}));
            }
            GenesisCmd::Collect { gentx_dir } => {
                let n = home::collect(&home, gentx_dir.as_deref())?;
                print(out, json!({"validators": n}), || {
                    format!("genesis has {n} validators")
                });
            }
        },
        Cmd::Tx(TxCmd::Bank(BankTx::Send {
            from,
            to,
            amount,
            flags,
        })) => {
            let to = magnet_chain::auth::validate_address(&to)?;
            let coins = parse_coins_arg(&amount)?;
            let from_addr = Keyring::open(&home).get(&from)?.address;
            let msg = cosmrs::bank::MsgSend {
                from_address: from_addr.parse().map_err(|e| anyhow!("{e}"))?,
                to_address: to.parse().map_err(|e| anyhow!("{e}"))?,
                amount: coins
                    .iter()
                    .map(|(d, a)| {
                        Ok(cosmrs::Coin {
                            denom: d.parse().map_err(|e| anyhow!("{e}"))?,
                            amount: *a,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            let any = cosmrs::tx::Msg::to_any(&msg).map_err(|e| anyhow!("{e}"))?;
            send_tx(out, &home, &from, &flags, vec![any]).await?;
        }
        Cmd::Tx(TxCmd::Compute(c)) => {
            use magnet_proto::magnet::compute::v1 as pb;
            let (key, flags, any) = match c {
                ComputeTx::RegisterWorker {
                    key,
                    tier,
                    bond,
                    hw,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let bond = match parse_coins_arg(&bond)?.as_slice() {
                        [(d, a)] if d == magnet_chain::params::BOND_DENOM => *a,
                        _ => bail!("expected --bond in umag, got {bond}"),
                    };
                    let msg = pb::MsgRegisterWorker {
                        owner,
                        tier,
                        bond_amount: bond.to_string(),
                        hardware: Some(pb::HardwareProfile {
                            cpu_cores: hw.cpu_cores,
                            ram_mb: hw.ram_mb,
                            gpu_model: hw.gpu_model,
                            gpu_vram_mb: hw.gpu_vram_mb,
                            ssd_read_mbps: hw.ssd_read_mbps,
                            ssd_write_mbps: hw.ssd_write_mbps,
                            ssd_blocks_tested: hw.ssd_blocks,
                        }),
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_REGISTER_WORKER_TYPE_URL, &msg),
                    )
                }
                ComputeTx::SubmitContribution {
                    key,
                    steps,
                    model_params,
                    checkpoint_hash,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgSubmitContribution {
                        owner,
                        steps,
                        model_params,
                        checkpoint_hash,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_SUBMIT_CONTRIBUTION_TYPE_URL, &msg),
                    )
                }
                ComputeTx::Commit {
                    key,
                    task_id,
                    result,
                    nonce_hex,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let nonce: [u8; 32] = hex::decode(&nonce_hex)?
                        .try_into()
                        .map_err(|_| anyhow!("expected --nonce-hex of 32 bytes (64 hex chars)"))?;
                    let commitment =
                        magnet_x_compute::commitment(result.as_bytes(), &nonce).to_vec();
                    let msg = pb::MsgCommitResult {
                        owner,
                        task_id,
                        commitment,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_COMMIT_RESULT_TYPE_URL, &msg),
                    )
                }
                ComputeTx::Reveal {
                    key,
                    task_id,
                    result,
                    nonce_hex,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let nonce = hex::decode(&nonce_hex)?;
                    let msg = pb::MsgRevealResult {
                        owner,
                        task_id,
                        result: result.into_bytes(),
                        nonce,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_REVEAL_RESULT_TYPE_URL, &msg),
                    )
                }
                ComputeTx::SettleInference {
                    payer,
                    request_id,
                    serving_node,
                    amount,
                    contributors,
                    flags,
                } => {
                    let payer_addr = Keyring::open(&home).get(&payer)?.address;
                    let amount = match parse_coins_arg(&amount)?.as_slice() {
                        [(d, a)] if d == magnet_chain::params::BOND_DENOM => *a,
                        _ => bail!("expected --amount in umag, got {amount}"),
                    };
                    let contributors = contributors
                        .iter()
                        .map(|c| {
                            let (a, w) = c.split_once(':').ok_or_else(|| {
                                anyhow!("expected --contributor ADDR:WEIGHT, got {c}")
                            })?;
                            Ok(pb::ContributorWeight {
                                address: a.to_string(),
                                weight: w.to_string(),
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let msg = pb::MsgSettleInference {
                        payer: payer_addr,
                        request_id,
                        serving_node,
                        amount: amount.to_string(),
                        contributors,
                    };
                    (
                        payer,
                        flags,
                        any_of(magnet_chain::tx::MSG_SETTLE_INFERENCE_TYPE_URL, &msg),
                    )
                }
                ComputeTx::OpenRound {
                    key,
                    round,
                    inner_steps,
                    duration_secs,
                    base_checkpoint_hash,
                    eligible,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let eligible = eligible
                        .iter()
                        .map(|e| resolve_address(&home, e))
                        .collect::<Result<Vec<_>>>()?;
                    let msg = pb::MsgOpenRound {
                        owner,
                        round,
                        inner_steps,
                        duration_secs,
                        base_checkpoint_hash,
                        eligible,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_OPEN_ROUND_TYPE_URL, &msg),
                    )
                }
                ComputeTx::SubmitGradient {
                    key,
                    round,
                    gradient_hash,
                    content_id,
                    local_loss_ppm,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgSubmitGradient {
                        owner,
                        round,
                        gradient_hash,
                        content_id,
                        local_loss_ppm,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_SUBMIT_GRADIENT_TYPE_URL, &msg),
                    )
                }
                ComputeTx::FinalizeRound {
                    key,
                    round,
                    merged_checkpoint_hash,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgFinalizeRound {
                        owner,
                        round,
                        merged_checkpoint_hash,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_FINALIZE_ROUND_TYPE_URL, &msg),
                    )
                }
                ComputeTx::Heartbeat { key, flags } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    (
                        key,
                        flags,
                        any_of(
                            magnet_chain::tx::MSG_HEARTBEAT_TYPE_URL,
                            &pb::MsgHeartbeat { owner },
                        ),
                    )
                }
                ComputeTx::ClaimRewards { key, flags } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgClaimRewards { owner };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_CLAIM_REWARDS_TYPE_URL, &msg),
                    )
                }
                ComputeTx::JoinNotaryPanel { key, bond, flags } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let bond = umag_arg("--bond", &bond)?.to_string();
                    let msg = pb::MsgJoinNotaryPanel { owner, bond };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_JOIN_NOTARY_PANEL_TYPE_URL, &msg),
                    )
                }
                ComputeTx::RegisterData {
                    key,
                    data_hash,
                    uri,
                    size_bytes,
                    domain,
                    flags,
                } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgRegisterData {
                        owner,
                        data_hash,
                        uri,
                        size_bytes,
                        domain,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_REGISTER_DATA_TYPE_URL, &msg),
                    )
                }
                ComputeTx::Challenge {
                    key,
                    kind,
                    target,
                    reason,
                    flags,
                } => {
                    let challenger = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgChallenge {
                        challenger,
                        kind,
                        target,
                        reason,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_CHALLENGE_TYPE_URL, &msg),
                    )
                }
                ComputeTx::VoteDispute {
                    key,
                    dispute_id,
                    uphold,
                    reject: _,
                    flags,
                } => {
                    let notary = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgVoteDispute {
                        notary,
                        dispute_id,
                        uphold,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_VOTE_DISPUTE_TYPE_URL, &msg),
                    )
                }
                ComputeTx::CreateJob {
                    key,
                    job_id,
                    domain,
                    budget,
                    commit_end,
                    reveal_end,
                    deadline,
                    evaluators,
                    flags,
                } => {
                    let requester = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgCreateJob {
                        requester,
                        job_id,
                        domain,
                        budget: umag_arg("--budget", &budget)?.to_string(),
                        commit_end: parse_time_arg(&commit_end)?,
                        reveal_end: parse_time_arg(&reveal_end)?,
                        deadline: parse_time_arg(&deadline)?,
                        evaluators: evaluators
                            .iter()
                            .map(|e| resolve_address(&home, e))
                            .collect::<Result<_>>()?,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_CREATE_JOB_TYPE_URL, &msg),
                    )
                }
                ComputeTx::ClaimJob { key, job_id, flags } => {
                    let worker = Keyring::open(&home).get(&key)?.address;
                    let msg = pb::MsgClaimJob { worker, job_id };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_CLAIM_JOB_TYPE_URL, &msg),
                    )
                }
                ComputeTx::ScoreJob {
                    key,
                    job_id,
                    scores,
                    flags,
                } => {
                    let evaluator = Keyring::open(&home).get(&key)?.address;
                    let scores = scores
                        .iter()
                        .map(|s| {
                            let (w, v) = s
                                .split_once('=')
                                .ok_or_else(|| anyhow!("expected WORKER=SCORE, got {s:?}"))?;
                            Ok(pb::JobScore {
                                worker: resolve_address(&home, w)?,
                                score: v
                                    .parse()
                                    .map_err(|_| anyhow!("expected an integer score, got {v:?}"))?,
                            })
                        })
                        .collect::<Result<_>>()?;
                    let msg = pb::MsgScoreJob {
                        evaluator,
                        job_id,
                        scores,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_SCORE_JOB_TYPE_URL, &msg),
                    )
                }
                ComputeTx::Unbond { key, flags } => {
                    let owner = Keyring::open(&home).get(&key)?.address;
                    (
                        key,
                        flags,
                        any_of(
                            magnet_chain::tx::MSG_BEGIN_UNBOND_TYPE_URL,
                            &pb::MsgBeginUnbond { owner },
                        ),
                    )
                }
            };
            send_tx(out, &home, &key, &flags, vec![any]).await?;
        }
        Cmd::Tx(TxCmd::Gov(g)) => {
            use magnet_proto::magnet::gov::v1 as gpb;
            let (key, flags, any) = match g {
                GovTx::SubmitProposal {
                    key,
                    title,
                    changes,
                    deposit,
                    flags,
                } => {
                    let proposer = Keyring::open(&home).get(&key)?.address;
                    let changes = match changes.strip_prefix('@') {
                        Some(path) => std::fs::read_to_string(path)
                            .with_context(|| format!("reading {path}"))?,
                        None => changes,
                    };
                    let msg = gpb::MsgSubmitProposal {
                        proposer,
                        title,
                        changes,
                        deposit: umag_arg("--deposit", &deposit)?.to_string(),
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_SUBMIT_PROPOSAL_TYPE_URL, &msg),
                    )
                }
                GovTx::Vote {
                    key,
                    proposal_id,
                    option,
                    flags,
                } => {
                    let voter = Keyring::open(&home).get(&key)?.address;
                    let msg = gpb::MsgVote {
                        voter,
                        proposal_id,
                        option,
                    };
                    (
                        key,
                        flags,
                        any_of(magnet_chain::tx::MSG_VOTE_TYPE_URL, &msg),
                    )
                }
            };
            send_tx(out, &home, &key, &flags, vec![any]).await?;
        }
        Cmd::Query(q) => match q {
            QueryCmd::Gov(GovQuery::Proposal { id, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_GOV_PROPOSAL,
                    id.to_string().into_bytes(),
                )
                .await?;
            }
            QueryCmd::Gov(GovQuery::Params { node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_GOV_PARAMS,
                    Vec::new(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Notary { address, node }) => {
                let addr = resolve_address(&home, &address)?;
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_NOTARY,
                    addr.into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Reward { epoch, owner, node }) => {
                let owner = resolve_address(&home, &owner)?;
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_REWARD,
                    format!("{epoch}/{owner}").into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Dispute { id, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_DISPUTE,
                    id.to_string().into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Data { data_hash, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_DATA,
                    data_hash.into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Job { job_id, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_JOB,
                    job_id.into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Worker { address, node }) => {
                let addr = resolve_address(&home, &address)?;
                let w: magnet_proto::magnet::compute::v1::Worker = proto_query(
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_WORKER,
                    addr.as_bytes().to_vec(),
                )
                .await?;
                let hw = w.hardware.clone().unwrap_or_default();
                let v = json!({
                    "owner": w.owner, "node_id": w.node_id, "tier": w.tier, "requested_tier": w.requested_tier,
                    "bond": w.bond, "registered_height": w.registered_height.to_string(),
                    "last_heartbeat_time": w.last_heartbeat_time.to_string(), "unbonding": w.unbonding,
                    "unbond_complete_time": w.unbond_complete_time.to_string(),
                    "hardware": {"cpu_cores": hw.cpu_cores, "ram_mb": hw.ram_mb.to_string(), "gpu_model": hw.gpu_model,
                        "gpu_vram_mb": hw.gpu_vram_mb.to_string(), "ssd_read_mbps": hw.ssd_read_mbps.to_string(),
                        "ssd_write_mbps": hw.ssd_write_mbps.to_string(), "ssd_blocks_tested": hw.ssd_blocks_tested.to_string()},
                });
                print_json(out, v);
            }
            QueryCmd::Compute(ComputeQuery::Params { node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_PARAMS,
                    Vec::new(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Task { task_id, node }) => {
                let t: magnet_proto::magnet::compute::v1::Task = proto_query(
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_TASK,
                    task_id.into_bytes(),
                )
                .await?;
                let v = json!({"task_id": t.task_id, "opened_at": t.opened_at.to_string(), "commit_window_end": t.commit_window_end.to_string(),
                    "reveal_window_end": t.reveal_window_end.to_string(), "commit_count": t.commit_count, "closed": t.closed});
                print_json(out, v);
            }
            QueryCmd::Compute(ComputeQuery::Commitment {
                task_id,
                owner,
                node,
            }) => {
                let owner = resolve_address(&home, &owner)?;
                let c: magnet_proto::magnet::compute::v1::CommitRecord = proto_query(
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_COMMIT,
                    format!("{task_id}/{owner}").into_bytes(),
                )
                .await?;
                let v = json!({"task_id": c.task_id, "owner": c.owner, "commitment": hex::encode(&c.commitment), "committed_at": c.committed_at.to_string(),
                    "outcome": c.outcome, "result": String::from_utf8_lossy(&c.result), "slashed": c.slashed});
                print_json(out, v);
            }
            QueryCmd::Compute(ComputeQuery::Receipt { request_id, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_RECEIPT,
                    request_id.into_bytes(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Round { round, node }) => {
                let rd: magnet_proto::magnet::compute::v1::Round = proto_query(
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_ROUND,
                    round.to_string().into_bytes(),
                )
                .await?;
                let grads: Vec<_> = rd.gradients.iter().map(|g| json!({"owner": g.owner, "node_id": g.node_id, "gradient_hash": g.gradient_hash,
                    "content_id": g.content_id, "local_loss_ppm": g.local_loss_ppm.to_string(), "submitted_at": g.submitted_at.to_string()})).collect();
                let v = json!({"round": rd.round.to_string(), "inner_steps": rd.inner_steps.to_string(), "opened_at": rd.opened_at.to_string(),
                    "deadline": rd.deadline.to_string(), "base_checkpoint_hash": rd.base_checkpoint_hash, "eligible": rd.eligible, "leader": rd.leader,
                    "gradients": grads, "merged_checkpoint_hash": rd.merged_checkpoint_hash, "finalized": rd.finalized});
                print_json(out, v);
            }
            QueryCmd::Compute(ComputeQuery::Epoch { node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_EPOCH,
                    Vec::new(),
                )
                .await?;
            }
            QueryCmd::Compute(ComputeQuery::Settlement { epoch, node }) => {
                compute_json_query(
                    out,
                    &node.node,
                    magnet_chain::query::PATH_COMPUTE_SETTLEMENT,
                    epoch.to_string().into_bytes(),
                )
                .await?;
            }
            QueryCmd::Bank(BankQuery::Balances { address, node }) => {
                let addr = resolve_address(&home, &address)?;
                let n = Node::connect(&node.node)?;
                let bals = n.balances(&addr).await?;
                let v: Vec<_> = bals
                    .iter()
                    .map(|(d, a)| json!({"denom": d, "amount": a.to_string()}))
                    .collect();
                print(out, json!({"balances": v}), || {
                    if bals.is_empty() {
                        "balances: []".into()
                    } else {
                        bals.iter()
                            .map(|(d, a)| format!("{a}{d}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                });
            }
            QueryCmd::Bank(BankQuery::Total { node }) => {
                let n = Node::connect(&node.node)?;
                let v = n
                    .abci_query(
                        magnet_chain::query::PATH_TOTAL_SUPPLY,
                        &cosmrs::proto::cosmos::bank::v1beta1::QueryTotalSupplyRequest {
                            pagination: None,
                        },
                    )
                    .await?;
                let resp: cosmrs::proto::cosmos::bank::v1beta1::QueryTotalSupplyResponse =
                    magnet_chain::app::decode_msg(&v)?;
                let s: Vec<_> = resp
                    .supply
                    .iter()
                    .map(|c| json!({"denom": c.denom, "amount": c.amount}))
                    .collect();
                print(out, json!({"supply": s}), || {
                    resp.supply
                        .iter()
                        .map(|c| format!("{}{}", c.amount, c.denom))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            QueryCmd::Account { address, node } => {
                let addr = resolve_address(&home, &address)?;
                let n = Node::connect(&node.node)?;
                let acc = n
                    .account(&addr)
                    .await?
                    .ok_or_else(|| anyhow!("account {addr} not found"))?;
                let pk = acc
                    .pub_key
                    .as_ref()
                    .and_then(|a| <cosmrs::proto::cosmos::crypto::secp256k1::PubKey as prost::Message>::decode(a.value.as_slice()).ok())
                    .map(|k| hex::encode(k.key));
                print(
                    out,
                    json!({"address": acc.address, "account_number": acc.account_number.to_string(), "sequence": acc.sequence.to_string(), "pub_key": pk}),
                    || {
                        format!(
                            "address: {}\naccount_number: {}\nsequence: {}",
                            acc.address, acc.account_number, acc.sequence
                        )
                    },
                );
            }
            QueryCmd::Tx { hash, node } => {
                let n = Node::connect(&node.node)?;
                let inc = n.wait_for_tx(&hash, Duration::from_secs(0)).await?;
                print(out, json!(inc), || {
                    format!("height: {} code: {} {}", inc.height, inc.code, inc.log)
                });
            }
            QueryCmd::Store { key, prove, node } => {
                let n = Node::connect(&node.node)?;
                let r = n
                    .rpc
                    .abci_query(
                        Some(magnet_chain::query::PATH_STORE.into()),
                        key.as_bytes().to_vec(),
                        None,
                        prove,
                    )
                    .await?;
                if r.code.is_err() {
                    bail!("query failed: code {}: {}", r.code.value(), r.log);
                }
                let ops = r.proof.as_ref().map(|p| p.ops.iter().map(|o| json!({"type": o.field_type, "key": hex::encode(&o.key), "data": hex::encode(&o.data)})).collect::<Vec<_>>());
                // The state at height h is committed to by the app hash in header h+1.
                let verified = match &r.proof {
                    Some(p) => {
                        let next = r
                            .height
                            .value()
                            .checked_add(1)
                            .ok_or_else(|| anyhow!("height overflow"))?;
                        let mut tries = 0u32;
                        let app_hash = loop {
                            match n.app_hash_at(next).await {
                                Ok(h) => break hex::decode(h)?,
                                Err(e) if tries > 50 => return Err(e),
                                Err(_) => {
                                    tries = tries.saturating_add(1);
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        };
                        magnet_chain::query::verify_store_proof(
                            &app_hash,
                            key.as_bytes(),
                            &r.value,
                            p,
                        )?;
                        Some(hex::encode(app_hash))
                    }
                    None => None,
                };
                print(
                    out,
                    json!({"key": key, "value": hex::encode(&r.value), "height": r.height.value(), "proof": ops, "verified_against_app_hash": verified}),
                    || {
                        format!(
                            "height: {}\nvalue: {}\nproof: {}",
                            r.height.value(),
                            hex::encode(&r.value),
                            verified
                                .as_ref()
                                .map(|h| format!("verified against app hash {h}"))
                                .unwrap_or_else(|| "none (use --prove)".into())
                        )
                    },
                );
            }
        },
        Cmd::Export => {
            let v = home::export(&home).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Status { node } => {
            let n = Node::connect(&node.node)?;
            let st = tendermint_rpc::Client::status(&n.rpc).await?;
            let v = json!({
                "node_id": st.node_info.id.to_string(),
                "moniker": st.node_info.moniker.to_string(),
                "network": st.node_info.network.to_string(),
                "latest_block_height": st.sync_info.latest_block_height.value().to_string(),
                "latest_app_hash": hex::encode(st.sync_info.latest_app_hash.as_bytes()),
                "catching_up": st.sync_info.catching_up,
            });
            print_json(out, v);
        }
        Cmd::Bench(args) => bench::run(args, &home, out == Output::Json).await?,
        Cmd::BenchSettlement(args) => bench_settlement::run(args, out == Output::Json).await?,
    }
    Ok(())
}
