//! The operator/user CLI against a live 4-validator localnet: `magnetd tx bank send`,
//! `query bank balances`, `query account`, `query store --prove` and `status`, each
//! with `--output json`, sent to different nodes.

// Test code: plain arithmetic and indexing are fine here.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::needless_range_loop,
    clippy::unwrap_used
)]

use std::process::Command;
use std::time::Duration;

use magnet_e2e::{magnetd_bin, magnetd_json as magnetd, Localnet};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localnet_cli_commands_work_against_any_node() -> anyhow::Result<()> {
    let mut net = Localnet::setup(4, 2, 30)?;
    net.start_all()?;
    for i in 0..4 {
        net.wait_height(i, 2, Duration::from_secs(60)).await?;
    }
    let client_home = net.dir.path().join("client");
    let home = client_home.to_str().unwrap_or_default().to_string();
    let to = net.user(1)?.address;
    let before = net.node(0)?.balance(&to, "umag").await?;

    let mut last_height = 0u64;
    for (i, amount) in [(1usize, 1000u128), (2, 2000), (3, 3000)] {
        // The CLI reads the account sequence from this node's committed state: wait until the
        // node has the block of the previous send, or it still hands out the old sequence
        // while its mempool (which already checked the previous tx) expects the next one.
        net.wait_height(i, last_height, Duration::from_secs(30))
            .await?;
        let rpc = net.rpc_url(i);
        let r = magnetd(&[
            "tx",
            "bank",
            "send",
            "user0",
            &to,
            &format!("{amount}umag"),
            "--home",
            &home,
            "--node",
            &rpc,
            "-y",
        ])?;
        assert_eq!(r["code"], 0, "{r}");
        let h = r["height"]
            .as_u64()
            .or_else(|| r["height"].as_str().and_then(|h| h.parse().ok()))
            .unwrap_or(0);
        assert!(h > 0, "{r}");
        last_height = last_height.max(h);
    }
    let want = before + 6000;
    for i in 0..4 {
        // A tx committed through node 3 can be a block ahead of node 0: wait until each node has
        // the block of the last send before reading from it.
        net.wait_height(i, last_height, Duration::from_secs(30))
            .await?;
        let rpc = net.rpc_url(i);
        let v = magnetd(&["query", "bank", "balances", &to, "--node", &rpc])?;
        assert_eq!(v["balances"][0]["denom"], "umag");
        assert_eq!(v["balances"][0]["amount"], want.to_string(), "node{i}: {v}");
        let acc = magnetd(&["query", "account", "user0", "--home", &home, "--node", &rpc])?;
        assert_eq!(acc["sequence"], "3", "node{i}: {acc}");
        let st = magnetd(&["status", "--node", &rpc])?;
        assert_eq!(st["network"], "magnet-localnet-1");
    }

    // A balance read with a proof that the CLI verifies against the next header's app hash.
    let key = format!("bank/balance/{to}/umag");
    let v = magnetd(&["query", "store", &key, "--prove", "--node", &net.rpc_url(2)])?;
    assert_eq!(v["value"], hex::encode(want.to_be_bytes()));
    assert!(v["verified_against_app_hash"].is_string(), "{v}");

    // x-compute: register a worker through one node, read it back through another.
    let r = magnetd(&[
        "tx",
        "compute",
        "register-worker",
        "user1",
        "--tier",
        "gpu_compute",
        "--bond",
        "1000000000umag",
        "--cpu-cores",
        "16",
        "--gpu-model",
        "H100",
        "--home",
        &home,
        "--node",
        &net.rpc_url(1),
        "-y",
    ])?;
    assert_eq!(r["code"], 0, "{r}");
    let w = magnetd(&["query", "compute", "worker", &to, "--node", &net.rpc_url(3)])?;
    assert_eq!(w["tier"], "gpu_compute", "{w}");
    assert!(
        w["node_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("node-"),
        "{w}"
    );
    assert_eq!(w["hardware"]["gpu_model"], "H100");
    let p = magnetd(&["query", "compute", "params", "--node", &net.rpc_url(0)])?;
    assert_eq!(p["epoch_length_secs"], 600, "{p}");

    // Commit-reveal: a commitment through one node, read back (pending) through another.
    let nonce = "11".repeat(32);
    let r = magnetd(&[
        "tx",
        "compute",
        "commit",
        "user1",
        "cli-task-1",
        "--result",
        "score=0.9",
        "--nonce-hex",
        &nonce,
        "--home",
        &home,
        "--node",
        &net.rpc_url(2),
        "-y",
    ])?;
    assert_eq!(r["code"], 0, "{r}");
    let t = magnetd(&[
        "query",
        "compute",
        "task",
        "cli-task-1",
        "--node",
        &net.rpc_url(0),
    ])?;
    assert_eq!(t["commit_count"], 1, "{t}");
    let cm = magnetd(&[
        "query",
        "compute",
        "commitment",
        "cli-task-1",
        "user1",
        "--home",
        &home,
        "--node",
        &net.rpc_url(1),
    ])?;
    assert_eq!(cm["outcome"], "pending", "{cm}");
    let e = magnetd(&["query", "compute", "epoch", "--node", &net.rpc_url(3)])?;
    assert_eq!(e["index"], 0, "{e}");

    // A rejected send exits non-zero and reports the stable code.
    let out = Command::new(magnetd_bin())
        .args([
            "tx",
            "bank",
            "send",
            "user0",
            &to,
            "340282366920938463463374607431768211455umag",
            "--home",
            &home,
            "--node",
            &net.rpc_url(0),
            "-y",
            "-o",
            "json",
        ])
        .output()?;
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["code"], 5, "{v}");
    assert_eq!(v["codespace"], "sdk");
    Ok(())
}
