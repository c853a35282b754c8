//! Four real validators (CometBFT + magnetd each): 200 signed bank sends from several
//! accounts, one validator `kill -9`ed mid-load and restarted; it catches up, and every
//! node ends with the same balances and the same app hash at every height.

// Test code: plain arithmetic and indexing are fine here.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::needless_range_loop,
    clippy::unwrap_used
)]

use std::time::Duration;

use magnet_e2e::{Localnet, TransferLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localnet_four_validators_agree_on_200_sends_and_recover_from_kill9() -> anyhow::Result<()>
{
    let mut net = Localnet::setup(4, 8, 20)?;
    net.start_all()?;
    for i in 0..4 {
        net.wait_height(i, 2, Duration::from_secs(60)).await?;
    }
    let nodes: Vec<_> = (0..4).map(|i| net.node(i)).collect::<anyhow::Result<_>>()?;
    let mut load = TransferLoad::new(&net, 0..4, 4..8).await?;

    // Phase 1: 100 sends, each sender pinned to its own node (node3 included).
    for s in 0..4 {
        load.send(s, &nodes[s], 25).await?;
    }
    load.wait_all_included(&nodes[0]).await?;

    // kill -9 validator 3 (both processes) and keep sending through the other three.
    net.kill_node(3);
    load.resync(3, &nodes[0]).await?;
    for s in 0..4 {
        load.send(s, &nodes[s % 3], 25).await?;
    }
    let last_tx_height = load.wait_all_included(&nodes[0]).await?;
    assert_eq!(load.hashes.len(), 200);
    for i in 0..3 {
        load.check_balances(&nodes[i]).await?;
    }

    // Restart it: it must replay/catch up and agree.
    net.start_node(3)?;
    let target = net.height(0).await?;
    net.wait_height(3, target.max(last_tx_height), Duration::from_secs(120))
        .await?;
    for node in &nodes {
        load.check_balances(node).await?;
    }
    net.assert_app_hashes_agree(target).await?;

    // A stopped node exports its committed state: same app hash as it reported, supply
    // unchanged by 200 transfers (fees move to the fee collector, nothing is minted).
    let (h3, hash3) = net.abci_info(3).await?;
    net.kill_node(3);
    let out = std::process::Command::new(magnet_e2e::magnetd_bin())
        .args(["export", "--home"])
        .arg(net.home(3))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let exported_height = v["height"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        exported_height >= h3,
        "export height {exported_height} < reported {h3}"
    );
    if exported_height == h3 {
        assert_eq!(v["app_hash"].as_str(), Some(hash3.as_str()));
    }
    let supply = v["supply"][0]["amount"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        supply,
        (12u128 * 1_000_000_000_000).to_string(),
        "4 validators + 8 users funded at genesis"
    );
    Ok(())
}
