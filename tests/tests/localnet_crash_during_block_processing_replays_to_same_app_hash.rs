//! Crash recovery with real processes: magnetd aborts (1) after FinalizeBlock computed
//! the app hash but before Commit persisted it, and (2) halfway through executing a
//! block's transactions. After a restart, CometBFT's handshake replays the block and
//! the node's app hash matches the rest of the network.

// Test code: plain arithmetic and indexing are fine here.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::needless_range_loop,
    clippy::unwrap_used
)]

use std::time::Duration;

use magnet_e2e::{Localnet, TransferLoad};

async fn crash_and_recover(
    net: &mut Localnet,
    load: &mut TransferLoad,
    victim: usize,
    fault: &str,
) -> anyhow::Result<()> {
    let nodes: Vec<_> = (0..net.n)
        .map(|i| net.node(i))
        .collect::<anyhow::Result<_>>()?;
    let h = net.height(0).await?;
    net.kill_node(victim);
    net.start_node_with(victim, &[("MAGNETD_FAULT", format!("{fault}:{}", h + 3))])?;
    // Keep blocks non-empty until the injected fault fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let sender = (victim + 1) % net.n;
    while !net.magnetd_exited(victim) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "fault {fault} never fired on node{victim}"
        );
        load.send(sender, &nodes[sender], 3).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    net.kill_node(victim); // cometbft of the crashed node
    load.wait_all_included(&nodes[sender]).await?;
    net.start_node(victim)?;
    let target = net.height(sender).await?;
    net.wait_height(victim, target, Duration::from_secs(120))
        .await?;
    load.check_balances(&nodes[victim]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localnet_crash_during_block_processing_replays_to_same_app_hash() -> anyhow::Result<()> {
    let mut net = Localnet::setup(4, 4, 40)?;
    net.start_all()?;
    for i in 0..4 {
        net.wait_height(i, 2, Duration::from_secs(60)).await?;
    }
    // Senders 0..3 stay pinned to nodes 0..3; node 3 and node 2 crash in turn, their
    // senders' txs go to the next node.
    let mut load = TransferLoad::new(&net, 0..4, 0..4).await?;
    crash_and_recover(&mut net, &mut load, 3, "before-commit").await?;
    crash_and_recover(&mut net, &mut load, 2, "mid-finalize").await?;
    let top = net.height(0).await?;
    for i in 0..4 {
        net.wait_height(i, top, Duration::from_secs(60)).await?;
        load.check_balances(&net.node(i)?).await?;
    }
    net.assert_app_hashes_agree(top).await?;
    Ok(())
}
