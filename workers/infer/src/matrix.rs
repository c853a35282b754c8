//! Quantized matrices (ternary BitLinear weights, int8 LM head) and per-token int8 activations.

use std::ops::Range;

use crate::int4::{self, Int4Matrix};
use crate::kernels::{self, Isa, Packing};

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

/// Execution settings of a model: team size and SIMD path.
pub struct Exec {
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
        anyhow::ensure!(
            threads <= 1024,
            "{threads} threads is not a sensible team size"
        );
        Ok(Exec { threads, isa })
    }

    /// Threads of a forward pass.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Borrowed int8 activations of `n_tok` tokens (see [`QuantActs`]).
#[derive(Clone, Copy)]
pub struct Acts<'a> {
    /// Tokens.
    pub n_tok: usize,
    /// Padded row length.
    pub k_pad: usize,
    /// `n_tok` rows of `k_pad` values in kernel order.
    pub data: &'a [i8],
    /// `Σ xq` per token.
    pub sums: &'a [i32],
    /// `g` per token.
    pub scale: &'a [f32],
}

/// Quantizes one token `x` to int8 into `dst` (`k_pad` values; the order of 2-bit ternary
/// kernels when `permute`, else natural), using `tmp` as scratch; returns `(Σ xq, g)`.
pub fn quantize_token(x: &[f32], permute: bool, tmp: &mut Vec<i8>, dst: &mut [i8]) -> (i32, f32) {
    let k = x.len();
    if permute {
        tmp.resize(k, 0);
        let r = crate::vecf32::quantize_i8(x, tmp);
        kernels::permute_acts(tmp, dst);
        r
    } else {
        dst[k..].fill(0);
        crate::vecf32::quantize_i8(x, &mut dst[..k])
    }
}

/// Int8 activations of `n_tok` tokens, quantized per token: `xq = clamp(round(x·127/g))`,
/// `g = max(max|x|, 1e-5)`.
pub struct QuantActs {
    /// Tokens.
    pub n_tok: usize,
    /// Padded row length.
    pub k_pad: usize,
    /// Rows in kernel order ([`kernels::permute_acts`] for 2-bit ternary, else natural).
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
        let mut tmp = Vec::new();
        for (xt, dst) in x
            .chunks_exact(k)
            .zip(data.chunks_exact_mut(k_pad))
            .take(n_tok)
        {
            let (s, g) = quantize_token(xt, permute, &mut tmp, dst);
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

    /// Borrowed view.
    pub fn view(&self) -> Acts<'_> {
        Acts {
            n_tok: self.n_tok,
            k_pad: self.k_pad,
            data: &self.data,
            sums: &self.sums,
            scale: &self.scale,
        }
    }
}

