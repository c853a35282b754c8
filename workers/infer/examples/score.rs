//! Mean next-token loss of a text under a model, to compare with the trainer's
//! `magnet-worker score-text` (burn forward) on the same export:
//! `cargo run --release -p magnet-infer --example score -- <model dir|gguf> "<text>"`.
#![allow(clippy::arithmetic_side_effects)]

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: score <model> <text>")?;
    let text = args.next().context("usage: score <model> <text>")?;
    let model = magnet_infer::Model::load(&path)?;
    let ids = model.encode(&text)?;
    anyhow::ensure!(ids.len() >= 2, "text must encode to at least 2 tokens");
    let logits = model.forward_logits(&ids)?;
    let mut nll = 0f64;
    for (l, &next) in logits.iter().zip(&ids[1..]) {
        let max = l.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let z: f64 = l.iter().map(|&v| f64::from(v - max).exp()).sum();
        nll += z.ln() - f64::from(l[next as usize] - max);
    }
    println!(
        "tokens {} mean next-token loss {:.6}",
        ids.len(),
        nll / (ids.len() - 1) as f64
    );
    Ok(())
}
