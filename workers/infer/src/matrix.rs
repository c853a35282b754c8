//! Quantized matrices (ternary BitLinear weights, int8 LM head) and per-token int8 activations.

use rayon::prelude::*;

use crate::kernels::{self, Isa};

/// BitLinear weight scale: `max(mean|W|, 1e-5)` (summed in f64 so the mean is order-independent).
pub fn absmean_scale(w: &[f32]) -> f32 {
    let sum: f64 = w.iter().map(|v| f64::from(v.abs())).sum();
    let mean = if w.is_empty() {
        0.0
    } else {
        (sum / w.len() as f64) as f32
    };
    mean.max(1e-5)
}

/// `clamp(round(w / s), -1, 1)`.
pub fn ternarize(w: f32, s: f32) -> i8 {
    (w / s).round().clamp(-1.0, 1.0) as i8
}

/// `f32::round` (half away from zero) as an integer, without a libm call; exact for
/// |v| < 2^31 because `v - trunc(v)` is exact.
#[inline]
pub fn round_half_away(v: f32) -> i32 {
    let i = v as i32;
    let f = v - i as f32;
    i + i32::from(f >= 0.5) - i32::from(f <= -0.5)
}

/// Execution context of the matmuls: worker threads and the SIMD path.
pub struct Exec {
    pool: rayon::ThreadPool,
    threads: usize,
    /// Kernel path.
    pub isa: Isa,
}

impl Exec {
    /// `threads == 0` means all cores.
    pub fn new(threads: usize, isa: Isa) -> anyhow::Result<Exec> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("infer-{i}"))
            .build()?;
        Ok(Exec { pool, threads, isa })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Rows per parallel chunk: one chunk per thread for a single token (decode, least
    /// overhead), a few per thread for prefill (load balance).
    fn chunk_rows(&self, rows: usize, n_tok: usize) -> usize {
        let parts = if n_tok == 1 {
            self.threads
        } else {
            self.threads * 4
        };
        rows.div_ceil(parts.max(1)).max(1)
    }
}

/// Int8 activations of `n_tok` tokens, quantized per token: `xq = clamp(round(x·127/g))`,
/// `g = max(max|x|, 1e-5)`.
pub struct QuantActs {
    /// Tokens.
    pub n_tok: usize,
    /// Padded row length.
    pub k_pad: usize,
    /// Rows in kernel order ([`kernels::permute_acts`] for ternary, natural for int8).
    pub data: Vec<i8>,
    /// `Σ xq` per token.
    pub sums: Vec<i32>,
    /// `g` per token.
    pub scale: Vec<f32>,
}

impl QuantActs {
    fn quantize(x: &[f32], n_tok: usize, k: usize, k_pad: usize, permute: bool) -> QuantActs {
        let mut data = vec![0i8; n_tok * k_pad];
        let mut sums = Vec::with_capacity(n_tok);
        let mut scale = Vec::with_capacity(n_tok);
        let mut row = vec![0i8; k];
        for (t, xt) in x.chunks_exact(k).take(n_tok).enumerate() {
            let g = xt.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
            let mut s = 0i32;
            for (q, &v) in row.iter_mut().zip(xt) {
                *q = round_half_away(v * 127.0 / g).clamp(-128, 127) as i8;
                s += i32::from(*q);
            }
            let dst = &mut data[t * k_pad..(t + 1) * k_pad];
            if permute {
                kernels::permute_acts(&row, dst);
            } else {
                dst[..k].copy_from_slice(&row);
            }
            sums.push(s);
            scale.push(g);
        }
        QuantActs {
            n_tok,
            k_pad,
            data,
            sums,
            scale,
        }
    }

    /// Quantizes `n_tok` rows of `k` values for a ternary matmul.
    pub fn for_ternary(x: &[f32], n_tok: usize, k: usize) -> QuantActs {
        QuantActs::quantize(x, n_tok, k, kernels::padded_ternary_len(k), true)
    }

    /// Quantizes `n_tok` rows of `k` values for an int8 matmul.
    pub fn for_int8(x: &[f32], n_tok: usize, k: usize) -> QuantActs {
        QuantActs::quantize(x, n_tok, k, kernels::padded_i8_len(k), false)
    }
}

