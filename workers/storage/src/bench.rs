//! Benchmarks (`magnet-worker bench-storage`, `magnet-worker bench-p2p`). Printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;

use crate::erasure::{self, DATA_SHARDS, PARITY_SHARDS};

/// Options of `bench-storage`.
#[derive(Args, Debug, Clone)]
pub struct StorageBenchArgs {
    /// Shard sizes in KiB.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024,4096,16384")]
    pub shard_kib: Vec<usize>,
    /// Minimum measuring time per figure, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub secs: f64,
}

/// Runs `f` until `secs` have passed (at least 3 times); returns seconds per call.
fn time_per_call(secs: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0u32;
    while n < 3 || start.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(n)
}

/// Erasure coding throughput on one core, in MB/s of object data (4 × shard size), next to memcpy.
pub fn storage(args: &StorageBenchArgs) -> anyhow::Result<()> {
    println!("erasure coding RS({DATA_SHARDS}+{PARITY_SHARDS}), one thread, MB/s of object data (MB = 1e6 B)");
    println!(
        "{:>10} {:>12} {:>14} {:>16} {:>14} {:>10}",
        "shard", "encode", "decode-2-lost", "decode+sha256", "memcpy", "enc/memcpy"
    );
    for &kib in &args.shard_kib {
        let shard = kib * 1024;
        let object: Vec<u8> = (0..shard * DATA_SHARDS)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let data: Vec<&[u8]> = object.chunks(shard).collect();
        let mb = object.len() as f64 / 1e6;
        let mut parity = Vec::new();
        let enc = time_per_call(args.secs, || {
            parity =
                reed_solomon_simd::encode(DATA_SHARDS, PARITY_SHARDS, &data).unwrap_or_default();
        });
        anyhow::ensure!(parity.len() == PARITY_SHARDS, "encode failed");
        // Lose data shards 0 and 1: the worst case, both rebuilt from parity.
        let dec = time_per_call(args.secs, || {
            let originals = [(2usize, data[2]), (3, data[3])];
            let recovery = [(0usize, parity[0].as_slice()), (1, parity[1].as_slice())];
            let restored =
                reed_solomon_simd::decode(DATA_SHARDS, PARITY_SHARDS, originals, recovery)
                    .unwrap_or_default();
            std::hint::black_box(restored);
        });
        let (manifest, shards) = erasure::encode(&object)?;
        let avail: Vec<Option<Vec<u8>>> = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i >= 2).then_some(s))
            .collect();
        let full = time_per_call(args.secs, || {
            std::hint::black_box(
                erasure::decode(&manifest, &avail)
                    .map(|v| v.len())
                    .unwrap_or(0),
            );
        });
        let mut dst = vec![0u8; object.len()];
        let copy = time_per_call(args.secs, || {
            dst.copy_from_slice(&object);
            std::hint::black_box(&dst);
        });
        println!(
            "{:>7}KiB {:>12.0} {:>14.0} {:>16.0} {:>14.0} {:>10.3}",
            kib,
            mb / enc,
            mb / dec,
            mb / full,
            mb / copy,
            copy / enc
        );
    }
    println!("decode+sha256 = the full read path: checksum 4 shards, rebuild 2, checksum the 6 and the object.");
    Ok(())
}

/// Options of `bench-p2p`.
#[derive(Args, Debug, Clone)]
pub struct P2pBenchArgs {
    /// Seconds of signed round trips.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Concurrent requests in the second round-trip figure.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Checkpoint size, MB (10^6 bytes).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_mb: usize,
    /// Address to bind the in-process server on.
    #[arg(long, default_value = "127.0.0.75:0")]
    pub listen: String,
}