/// A ternary weight matrix `[rows, cols]` packed at 2 or 1.6 bits ([`Packing`]), with one f32
/// scale per row (rows of fused projections keep their own tensor's scale).
#[derive(Clone)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    k_pad: usize,
    packing: Packing,
    codes: crate::mem::Bytes,
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

    /// All-zero weights with scale `s`, packed at 2 bits.
    pub fn zeros(rows: usize, cols: usize, s: f32) -> TernaryMatrix {
        TernaryMatrix::zeros_packed(rows, cols, s, Packing::Tq2)
    }

    /// All-zero weights with scale `s` in `packing`.
    pub fn zeros_packed(rows: usize, cols: usize, s: f32, packing: Packing) -> TernaryMatrix {
        let k_pad = packing.padded_len(cols);
        let zero_byte = match packing {
            Packing::Tq2 => 0x55,
            // Digits 1,1,1,1,1: 1 + 3 + 9 + 27 + 81.
            Packing::Trit5 => 121,
        };
        TernaryMatrix {
            rows,
            cols,
            k_pad,
            packing,
            codes: crate::mem::Bytes::Own(vec![zero_byte; rows * packing.row_bytes(k_pad)]),
            row_scale: vec![s; rows],
        }
    }

    /// How the weights are packed.
    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// The same weights in `packing` (a copy; `self` when already so packed).
    pub fn repack(self, packing: Packing) -> TernaryMatrix {
        if packing == self.packing {
            return self;
        }
        let mut out = TernaryMatrix::zeros_packed(self.rows, self.cols, 1.0, packing);
        out.row_scale = self.row_scale.clone();
        let rb = packing.row_bytes(out.k_pad);
        let mut natural = vec![0u8; rb];
        let codes = out.codes.to_mut();
        for r in 0..self.rows {
            packing.pack_row(&self.row_values(r), &mut natural);
            for (b, blk) in natural.chunks_exact(kernels::BLOCK_BYTES).enumerate() {
                let off = kernels::tiled_offset(self.rows, rb, r, b);
                codes[off..off + kernels::BLOCK_BYTES].copy_from_slice(blk);
            }
        }
        out
    }

    /// Sets row `r` from ternary values.
    pub fn set_row(&mut self, r: usize, values: &[i8]) {
        let rb = self.packing.row_bytes(self.k_pad);
        let mut natural = vec![0u8; rb];
        self.packing.pack_row(values, &mut natural);
        for (b, blk) in natural.chunks_exact(kernels::BLOCK_BYTES).enumerate() {
            let off = kernels::tiled_offset(self.rows, rb, r, b);
            self.codes.to_mut()[off..off + kernels::BLOCK_BYTES].copy_from_slice(blk);
        }
    }

    /// All packed bytes (tiled layout of [`TernaryMatrix::packing`]; for generators writing
    /// random codes directly).
    pub fn codes_mut(&mut self) -> &mut [u8] {
        self.codes.to_mut()
    }

    /// Sets the scale of row `r`.
    pub fn set_row_scale(&mut self, r: usize, s: f32) {
        self.row_scale[r] = s;
    }

    /// Ternary values of row `r`.
    pub fn row_values(&self, r: usize) -> Vec<i8> {
        let rb = self.packing.row_bytes(self.k_pad);
        let mut natural = Vec::with_capacity(rb);
        for b in 0..self.k_pad / self.packing.block() {
            let off = kernels::tiled_offset(self.rows, rb, r, b);
            natural.extend_from_slice(&self.codes[off..off + kernels::BLOCK_BYTES]);
        }
        self.packing.unpack_row(&natural, self.cols)
    }

    /// Stacks matrices with the same column count and packing (fused q/k/v, gate/up).
    pub fn concat(parts: Vec<TernaryMatrix>) -> anyhow::Result<TernaryMatrix> {
        let cols = parts.first().map_or(0, |p| p.cols);
        let packing = parts.first().map_or(Packing::Tq2, |p| p.packing);
        anyhow::ensure!(
            parts.iter().all(|p| p.cols == cols),
            "fused matrices need equal column counts"
        );
        anyhow::ensure!(
            parts.iter().all(|p| p.packing == packing),
            "fused matrices need the same packing"
        );
        let mut out = TernaryMatrix {
            rows: 0,
            cols,
            k_pad: packing.padded_len(cols),
            packing,
            codes: crate::mem::Bytes::Own(vec![]),
            row_scale: vec![],
        };
        // Appending the packed bytes keeps the row-group tiling only when every part but the
        // last has whole groups; otherwise re-tile row by row.
        let aligned = parts
            .iter()
            .rev()
            .skip(1)
            .all(|p| p.rows % kernels::ROW_GROUP == 0);
        if aligned {
            let mut codes = Vec::with_capacity(parts.iter().map(|p| p.codes.len()).sum());
            for p in parts {
                out.rows += p.rows;
                codes.extend_from_slice(&p.codes);
                out.row_scale.extend_from_slice(&p.row_scale);
            }
            out.codes = crate::mem::Bytes::Own(codes);
            return Ok(out);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut fused = TernaryMatrix::zeros_packed(rows, cols, 1.0, packing);
        let mut r0 = 0;
        for p in &parts {
            for r in 0..p.rows {
                fused.set_row(r0 + r, &p.row_values(r));
                fused.row_scale[r0 + r] = p.row_scale[r];
            }
            r0 += p.rows;
        }
        Ok(fused)
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

    /// The packed bytes' storage (to move them into an arena).
    pub(crate) fn storage_mut(&mut self) -> &mut crate::mem::Bytes {
        &mut self.codes
    }

    /// Packed bytes of rows `rows` (`rows.start` at a row group).
    pub fn codes_of_rows(&self, rows: Range<usize>) -> &[u8] {
        let rb = self.packing.row_bytes(self.k_pad);
        &self.codes[rows.start * rb..rows.end * rb]
    }

    /// Rows `rows` of the product with `a`: for each token `t`, calls `emit(t, rows.start, y)`
    /// with `y[i] = (Σ_k w[r][k]·xq[t][k]) · s_r · g_t / 127` for `r = rows.start + i` (exact
    /// integer dot, then f32). `rows.start` must be a multiple of [`kernels::ROW_GROUP`]; `raw`
    /// and `fbuf` are scratch.
    pub fn matmul_rows(
        &self,
        isa: Isa,
        a: Acts<'_>,
        rows: Range<usize>,
        raw: &mut Vec<i32>,
        fbuf: &mut Vec<f32>,
        mut emit: impl FnMut(usize, usize, &[f32]),
    ) {
        assert_eq!(
            a.k_pad, self.k_pad,
            "activation width does not match the matrix"
        );
        assert!(
            rows.start.is_multiple_of(kernels::ROW_GROUP)
                && (rows.end.is_multiple_of(kernels::ROW_GROUP) || rows.end == self.rows)
                && rows.end <= self.rows,
            "row range must start and end at row groups (or the matrix end) inside the matrix"
        );
        if rows.is_empty() {
            return;
        }
        let n = a.n_tok;
        let nr = rows.len();
        raw.clear();
        raw.resize(nr * n, 0);
        let rb = self.packing.row_bytes(self.k_pad);
        kernels::ternary_gemm(
            isa,
            self.packing,
            &self.codes[rows.start * rb..rows.end * rb],
            nr,
            self.k_pad,
            &a.data[..n * self.k_pad],
            n,
            raw,
        );
        fbuf.clear();
        fbuf.resize(nr, 0.0);
        let scales = &self.row_scale[rows.clone()];
        // The kernel's output is token-major: token t's results are raw[t * nr..(t + 1) * nr].
        for (t, rt) in raw.chunks_exact(nr).enumerate() {
            let (sum, g) = (a.sums[t], a.scale[t]);
            for ((y, &s), &v) in fbuf.iter_mut().zip(scales).zip(rt) {
                *y = (v - sum) as f32 * s * g / 127.0;
            }
            emit(t, rows.start, fbuf);
        }
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
            data: crate::mem::huge_vec(rows * k_pad, 0),
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

    /// Rows `rows` of the product with `a` (natural-order int8 activations): for each token
    /// `t`, calls `emit(t, rows.start, y)` with `y[i] = (Σ_k q[r][k]·xq[t][k]) · scale_r · g_t / 127`.
    pub fn matmul_rows(
        &self,
        isa: Isa,
        a: Acts<'_>,
        rows: Range<usize>,
        raw: &mut Vec<i32>,
        fbuf: &mut Vec<f32>,
        mut emit: impl FnMut(usize, usize, &[f32]),
    ) {
        assert_eq!(
            a.k_pad, self.k_pad,
            "activation width does not match the matrix"
        );
        assert!(rows.end <= self.rows, "row range outside the matrix");
        if rows.is_empty() {
            return;
        }
        let n = a.n_tok;
        let kp = self.k_pad;
        let nr = rows.len();
        raw.clear();
        raw.resize(nr * n, 0);
        kernels::i8_gemm(
            isa,
            &self.data[rows.start * kp..rows.end * kp],
            &self.row_sums[rows.clone()],
            kp,
            &a.data[..n * kp],
            n,
            raw,
        );
        fbuf.clear();
        fbuf.resize(nr, 0.0);
        let scales = &self.scale[rows.clone()];
        for t in 0..n {
            let g = a.scale[t];
            for ((y, &s), &v) in fbuf
                .iter_mut()
                .zip(scales)
                .zip(raw.iter().skip(t).step_by(n))
            {
                *y = v as f32 * s * g / 127.0;
            }
            emit(t, rows.start, fbuf);
        }
    }
}

/// A table of rows: the embedding, and the LM head (f32, int8 per row, or int4 per group of 128).
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
    /// Int4 with one scale per row and group of 128 columns.
    Int4(Int4Matrix),
}

/// Scratch buffers of [`RowTable::logits_rows`].
#[derive(Default)]
pub struct HeadScratch {
    raw: Vec<i32>,
    f: Vec<f32>,
    y: Vec<f32>,
}

/// Hidden states prepared for an LM head ([`RowTable::prepare`]).
pub enum HeadInput {
    /// f32 rows `[n_tok, cols]`.
    F32(Vec<f32>),
    /// Per-token int8 activations (natural order).
    Int8(QuantActs),
    /// Per-token int8 activations padded to groups of 128, with the code-offset corrections.
    Int4(QuantActs, Vec<i32>),
}

impl RowTable {
    /// Rows (vocabulary size).
    pub fn rows(&self) -> usize {
        match self {
            RowTable::F32 { rows, .. } => *rows,
            RowTable::Int8(m) => m.rows,
            RowTable::Int4(m) => m.rows(),
        }
    }

    /// Columns (hidden size).
    pub fn cols(&self) -> usize {
        match self {
            RowTable::F32 { cols, .. } => *cols,
            RowTable::Int8(m) => m.cols,
            RowTable::Int4(m) => m.cols(),
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
            RowTable::Int4(m) => m.row(r),
        })
    }

    /// Bytes read when used as the LM head for one token.
    pub fn bytes(&self) -> usize {
        match self {
            RowTable::F32 { data, .. } => 4 * data.len(),
            RowTable::Int8(m) => m.bytes(),
            RowTable::Int4(m) => m.bytes(),
        }
    }

    /// Storage name.
    pub fn format(&self) -> &'static str {
        match self {
            RowTable::F32 { .. } => "f32",
            RowTable::Int8(_) => "int8 (per-row scale)",
            RowTable::Int4(_) => "int4 (scale per 128)",
        }
    }

    /// Prepares `n_tok` hidden states `x` `[n_tok, cols]` for [`RowTable::logits_rows`].
    pub fn prepare(&self, x: &[f32], n_tok: usize) -> HeadInput {
        let cols = self.cols();
        match self {
            RowTable::F32 { .. } => HeadInput::F32(x[..n_tok * cols].to_vec()),
            RowTable::Int8(m) => {
                HeadInput::Int8(QuantActs::quantize(x, n_tok, cols, m.k_pad, false))
            }
            RowTable::Int4(m) => {
                let a = QuantActs::quantize(x, n_tok, cols, m.k_pad(), false);
                let corr = a
                    .data
                    .chunks_exact(m.k_pad())
                    .flat_map(|xt| int4::prepare_acts(xt, m.k_pad()))
                    .collect();
                HeadInput::Int4(a, corr)
            }
        }
    }

    /// Logits of rows `rows` for the prepared tokens: for each token `t`,
    /// `emit(t, rows.start, logits)`. The f32 table is a plain sequential dot per output; the
    /// others use the integer kernels (one thread computes each output, so the bits do not
    /// depend on how rows are split).
    pub fn logits_rows(
        &self,
        isa: Isa,
        input: &HeadInput,
        rows: Range<usize>,
        scratch: &mut HeadScratch,
        mut emit: impl FnMut(usize, usize, &[f32]),
    ) {
        let HeadScratch {
            raw: scratch,
            f: fscratch,
            y: fbuf,
        } = scratch;
        match (self, input) {
            (RowTable::F32 { data, cols, .. }, HeadInput::F32(x)) => {
                let n = x.len() / (*cols).max(1);
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    fbuf.clear();
                    fbuf.extend(rows.clone().map(|r| {
                        let w = &data[r * cols..(r + 1) * cols];
                        w.iter().zip(xt).fold(0f32, |acc, (a, b)| acc + a * b)
                    }));
                    emit(t, rows.start, fbuf);
                }
            }
            (RowTable::Int8(m), HeadInput::Int8(a)) => {
                m.matmul_rows(isa, a.view(), rows, scratch, fbuf, emit)
            }
            (RowTable::Int4(m), HeadInput::Int4(a, corr)) => {
                let n = a.n_tok;
                let nr = rows.len();
                fscratch.clear();
                fscratch.resize(nr * n, 0.0);
                int4::int4_gemm(isa, m, rows.clone(), &a.data, corr, n, fscratch);
                for t in 0..n {
                    let g = a.scale[t];
                    fbuf.clear();
                    fbuf.extend(fscratch.iter().skip(t).step_by(n).map(|&v| v * g / 127.0));
                    emit(t, rows.start, fbuf);
                }
            }
            _ => panic!("head input prepared for another table format"),
        }
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