/// Transposes `raw[r * n_tok + t]` into `out[t * rows + r]` through `f(r, t, raw)`.
fn scatter(
    raw: &[i32],
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
    f: impl Fn(usize, usize, i32) -> f32,
) {
    // Blocked transpose: 64 rows at a time keep their `raw` cache lines in L1 across tokens.
    const TILE: usize = 64;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for t in 0..n_tok {
            for r in r0..r1 {
                out[t * rows + r] = f(r, t, raw[r * n_tok + t]);
            }
        }
    }
}

/// A ternary weight matrix `[rows, cols]` packed at 2 bits, with one f32 scale per row (rows of
/// fused projections keep their own tensor's scale).
#[derive(Clone)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    k_pad: usize,
    codes: Vec<u8>,
    row_scale: Vec<f32>,
}

impl TernaryMatrix {
    /// Quantizes f32 latent weights `[rows, cols]` with the BitLinear absmean rule.
    pub fn from_latent(w: &[f32], rows: usize, cols: usize) -> anyhow::Result<TernaryMatrix> {
        anyhow::ensure!(
            w.len() == rows * cols,
            "latent weight has {} values, expected {rows}x{cols}",
            w.len()
        );
        let s = absmean_scale(w);
        let mut m = TernaryMatrix::zeros(rows, cols, s);
        let mut row = vec![0i8; cols];
        for r in 0..rows {
            for (q, &v) in row.iter_mut().zip(&w[r * cols..(r + 1) * cols]) {
                *q = ternarize(v, s);
            }
            m.set_row(r, &row);
        }
        Ok(m)
    }

    /// All-zero weights with scale `s`.
    pub fn zeros(rows: usize, cols: usize, s: f32) -> TernaryMatrix {
        let k_pad = kernels::padded_ternary_len(cols);
        TernaryMatrix {
            rows,
            cols,
            k_pad,
            codes: vec![0x55; rows * k_pad / 4],
            row_scale: vec![s; rows],
        }
    }

    /// Sets row `r` from ternary values.
    pub fn set_row(&mut self, r: usize, values: &[i8]) {
        let rb = self.k_pad / 4;
        let mut natural = vec![0u8; rb];
        kernels::pack_ternary_row(values, &mut natural);
        for (b, blk) in natural.chunks_exact(kernels::BLOCK_BYTES).enumerate() {
            let off = kernels::tiled_offset(self.rows, rb, r, b);
            self.codes[off..off + kernels::BLOCK_BYTES].copy_from_slice(blk);
        }
    }

    /// All packed bytes (tiled layout; for generators writing random codes directly).
    pub fn codes_mut(&mut self) -> &mut [u8] {
        &mut self.codes
    }

    /// Sets the scale of row `r`.
    pub fn set_row_scale(&mut self, r: usize, s: f32) {
        self.row_scale[r] = s;
    }

    /// Ternary values of row `r`.
    pub fn row_values(&self, r: usize) -> Vec<i8> {
        let rb = self.k_pad / 4;
        let mut natural = Vec::with_capacity(rb);
        for b in 0..self.k_pad / kernels::BLOCK {
            let off = kernels::tiled_offset(self.rows, rb, r, b);
            natural.extend_from_slice(&self.codes[off..off + kernels::BLOCK_BYTES]);
        }
        kernels::unpack_ternary_row(&natural, self.cols)
    }

    /// Stacks matrices with the same column count (fused q/k/v, gate/up).
    pub fn concat(parts: Vec<TernaryMatrix>) -> anyhow::Result<TernaryMatrix> {
        let cols = parts.first().map_or(0, |p| p.cols);
        anyhow::ensure!(
            parts.iter().all(|p| p.cols == cols),
            "fused matrices need equal column counts"
        );
        let mut out = TernaryMatrix {
            rows: 0,
            cols,
            k_pad: kernels::padded_ternary_len(cols),
            codes: vec![],
            row_scale: vec![],
        };
        for p in parts {
            out.rows += p.rows;
            out.codes.extend_from_slice(&p.codes);
            out.row_scale.extend_from_slice(&p.row_scale);
        }
        Ok(out)
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes streamed per matmul (packed codes + scales).
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.row_scale.len()
    }

