//! x-compute end to end on real processes: a 4-validator localnet with 20-second epochs.
//! Two workers register through different nodes, submit training contributions, commit
//! and reveal a result through a full epoch, and the epoch's rewards land in their
//! balances identically on every validator.

#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use magnet_e2e::{magnetd_json as magnetd, Localnet};
use serde_json::Value;

const EPOCH: &str = r#"{"epoch_length_secs":20,"commit_window_secs":6,"reveal_window_secs":6}"#;

fn amount(v: &Value) -> u128 {
    v["balances"]
        .as_array()
        .and_then(|b| b.iter().find(|c| c["denom"] == "umag"))
        .and_then(|c| c["amount"].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localnet_two_workers_commit_reveal_and_earn_rewards_on_every_validator(
) -> anyhow::Result<()> {
    let mut net = Localnet::setup_with(4, 2, 50, &[("LOCALNET_COMPUTE_PARAMS", EPOCH)])?;
    net.start_all()?;
    for i in 0..4 {
        net.wait_height(i, 2, Duration::from_secs(60)).await?;
    }
    let home = net.dir.path().join("client").to_str().unwrap().to_string();
    let tx = |node: usize, args: &[&str]| -> anyhow::Result<Value> {
        let rpc = net.rpc_url(node);
        let mut all = vec!["tx", "compute"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--home", &home, "--node", &rpc, "-y"]);
        let r = magnetd(&all)?;
        anyhow::ensure!(r["code"] == 0, "{args:?}: {r}");
        Ok(r)
    };
    let p = magnetd(&["query", "compute", "params", "--node", &net.rpc_url(0)])?;
    assert_eq!(
        p["epoch_length_secs"], 20,
        "genesis set-params reached every node: {p}"
    );

    let workers = [
        ("user0", "gpu_compute", "1000000000umag"),
        ("user1", "cpu_only", "100000000umag"),
    ];
    let mut addrs = Vec::new();
    for (i, (key, tier, bond)) in workers.iter().enumerate() {
        tx(i, &["register-worker", key, "--tier", tier, "--bond", bond])?;
        addrs.push(net.user(i)?.address);
    }
    let nonce = "42".repeat(32);
    let task = "localnet-eval-1";
    // Start right after an epoch boundary so both contributions land in one epoch.
    let epoch_index = || -> anyhow::Result<u64> {
        Ok(
            magnetd(&["query", "compute", "epoch", "--node", &net.rpc_url(0)])?["index"]
                .as_u64()
                .unwrap_or(0),
        )
    };
    let start = epoch_index()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while epoch_index()? == start {
        anyhow::ensure!(Instant::now() < deadline, "epoch {start} never ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, (key, _, _)) in workers.iter().enumerate() {
        let steps = (100 * (i + 1)).to_string();
        tx(
            i + 2,
            &[
                "submit-contribution",
                key,
                "--steps",
                &steps,
                "--model-params",
                "1000000",
                "--checkpoint-hash",
                &"ab".repeat(32),
            ],
        )?;
        let result = format!("val_loss=3.{i}");
        tx(
            i + 1,
            &[
                "commit",
                key,
                task,
                "--result",
                &result,
                "--nonce-hex",
                &nonce,
            ],
        )?;
    }
    let t = magnetd(&["query", "compute", "task", task, "--node", &net.rpc_url(3)])?;
    let epoch0 = epoch_index()?;
    assert_eq!(
        epoch0,
        start + 1,
        "contributions and commits took less than an epoch"
    );
    let before: Vec<u128> = {
        let mut v = Vec::new();
        for a in &addrs {
            v.push(amount(&magnetd(&[
                "query",
                "bank",
                "balances",
                a,
                "--node",
                &net.rpc_url(0),
            ])?));
        }
        v
    };

    // Reveal once the commit window closed (block time, read from the chain).
    let commit_end: i64 = t["commit_window_end"].as_str().unwrap().parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut revealed = [false, false];
    while revealed.iter().any(|r| !r) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not reveal after {commit_end}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        for (i, (key, _, _)) in workers.iter().enumerate() {
            if revealed[i] {
                continue;
            }
            let result = format!("val_loss=3.{i}");
            if tx(
                3 - i,
                &[
                    "reveal",
                    key,
                    task,
                    "--result",
                    &result,
                    "--nonce-hex",
                    &nonce,
                ],
            )
            .is_ok()
            {
                revealed[i] = true;
            }
        }
    }
    for (i, a) in addrs.iter().enumerate() {
        let c = magnetd(&[
            "query",
            "compute",
            "commitment",
            task,
            a,
            "--node",
            &net.rpc_url(i),
        ])?;
        assert_eq!(c["outcome"], "revealed", "{c}");
    }

    // The epoch the contributions went into settles; fetch its record from every node.
    let deadline = Instant::now() + Duration::from_secs(90);
    let settlement = loop {
        anyhow::ensure!(Instant::now() < deadline, "epoch {epoch0} did not settle");
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(s) = magnetd(&[
            "query",
            "compute",
            "settlement",
            &epoch0.to_string(),
            "--node",
            &net.rpc_url(1),
        ]) {
            break s;
        }
    };
    assert_eq!(settlement["contributors"], 2, "{settlement}");
    // Payout is lazy: each worker's reward is owed until it claims (or heartbeats).
    let mut owed = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let r = magnetd(&[
            "query",
            "compute",
            "reward",
            &epoch0.to_string(),
            a,
            "--node",
            &net.rpc_url(i),
        ])?;
        assert_eq!(r["claimed"], false, "{r}");
        owed.push(r["reward"].as_str().unwrap().parse::<u128>()?);
    }
    let (r0, r1) = (owed[0], owed[1]);
    assert!(r0 > 0 && r1 > 0, "{owed:?}");
    // gpu_compute (1.0x, 100 steps) vs cpu_only (0.3x, 200 steps): 100 : 60.
    assert!(r0 > r1, "T·C ordering: {r0} vs {r1}");
    for (i, (key, _, _)) in workers.iter().enumerate() {
        tx(i + 2, &["claim-rewards", key])?;
    }
    let h = net.height(0).await?;
    for i in 0..4 {
        net.wait_height(i, h, Duration::from_secs(30)).await?;
        let s = magnetd(&[
            "query",
            "compute",
            "settlement",
            &epoch0.to_string(),
            "--node",
            &net.rpc_url(i),
        ])?;
        assert_eq!(s["open"], false, "node{i}: closed after both claims: {s}");
        assert_eq!(
            s["pool"], settlement["pool"],
            "node{i} recorded another settlement"
        );
        for (j, a) in addrs.iter().enumerate() {
            let bal = amount(&magnetd(&[
                "query",
                "bank",
                "balances",
                a,
                "--node",
                &net.rpc_url(i),
            ])?);
            // Since `before`: the reveal and claim fees, and the reward.
            let fee = magnet_chain::client::GasSettings::default().fee;
            assert_eq!(
                bal,
                before[j] + [r0, r1][j] - 2 * fee,
                "node{i}, worker {j}"
            );
        }
    }
    net.assert_app_hashes_agree(h).await?;
    Ok(())
}