/// Signed-RPC round trips per second and a checkpoint over TLS on loopback (server and client in
/// this process, sharing the machine's cores).
pub async fn p2p(args: &P2pBenchArgs) -> anyhow::Result<()> {
    use magnet_p2p::auth::AuthMode;
    use magnet_p2p::node::{serve_p2p, NodeIdentity};
    use magnet_p2p::proto::RoundAnnouncement;
    use magnet_p2p::service::{fetch_gradient, methods, push_gradient};

    let dirs = (tempfile_dir("server")?, tempfile_dir("client")?);
    let window = magnet_p2p::auth::DEFAULT_WINDOW;
    for (mode_name, mode) in [
        ("wallet (secp256k1)", AuthMode::Wallet),
        (
            "cluster (HMAC-SHA256)",
            AuthMode::Cluster(std::sync::Arc::new(b"bench-secret".to_vec())),
        ),
    ] {
        let server = NodeIdentity::load(&dirs.0, mode.clone(), window)?;
        let client_id = NodeIdentity::load(&dirs.1, mode, window)?;
        let (handle, _svc) = serve_p2p(&server, &args.listen, "bench", 256 * 1024 * 1024).await?;
        let addr = handle.addr.to_string();
        let client = client_id.p2p_client(&addr).await?;
        let leader = client_id.node_id.clone();
        let msg = move |round| RoundAnnouncement {
            round,
            leader: leader.clone(),
            base_checkpoint: "00".repeat(32),
            inner_steps: 500,
            deadline: 0,
        };
        // Sequential: one request in flight.
        let mut c = client.clone();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < args.secs {
            let req = client_id.signer.request(methods::ANNOUNCE_ROUND, msg(n))?;
            c.announce_round(req).await.context("announce")?;
            n += 1;
        }
        let seq = n as f64 / start.elapsed().as_secs_f64();
        // Concurrent on one HTTP/2 connection.
        let start = Instant::now();
        let deadline = Duration::from_secs_f64(args.secs);
        let mut tasks = Vec::new();
        for t in 0..args.concurrency {
            let mut c = client.clone();
            let signer = client_id.signer.clone();
            let msg = msg.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < deadline {
                    let req =
                        signer.request(methods::ANNOUNCE_ROUND, msg(t as u64 * 1_000_000 + n))?;
                    c.announce_round(req).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        let conc = total as f64 / start.elapsed().as_secs_f64();
        println!(
            "signed RPC round trips/s, {mode_name}: {seq:.0} sequential, {conc:.0} with {} in flight (TLS 1.3, loopback)",
            args.concurrency
        );
        handle.shutdown().await;
    }

    // Checkpoint transfer (wallet mode; the signature covers the SHA-256 of the whole payload).
    let server = NodeIdentity::load(&dirs.0, AuthMode::Wallet, window)?;
    let client_id = NodeIdentity::load(&dirs.1, AuthMode::Wallet, window)?;
    let (handle, _svc) = serve_p2p(&server, &args.listen, "bench", 1 << 30).await?;
    let mut client = client_id.p2p_client(&handle.addr.to_string()).await?;
    let len = args.checkpoint_mb * 1_000_000;
    let payload: Bytes = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect::<Vec<u8>>()
        .into();
    let start = Instant::now();
    push_gradient(&mut client, &client_id.signer, 1, payload.clone())
        .await
        .context("push")?;
    let push = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let back = fetch_gradient(&mut client, &client_id.signer, 1, &client_id.node_id)
        .await
        .context("fetch")?;
    let fetch = start.elapsed().as_secs_f64();
    anyhow::ensure!(back == payload, "checkpoint came back different");
    let mb = len as f64 / 1e6;
    println!(
        "{} MB checkpoint over TLS 1.3 loopback: push {:.0} MB/s ({push:.2} s, incl. SHA-256 both sides), fetch {:.0} MB/s ({fetch:.2} s)",
        args.checkpoint_mb,
        mb / push,
        mb / fetch
    );
    handle.shutdown().await;
    let raw = raw_tls_mb_per_s(&dirs.0, &args.listen, &payload).await?;
    println!("same payload over a bare TLS 1.3 stream (tokio-rustls, no gRPC): {raw:.0} MB/s");
    let _ = std::fs::remove_dir_all(&dirs.0);
    let _ = std::fs::remove_dir_all(&dirs.1);
    Ok(())
}

fn tempfile_dir(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("magnet-bench-p2p-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Baseline: the payload written through one TLS 1.3 connection with the same configs, no gRPC.
async fn raw_tls_mb_per_s(
    dir: &std::path::Path,
    listen: &str,
    payload: &[u8],
) -> anyhow::Result<f64> {
    use magnet_p2p::tls::{PeerTrust, PinStore, TlsIdentity};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let identity = TlsIdentity::self_signed(dir, &[])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let k = tls.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        anyhow::Ok(n)
    });
    let trust = PeerTrust::Tofu(std::sync::Arc::new(PinStore::in_memory()));
    let connector = tokio_rustls::TlsConnector::from(trust.client_config(&addr.to_string())?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    let start = Instant::now();
    tls.write_all(payload).await?;
    tls.shutdown().await?;
    let n = server.await??;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        n == payload.len(),
        "received {n} of {} bytes",
        payload.len()
    );
    Ok(payload.len() as f64 / 1e6 / secs)
}