    /// `out[t * rows + r] = (Σ_k w[r][k]·xq[t][k]) · s_r · g_t / 127` (exact integer dot).
    pub fn matmul(&self, exec: &Exec, a: &QuantActs, out: &mut [f32]) {
        let n = a.n_tok;
        assert_eq!(
            a.k_pad, self.k_pad,
            "activation width does not match the matrix"
        );
        let mut raw = vec![0i32; self.rows * n];
        let chunk = exec
            .chunk_rows(self.rows, n)
            .next_multiple_of(kernels::ROW_GROUP);
        let rb = self.k_pad / 4;
        let isa = exec.isa;
        exec.install(|| {
            raw.par_chunks_mut(chunk * n)
                .enumerate()
                .for_each(|(ci, o)| {
                    let r0 = ci * chunk;
                    let nr = o.len() / n;
                    kernels::ternary_gemm(
                        isa,
                        &self.codes[r0 * rb..(r0 + nr) * rb],
                        nr,
                        self.k_pad,
                        &a.data,
                        n,
                        o,
                    );
                })
        });
        scatter(&raw, self.rows, n, out, |r, t, v| {
            (v - a.sums[t]) as f32 * self.row_scale[r] * a.scale[t] / 127.0
        });
    }
}

/// An int8 matrix with one f32 scale per row (`w ≈ q · scale`, `scale = max|row| / 127`).
#[derive(Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    k_pad: usize,
    data: Vec<i8>,
    scale: Vec<f32>,
    row_sums: Vec<i32>,
}

impl Int8Matrix {
    /// Quantizes f32 rows.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> anyhow::Result<Int8Matrix> {
        anyhow::ensure!(
            w.len() == rows * cols,
            "matrix has {} values, expected {rows}x{cols}",
            w.len()
        );
        let mut m = Int8Matrix::zeros(rows, cols);
        let mut q = vec![0i8; cols];
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            for (d, &v) in q.iter_mut().zip(row) {
                *d = (v / s).round().clamp(-127.0, 127.0) as i8;
            }
            m.set_row(r, &q, s);
        }
        Ok(m)
    }

    /// All-zero rows.
    pub fn zeros(rows: usize, cols: usize) -> Int8Matrix {
        let k_pad = kernels::padded_i8_len(cols);
        Int8Matrix {
            rows,
            cols,
            k_pad,
            data: vec![0; rows * k_pad],
            scale: vec![1.0; rows],
            row_sums: vec![0; rows],
        }
    }

    /// Sets row `r` (values clamped to [-127, 127]) and its scale.
    pub fn set_row(&mut self, r: usize, q: &[i8], scale: f32) {
        let dst = &mut self.data[r * self.k_pad..r * self.k_pad + self.cols];
        let mut sum = 0i32;
        for (d, &v) in dst.iter_mut().zip(q) {
            *d = v.max(-127);
            sum += i32::from(*d);
        }
        self.row_sums[r] = sum;
        self.scale[r] = scale;
    }

    /// Dequantized row `r`.
    pub fn row(&self, r: usize) -> Vec<f32> {
        let s = self.scale[r];
        self.data[r * self.k_pad..r * self.k_pad + self.cols]
            .iter()
            .map(|&v| f32::from(v) * s)
            .collect()
    }

    /// Bytes streamed per matmul.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scale.len()
    }

    /// `out[t * rows + r] = (Σ_k q[r][k]·xq[t][k]) · scale_r · g_t / 127`.
    pub fn matmul(&self, exec: &Exec, a: &QuantActs, out: &mut [f32]) {
        let n = a.n_tok;
        assert_eq!(
            a.k_pad, self.k_pad,
            "activation width does not match the matrix"
        );
        let mut raw = vec![0i32; self.rows * n];
        let chunk = exec.chunk_rows(self.rows, n);
        let isa = exec.isa;
        let kp = self.k_pad;
        exec.install(|| {
            raw.par_chunks_mut(chunk * n)
                .enumerate()
                .for_each(|(ci, o)| {
                    let r0 = ci * chunk;
                    let nr = o.len() / n;
                    kernels::i8_gemm(
                        isa,
                        &self.data[r0 * kp..(r0 + nr) * kp],
                        &self.row_sums[r0..r0 + nr],
                        kp,
                        &a.data,
                        n,
                        o,
                    );
                })
        });
        scatter(&raw, self.rows, n, out, |r, t, v| {
            v as f32 * self.scale[r] * a.scale[t] / 127.0
        });
    }
}

/// A full-precision table of rows: the embedding, and the LM head (f32 or int8 per-row).
#[derive(Clone)]
pub enum RowTable {
    /// f32 rows.
    F32 {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// Int8 rows with per-row scales.
    Int8(Int8Matrix),
}

impl RowTable {
    /// Rows (vocabulary size).
    pub fn rows(&self) -> usize {
        match self {
            RowTable::F32 { rows, .. } => *rows,
            RowTable::Int8(m) => m.rows,
        }
    }

    /// Columns (hidden size).
    pub fn cols(&self) -> usize {
        match self {
            RowTable::F32 { cols, .. } => *cols,
            RowTable::Int8(m) => m.cols,
        }
    }

    /// Row `r` as f32 (`None` when out of range).
    pub fn row(&self, r: usize) -> Option<Vec<f32>> {
        if r >= self.rows() {
            return None;
        }
        Some(match self {
            RowTable::F32 { cols, data, .. } => data[r * cols..(r + 1) * cols].to_vec(),
            RowTable::Int8(m) => m.row(r),
        })
    }

    /// Bytes read when used as the LM head for one token.
    pub fn bytes(&self) -> usize {
        match self {
            RowTable::F32 { data, .. } => 4 * data.len(),
            RowTable::Int8(m) => m.bytes(),
        }
    }

    /// Logits `[n_tok, rows]` of hidden states `x` `[n_tok, cols]`. The f32 table is a plain
    /// sequential dot per output (same bits for any thread count); the int8 table quantizes `x`
    /// per token to int8 and uses the integer kernel.
    pub fn logits(&self, exec: &Exec, x: &[f32], n_tok: usize) -> Vec<f32> {
        let rows = self.rows();
        let cols = self.cols();
        let mut out = vec![0f32; n_tok * rows];
        match self {
            RowTable::F32 { data, .. } => {
                let mut raw = vec![0f32; rows * n_tok];
                let chunk = exec.chunk_rows(rows, n_tok);
                exec.install(|| {
                    raw.par_chunks_mut(chunk * n_tok)
                        .enumerate()
                        .for_each(|(ci, o)| {
                            for (i, slot) in o.iter_mut().enumerate() {
                                let r = ci * chunk + i / n_tok;
                                let t = i % n_tok;
                                let w = &data[r * cols..(r + 1) * cols];
                                let xt = &x[t * cols..(t + 1) * cols];
                                *slot = w.iter().zip(xt).fold(0f32, |acc, (a, b)| acc + a * b);
                            }
                        })
                });
                for t in 0..n_tok {
                    for r in 0..rows {
                        out[t * rows + r] = raw[r * n_tok + t];
                    }
                }
            }
            RowTable::Int8(m) => {
                let a = QuantActs::for_int8(x, n_tok, cols);
                m.matmul(exec, &a, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_matches_f32_round() {
        let mut v = -300.0f32;
        while v < 300.0 {
            for x in [
                v,
                v + 0.5,
                f32::from_bits(v.to_bits() + 1),
                f32::from_bits(v.to_bits().saturating_sub(1)),
            ] {
                assert_eq!(round_half_away(x), x.round() as i32, "{x}");
            }
            v += 0.013;
        }
        for x in [
            0.49999997f32,
            -0.49999997,
            0.5,
            -0.5,
            1.5,
            -2.5,
            126.5,
            -127.5,
        ] {
            assert_eq!(round_half_away(x), x.round() as i32, "{x}");
        }
    }

    #[test]
    fn latent_weights_are_ternarized_with_the_absmean_rule() {
        let w = [0.3f32, -0.05, 0.0, -0.9, 0.12, 0.2, -0.2, 0.01];
        let s = absmean_scale(&w);
        assert!((s - 0.2225).abs() < 1e-6);
        let m = TernaryMatrix::from_latent(&w, 2, 4).unwrap();
        assert_eq!(m.row_values(0), vec![1, 0, 0, -1]);
        assert_eq!(m.row_values(1), vec![1, 1, -1, 0]);
        // Fused matrices keep their rows and scales.
        let f = TernaryMatrix::concat(vec![
            m.clone(),
            TernaryMatrix::from_latent(&[1.0, -1.0, 0.0, 0.0], 1, 4).unwrap(),
        ])
        .unwrap();
        assert_eq!(f.rows(), 3);
        assert_eq!(f.row_values(2), vec![1, -1, 0, 0]);
        assert_eq!(absmean_scale(&[0.0; 4]), 1e-5);
    }
}
