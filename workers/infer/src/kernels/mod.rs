//! Integer kernels for ternary (2-bit and 1.6-bit) and int8 matrices, with the SIMD path picked
//! at run time.
//!
//! # Layouts
//! * **Ternary packings** ([`Packing`]): 2 bits per weight (below) or five weights per byte
//!   ([`trit5`]). Both use 64-byte blocks and the same row-group tiling.
//! * **2-bit ternary rows** use ggml's TQ2_0 code order without the per-block scale: a row of `k`
//!   weights is padded to a multiple of [`BLOCK`] (256) with zeros; each block is 64 bytes; byte
//!   `h*32 + l` of a block (h ∈ {0,1}, l < 32) holds the codes `q = w + 1 ∈ {0,1,2}` of weights
//!   `h*128 + l + 32*m` in bits `2m..2m+2` (m = 0..3).
//! * **Ternary matrices** interleave rows in groups of [`ROW_GROUP`] (4) at block granularity:
//!   group `g` (rows `4g..4g+gr`, `gr` = 4 except maybe in the last group) stores block `b` of
//!   its row `i` at `4g·row_bytes + (b·gr + i)·64`. The 4-row kernel then reads memory strictly
//!   sequentially, which is what lets a single core stream weights at DRAM speed.
//! * **Activations for ternary kernels** are int8, padded with zeros to the same length. For
//!   2-bit rows they are permuted once per token ([`permute_acts`]) so that one 64-byte load
//!   matches one shift of a 64-byte code load (5-trit rows take them in natural order): position `blk*256 + m*64 + h*32 + l` holds `x[blk*256 + h*128 + 32*m + l]`.
//! * **Int8 rows** (LM head) are padded with zeros to a multiple of [`I8_BLOCK`] (64).
//!
//! All kernels return exact `i32` sums, so every SIMD path yields the same bits as the scalar one.

#[cfg(target_arch = "x86_64")]
pub(crate) mod int4_x86;
pub mod trit5;
#[cfg(target_arch = "x86_64")]
mod trit5_x86;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

/// Weights per ternary block.
pub const BLOCK: usize = 256;
/// Bytes per ternary block, in both packings (256 weights at 2 bits, 320 at five per byte).
pub const BLOCK_BYTES: usize = 64;
/// Padding granule of int8 rows and activations.
pub const I8_BLOCK: usize = 64;
/// Rows interleaved per group in ternary matrices.
pub const ROW_GROUP: usize = 4;

/// Byte offset of block `b` of row `r` in a tiled ternary matrix of `n_rows` rows of `row_bytes`.
pub fn tiled_offset(n_rows: usize, row_bytes: usize, r: usize, b: usize) -> usize {
    let g0 = r - r % ROW_GROUP;
    let gr = (n_rows - g0).min(ROW_GROUP);
    g0 * row_bytes + (b * gr + r % ROW_GROUP) * BLOCK_BYTES
}

/// Instruction-set path of the integer kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (auto-vectorised for the build target only).
    Scalar,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// AVX-512 BW with VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl Isa {
    /// Best path this CPU supports (detected once).
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if x86::has_avx512_vnni() {
                    return Isa::Avx512Vnni;
                }
                if x86::has_avx2() {
                    return Isa::Avx2;
                }
            }
            Isa::Scalar
        })
    }

    /// Every path this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                out.push(Isa::Avx2);
            }
            if x86::has_avx512_vnni() {
                out.push(Isa::Avx512Vnni);
            }
        }
        out
    }

    /// Parses `scalar`, `avx2`, `avx512` (or `auto`), refusing paths this CPU lacks.
    pub fn parse(name: &str) -> Result<Isa, String> {
        let isa = match name {
            "auto" => return Ok(Isa::detect()),
            "scalar" => Isa::Scalar,
            "avx2" => Isa::Avx2,
            "avx512" | "avx512vnni" => Isa::Avx512Vnni,
            other => {
                return Err(format!(
                    "unknown SIMD path {other:?} (auto|scalar|avx2|avx512)"
                ))
            }
        };
        if Isa::available().contains(&isa) {
            Ok(isa)
        } else {
            Err(format!("SIMD path {name} is not supported by this CPU"))
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// How ternary weights are packed in memory. Both packings give the same integer sums, so a
/// model's logits do not depend on the choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packing {
    /// 2 bits per weight (ggml TQ2_0 code order): 256 weights per 64-byte block.
    Tq2,
    /// 1.6 bits per weight (five base-3 digits per byte): 320 weights per 64-byte block.
    /// 20 % fewer bytes than [`Packing::Tq2`] per weight (less after padding to whole blocks);
    /// fast where AVX-512 VBMI decodes it.
    Trit5,
}

impl Packing {
    /// The default packing: [`Packing::Tq2`] on every CPU. Measured on Zen 4 (2 threads,
    /// interleaved runs), 5-trit decode is level with 2-bit (700M 94.0 vs 93.7 tok/s, 2B 33.2
    /// vs 32.2) although it streams 13–15 % fewer bytes per token (700M 13.2 %, 2B 14.6 %), and
    /// prefill is mostly a little slower (much slower for 8-token prompts); so the smaller
    /// format is opt-in (`--pack 5trit`).
    pub fn detect() -> Packing {
        Packing::Tq2
    }

    /// Whether the AVX-512 VBMI kernel for [`Packing::Trit5`] runs on this CPU (elsewhere the
    /// portable path decodes 5-trit bytes far more slowly than 2-bit codes stream).
    pub fn trit5_kernel_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            trit5_x86::available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Parses `2bit` (or `tq2`), `5trit` (or `trit5`), or `auto`.
    pub fn parse(name: &str) -> Result<Packing, String> {
        match name {
            "auto" => Ok(Packing::detect()),
            "2bit" | "tq2" => Ok(Packing::Tq2),
            "5trit" | "trit5" => Ok(Packing::Trit5),
            other => Err(format!(
                "unknown ternary packing {other:?} (auto|2bit|5trit)"
            )),
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Packing::Tq2 => "2bit",
            Packing::Trit5 => "5trit",
        }
    }

    /// Weights per 64-byte block.
    pub fn block(self) -> usize {
        match self {
            Packing::Tq2 => BLOCK,
            Packing::Trit5 => trit5::BLOCK5,
        }
    }

    /// Length of a row of `k` weights once padded to whole blocks.
    pub fn padded_len(self, k: usize) -> usize {
        k.div_ceil(self.block()) * self.block()
    }

    /// Packed bytes of a row padded to `k_pad` weights.
    pub fn row_bytes(self, k_pad: usize) -> usize {
        k_pad / self.block() * BLOCK_BYTES
    }

    /// Whether activations are permuted ([`permute_acts`]) rather than kept in natural order.
    pub fn permutes_acts(self) -> bool {
        self == Packing::Tq2
    }

    /// Packs ternary values into a natural-order (untiled) row of `row_bytes` bytes.
    pub fn pack_row(self, w: &[i8], out: &mut [u8]) {
        match self {
            Packing::Tq2 => pack_ternary_row(w, out),
            Packing::Trit5 => trit5::pack_row(w, out),
        }
    }

    /// The first `k` values of a natural-order packed row.
    pub fn unpack_row(self, packed: &[u8], k: usize) -> Vec<i8> {
        match self {
            Packing::Tq2 => unpack_ternary_row(packed, k),
            Packing::Trit5 => trit5::unpack_row(packed, k),
        }
    }
}

/// Asks the CPU to start loading the cache line at byte `off` of `s` into L2 (a hint; nothing
/// happens past the end or on CPUs without the instruction). Used by threads waiting at a
/// barrier to warm the weights they will stream next.
pub fn prefetch_line(s: &[u8], off: usize) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch_l2(s, off);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, off);
}

/// Asks the CPU to start loading every cache line of `s` (a hint; e.g. a KV-cache history
/// about to be read, so its misses overlap instead of following one another).
pub fn prefetch_all<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch_all(s);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Length of a ternary row of `k` weights once padded to whole blocks.
pub fn padded_ternary_len(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

/// Length of an int8 row of `k` values once padded.
pub fn padded_i8_len(k: usize) -> usize {
    k.div_ceil(I8_BLOCK) * I8_BLOCK
}

/// Packs ternary values (each -1, 0 or 1) into `out` (`padded_ternary_len(w.len()) / 4` bytes).
pub fn pack_ternary_row(w: &[i8], out: &mut [u8]) {
    let blocks = out.len() / BLOCK_BYTES;
    debug_assert_eq!(blocks, w.len().div_ceil(BLOCK));
    for b in 0..blocks {
        for h in 0..2 {
            for l in 0..32 {
                let mut byte = 0u8;
                for m in 0..4 {
                    let idx = b * BLOCK + h * 128 + l + 32 * m;
                    let q = w.get(idx).map_or(1u8, |&v| (v.clamp(-1, 1) + 1) as u8);
                    byte |= q << (2 * m);
                }
                out[b * BLOCK_BYTES + h * 32 + l] = byte;
            }
        }
    }
}

/// Inverse of [`pack_ternary_row`]: the first `k` ternary values of a packed row.
pub fn unpack_ternary_row(packed: &[u8], k: usize) -> Vec<i8> {
    let mut out = vec![0i8; padded_ternary_len(k)];
    for (b, block) in packed.chunks_exact(BLOCK_BYTES).enumerate() {
        for (i, &byte) in block.iter().enumerate() {
            let (h, l) = (i / 32, i % 32);
            for m in 0..4 {
                let q = (byte >> (2 * m)) & 3;
                if let Some(slot) = out.get_mut(b * BLOCK + h * 128 + l + 32 * m) {
                    *slot = q as i8 - 1;
                }
            }
        }
    }
    out.truncate(k);
    out
}

/// Writes int8 activations `x` into kernel order (`out.len() == padded_ternary_len(x.len())`).
pub fn permute_acts(x: &[i8], out: &mut [i8]) {
    out.fill(0);
    for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
        for m in 0..4 {
            for h in 0..2 {
                let src = b * BLOCK + h * 128 + 32 * m;
                let dst = m * 64 + h * 32;
                if src < x.len() {
                    let n = (x.len() - src).min(32);
                    block[dst..dst + n].copy_from_slice(&x[src..src + n]);
                }
            }
        }
    }
}

/// Activation bytes per token chunk of a prompt's GEMM.
const PROMPT_CHUNK_BYTES: usize = 128 << 10;

/// Ternary GEMM on raw codes: `out[t * n_rows + r] = Σ_k q[r][k] · x[t][k]` where `q = w + 1`
/// (token-major, so each token's results are one contiguous row slice).
///
/// `w` holds `n_rows` tiled rows (see the module docs; the slice starts at a row group) of
/// `packing.row_bytes(k_pad)` bytes; `x` holds `n_tok` activation rows of `k_pad` bytes
/// (permuted for [`Packing::Tq2`], natural for [`Packing::Trit5`]). The caller subtracts
/// `Σ_k x[t][k]` to get `Σ w·x`. 5-trit matrices run the AVX-512 VBMI kernel when `isa` is
/// AVX-512 and the CPU has VBMI, the portable one otherwise.
#[allow(clippy::too_many_arguments)]
pub fn ternary_gemm(
    isa: Isa,
    packing: Packing,
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    assert_eq!(
        k_pad % packing.block(),
        0,
        "ternary rows must be padded to whole blocks"
    );
    assert_eq!(
        w.len(),
        n_rows * packing.row_bytes(k_pad),
        "weight buffer is not n_rows rows"
    );
    assert_eq!(
        x.len(),
        n_tok * k_pad,
        "activation buffer is not n_tok padded rows"
    );
    assert_eq!(
        out.len(),
        n_rows * n_tok,
        "output buffer must be n_rows * n_tok"
    );
    // A long prompt runs in token chunks whose activations stay in L2 next to the rows'
    // weights (every row reads every token's activations). Measured with the AVX2 kernel on
    // Zen 3 (512 KB L2): +15-19 % on 512-token prompts. Not applied where unmeasured: the
    // AVX-512 kernels (Zen 4 has 1 MB of L2) and 5-trit, whose prompt kernel decodes each row
    // group once per call, so chunks would decode it again.
    let chunk = (PROMPT_CHUNK_BYTES / k_pad.max(1)).max(4) / 4 * 4;
    if n_tok > chunk && packing == Packing::Tq2 && isa == Isa::Avx2 {
        for t0 in (0..n_tok).step_by(chunk) {
            let t1 = (t0 + chunk).min(n_tok);
            ternary_gemm(
                isa,
                packing,
                w,
                n_rows,
                k_pad,
                &x[t0 * k_pad..t1 * k_pad],
                t1 - t0,
                &mut out[t0 * n_rows..t1 * n_rows],
            );
        }
        return;
    }
    if packing == Packing::Trit5 {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Vnni && trit5_x86::available() {
            return trit5_x86::gemm(w, n_rows, k_pad, x, n_tok, out);
        }
        return trit5::gemm_portable(w, n_rows, k_pad, x, n_tok, out);
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if x86::has_avx512_vnni() => {
            x86::ternary_gemm_avx512(w, n_rows, k_pad, x, n_tok, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if x86::has_avx2() => x86::ternary_gemm_avx2(w, n_rows, k_pad, x, n_tok, out),
        _ => ternary_gemm_scalar(w, n_rows, k_pad, x, n_tok, out),
    }
}

fn ternary_gemm_scalar(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    let row_bytes = k_pad / 4;
    for r in 0..n_rows {
        for t in 0..n_tok {
            let xt = &x[t * k_pad..(t + 1) * k_pad];
            let mut acc = 0i32;
            for blk in 0..k_pad / BLOCK {
                let off = tiled_offset(n_rows, row_bytes, r, blk);
                let codes = &w[off..off + BLOCK_BYTES];
                let xb = &xt[blk * BLOCK..(blk + 1) * BLOCK];
                for m in 0..4 {
                    let xm = &xb[m * 64..(m + 1) * 64];
                    let mut s = 0i32;
                    for (&c, &a) in codes.iter().zip(xm) {
                        s += i32::from((c >> (2 * m)) & 3) * i32::from(a);
                    }
                    acc += s;
                }
            }
            out[t * n_rows + r] = acc;
        }
    }
}

/// Int8 GEMM: `out[r * n_tok + t] = Σ_k w[r][k] · x[t][k]`.
///
/// `w` holds rows of `k_pad` int8 values in [-127, 127]; `row_sums[r] = Σ_k w[r][k]`;
/// `x` holds `n_tok` rows of `k_pad` values in [-127, 127] (natural order).
pub fn i8_gemm(
    isa: Isa,
    w: &[i8],
    row_sums: &[i32],
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    let n_rows = w.len() / k_pad.max(1);
    assert_eq!(k_pad % I8_BLOCK, 0, "int8 rows must be padded to 64");
    assert_eq!(w.len(), n_rows * k_pad, "weight buffer is not whole rows");
    assert_eq!(row_sums.len(), n_rows, "one row sum per row");
    assert_eq!(
        x.len(),
        n_tok * k_pad,
        "activation buffer is not n_tok padded rows"
    );
    assert_eq!(
        out.len(),
        n_rows * n_tok,
        "output buffer must be n_rows * n_tok"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if x86::has_avx512_vnni() => {
            x86::i8_gemm_avx512(w, row_sums, k_pad, x, n_tok, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if x86::has_avx2() => x86::i8_gemm_avx2(w, k_pad, x, n_tok, out),
        _ => i8_gemm_scalar(w, k_pad, x, n_tok, out),
    }
}

fn i8_gemm_scalar(w: &[i8], k_pad: usize, x: &[i8], n_tok: usize, out: &mut [i32]) {
    for (r, row) in w.chunks_exact(k_pad).enumerate() {
        for t in 0..n_tok {
            let xt = &x[t * k_pad..(t + 1) * k_pad];
            let mut acc = 0i32;
            for (&a, &b) in row.iter().zip(xt) {
                acc += i32::from(a) * i32::from(b);
            }
            out[r * n_tok + t] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, enough for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn i8_in(&mut self, lo: i32, hi: i32) -> i8 {
            (lo + self.below((hi - lo + 1) as u64) as i32) as i8
        }
    }

    #[test]
    fn pack_unpack_roundtrip_on_odd_lengths() {
        let mut rng = Rng(1);
        for k in [1usize, 31, 127, 128, 129, 255, 256, 257, 600, 1000] {
            let w: Vec<i8> = (0..k).map(|_| rng.i8_in(-1, 1)).collect();
            let mut packed = vec![0u8; padded_ternary_len(k) / 4];
            pack_ternary_row(&w, &mut packed);
            assert_eq!(unpack_ternary_row(&packed, k), w, "k = {k}");
            // Padding decodes as zero weights.
            let full = unpack_ternary_row(&packed, padded_ternary_len(k));
            assert!(full[k..].iter().all(|&v| v == 0));
        }
    }

    #[test]
    fn packing_matches_ggml_tq2_0_byte_order() {
        // quantize_row_tq2_0_ref: qs[j/4 + m] |= q[j + m + n*32] << (2n), j in (0,128), m < 32.
        let w: Vec<i8> = (0..256)
            .map(|i| [(-1i8), 0, 1][(i * 7 + i / 3) % 3])
            .collect();
        let mut packed = vec![0u8; 64];
        pack_ternary_row(&w, &mut packed);
        for j in [0usize, 128] {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q |= ((w[j + m + n * 32] + 1) as u8) << (2 * n);
                }
                assert_eq!(packed[j / 4 + m], q);
            }
        }
    }

    fn reference_ternary(w: &[Vec<i8>], x: &[Vec<i8>]) -> Vec<i32> {
        let mut out = Vec::new();
        for row in w {
            for xt in x {
                out.push(
                    row.iter()
                        .zip(xt)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum(),
                );
            }
        }
        out
    }

    /// Packs `w` (rows of ternary values) as tiled rows and `x` as kernel-order activations.
    fn pack_case(packing: Packing, w: &[Vec<i8>], x: &[Vec<i8>], k: usize) -> (Vec<u8>, Vec<i8>) {
        let k_pad = packing.padded_len(k);
        let rb = packing.row_bytes(k_pad);
        let rows = w.len();
        let mut packed = vec![0u8; rows * rb];
        let mut natural = vec![0u8; rb];
        for (r, row) in w.iter().enumerate() {
            packing.pack_row(row, &mut natural);
            for (b, blk) in natural.chunks_exact(BLOCK_BYTES).enumerate() {
                let off = tiled_offset(rows, rb, r, b);
                packed[off..off + BLOCK_BYTES].copy_from_slice(blk);
            }
        }
        let mut xp = vec![0i8; x.len() * k_pad];
        for (t, xt) in x.iter().enumerate() {
            let dst = &mut xp[t * k_pad..(t + 1) * k_pad];
            if packing.permutes_acts() {
                permute_acts(xt, dst);
            } else {
                dst[..k].copy_from_slice(xt);
            }
        }
        (packed, xp)
    }

    #[test]
    fn packings_size_rows_and_parse_names() {
        // 2560 is eight 320-weight blocks and ten 256-weight ones: 512 vs 640 bytes.
        assert_eq!(Packing::Trit5.padded_len(2560), 2560);
        assert_eq!(Packing::Trit5.row_bytes(2560), 512);
        assert_eq!(Packing::Tq2.row_bytes(2560), 640);
        // 1536 pads to 1600 (five blocks) at 5 trits, stays 1536 at 2 bits.
        assert_eq!(Packing::Trit5.padded_len(1536), 1600);
        assert_eq!(Packing::Trit5.row_bytes(1600), 320);
        assert_eq!(Packing::Tq2.padded_len(1), 256);
        assert_eq!(Packing::parse("5trit"), Ok(Packing::Trit5));
        assert_eq!(Packing::parse("2bit"), Ok(Packing::Tq2));
        assert_eq!(Packing::parse("auto"), Ok(Packing::detect()));
        assert!(Packing::parse("3bit")
            .unwrap_err()
            .contains("auto|2bit|5trit"));
        for p in [Packing::Tq2, Packing::Trit5] {
            assert_eq!(Packing::parse(p.name()), Ok(p));
        }
    }

    #[test]
    fn trit5_pack_unpack_roundtrip_on_odd_lengths() {
        let mut rng = Rng(3);
        for k in [1usize, 63, 64, 65, 319, 320, 321, 640, 1000, 2560] {
            let w: Vec<i8> = (0..k).map(|_| rng.i8_in(-1, 1)).collect();
            let mut packed = vec![0u8; trit5::padded_len(k) / 5];
            trit5::pack_row(&w, &mut packed);
            assert!(
                packed.iter().all(|&b| b < 243),
                "k = {k}: byte out of range"
            );
            assert_eq!(trit5::unpack_row(&packed, k), w, "k = {k}");
            // Padding decodes as zero weights.
            let full = trit5::unpack_row(&packed, trit5::padded_len(k));
            assert!(full[k..].iter().all(|&v| v == 0), "k = {k}");
        }
    }

    #[test]
    fn trit5_byte_is_the_base3_number_of_its_five_weights() {
        // Weight 64p + j of a block is digit p of byte j.
        let w: Vec<i8> = (0..320)
            .map(|i| [(-1i8), 0, 1][(i * 5 + i / 7) % 3])
            .collect();
        let mut packed = vec![0u8; 64];
        trit5::pack_row(&w, &mut packed);
        for (j, &byte) in packed.iter().enumerate() {
            let want: u32 = (0..5)
                .map(|p| (w[64 * p + j] + 1) as u32 * 3u32.pow(p as u32))
                .sum();
            assert_eq!(u32::from(byte), want, "byte {j}");
        }
        // Every byte value decodes by the documented rule on the portable path.
        for b in 0..243usize {
            let d = trit5::DIGITS[b];
            let v: usize = (0..5)
                .map(|p| usize::from(d[p]) * 3usize.pow(p as u32))
                .sum();
            assert_eq!(v, b);
        }
    }

    /// Random ternary weights (`rows × k`) and int8 activations (`n_tok × k`) from `rng`; every
    /// kernel this CPU runs must give the reference's `Σ w·x` for every (row, token).
    fn check_every_kernel(
        rng: &mut Rng,
        packing: Packing,
        (k, rows, n_tok): (usize, usize, usize),
        case: &str,
    ) {
        let k_pad = packing.padded_len(k);
        let w: Vec<Vec<i8>> = (0..rows)
            .map(|_| (0..k).map(|_| rng.i8_in(-1, 1)).collect())
            .collect();
        let x: Vec<Vec<i8>> = (0..n_tok)
            .map(|_| (0..k).map(|_| rng.i8_in(-127, 127)).collect())
            .collect();
        let (packed, xp) = pack_case(packing, &w, &x, k);
        let want = reference_ternary(&w, &x);
        for isa in Isa::available() {
            let mut raw = vec![0i32; rows * n_tok];
            ternary_gemm(isa, packing, &packed, rows, k_pad, &xp, n_tok, &mut raw);
            // Kernel output is token-major; the reference is row-major.
            let got: Vec<i32> = (0..rows * n_tok)
                .map(|i| {
                    let (r, t) = (i / n_tok, i % n_tok);
                    raw[t * rows + r] - x[t].iter().map(|&v| i32::from(v)).sum::<i32>()
                })
                .collect();
            assert_eq!(
                got, want,
                "{packing:?} {case} isa {isa:?} k {k} rows {rows} n_tok {n_tok}"
            );
        }
    }

    #[test]
    fn every_ternary_kernel_matches_the_reference_on_random_shapes() {
        let mut rng = Rng(7);
        for packing in [Packing::Tq2, Packing::Trit5] {
            for case in 0..40 {
                let k = 1 + rng.below(1400) as usize;
                let rows = 1 + rng.below(11) as usize;
                let n_tok = 1 + rng.below(7) as usize;
                check_every_kernel(&mut rng, packing, (k, rows, n_tok), &format!("case {case}"));
            }
        }
    }

    /// Every row count of 1..=9 (so every size of a matrix's last row group) × 1..=5 tokens on
    /// every kernel and packing.
    #[test]
    fn ternary_kernels_match_the_reference_on_every_small_row_and_token_count() {
        let mut rng = Rng(17);
        for packing in [Packing::Tq2, Packing::Trit5] {
            for rows in 1..=9 {
                for n_tok in 1..=5 {
                    check_every_kernel(&mut rng, packing, (700, rows, n_tok), "small");
                }
            }
        }
    }

    /// Prompts longer than one token chunk (several chunks and a remainder, where chunking
    /// applies) on long rows. (It compares results only: it shows chunked runs are right, not
    /// that chunking happened.)
    #[test]
    fn long_prompts_run_in_token_chunks_with_the_same_results() {
        let mut rng = Rng(13);
        for packing in [Packing::Tq2, Packing::Trit5] {
            let k = 6912;
            let chunk = PROMPT_CHUNK_BYTES / packing.padded_len(k) / 4 * 4;
            check_every_kernel(&mut rng, packing, (k, 6, 2 * chunk + 3), "long prompt");
        }
    }

    /// Row slices starting at a row group (as the forward pass hands them to threads), on
    /// rows long enough for the prefetch to run across groups.
    #[test]
    fn ternary_kernels_agree_on_row_slices() {
        let mut rng = Rng(9);
        for packing in [Packing::Tq2, Packing::Trit5] {
            let (k, rows, n_tok) = (2560, 13, 5);
            let k_pad = packing.padded_len(k);
            let rb = packing.row_bytes(k_pad);
            let w: Vec<Vec<i8>> = (0..rows)
                .map(|_| (0..k).map(|_| rng.i8_in(-1, 1)).collect())
                .collect();
            let x: Vec<Vec<i8>> = (0..n_tok)
                .map(|_| (0..k).map(|_| rng.i8_in(-127, 127)).collect())
                .collect();
            let (packed, xp) = pack_case(packing, &w, &x, k);
            let mut want = vec![0i32; rows * n_tok];
            ternary_gemm(
                Isa::Scalar,
                packing,
                &packed,
                rows,
                k_pad,
                &xp,
                n_tok,
                &mut want,
            );
            for isa in Isa::available() {
                for nt in [1, n_tok] {
                    for (lo, hi) in [(0, rows), (4, rows), (8, 12)] {
                        let n = hi - lo;
                        let mut got = vec![0i32; n * nt];
                        let ws = &packed[lo * rb..hi * rb];
                        ternary_gemm(isa, packing, ws, n, k_pad, &xp[..nt * k_pad], nt, &mut got);
                        for t in 0..nt {
                            assert_eq!(
                                got[t * n..(t + 1) * n],
                                want[t * rows + lo..t * rows + hi],
                                "{packing:?} {isa:?} rows {lo}..{hi} token {t}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ternary_kernels_survive_extreme_values() {
        let k = 6912;
        for packing in [Packing::Tq2, Packing::Trit5] {
            let k_pad = packing.padded_len(k);
            for (wv, xv) in [(1i8, 127i8), (-1, 127), (1, -127), (-1, -128)] {
                let (packed, xp) = pack_case(packing, &[vec![wv; k]], &[vec![xv; k]], k);
                let xsum: i32 = i32::from(xv) * k as i32;
                for isa in Isa::available() {
                    let mut raw = [0i32];
                    ternary_gemm(isa, packing, &packed, 1, k_pad, &xp, 1, &mut raw);
                    assert_eq!(raw[0] - xsum, i32::from(wv) * xsum, "{packing:?} {isa:?}");
                }
            }
        }
    }

    #[test]
    fn every_i8_kernel_matches_the_reference_on_random_shapes() {
        let mut rng = Rng(11);
        for case in 0..40 {
            let k = 1 + rng.below(700) as usize;
            let rows = 1 + rng.below(9) as usize;
            let n_tok = 1 + rng.below(7) as usize;
            let k_pad = padded_i8_len(k);
            let mut w = vec![0i8; rows * k_pad];
            let mut x = vec![0i8; n_tok * k_pad];
            for r in 0..rows {
                for i in 0..k {
                    w[r * k_pad + i] = rng.i8_in(-127, 127);
                }
            }
            for t in 0..n_tok {
                for i in 0..k {
                    x[t * k_pad + i] = rng.i8_in(-127, 127);
                }
            }
            let sums: Vec<i32> = w
                .chunks(k_pad)
                .map(|r| r.iter().map(|&v| i32::from(v)).sum())
                .collect();
            let mut want = vec![0i32; rows * n_tok];
            i8_gemm_scalar(&w, k_pad, &x, n_tok, &mut want);
            // The scalar kernel itself against a direct formula.
            assert_eq!(
                want[0],
                (0..k)
                    .map(|i| i32::from(w[i]) * i32::from(x[i]))
                    .sum::<i32>(),
                "case {case}"
            );
            for isa in Isa::available() {
                let mut got = vec![0i32; rows * n_tok];
                i8_gemm(isa, &w, &sums, k_pad, &x, n_tok, &mut got);
                assert_eq!(got, want, "case {case} isa {isa:?} k {k}");
            }
        }
    }

    #[test]
    fn i8_kernels_survive_extreme_values() {
        let k_pad = 2560;
        for (wv, xv) in [(127i8, 127i8), (-127, 127), (127, -127), (-127, -127)] {
            let w = vec![wv; k_pad];
            let x = vec![xv; k_pad];
            let sums = [i32::from(wv) * k_pad as i32];
            for isa in Isa::available() {
                let mut out = [0i32];
                i8_gemm(isa, &w, &sums, k_pad, &x, 1, &mut out);
                assert_eq!(
                    out[0],
                    i32::from(wv) * i32::from(xv) * k_pad as i32,
                    "{isa:?}"
                );
            }
        }
    }

    /// The int8 kernels work on 4-row tiles (the last rows one at a time) × up to 4 tokens and
    /// prefetch the next tile: every remainder of rows and tokens, on rows long enough for the
    /// prefetch to run across tiles, on whole matrices and on row slices (as `matrix.rs` calls).
    #[test]
    fn i8_kernels_match_the_scalar_path_on_every_tile_remainder() {
        let mut rng = Rng(13);
        for (case, &(k_pad, rows, n_tok)) in [
            (64, 4, 1),
            (128, 5, 4),
            (1536, 7, 1),
            (1536, 13, 2),
            (2560, 9, 3),
            (2560, 6, 5),
            (192, 11, 9),
            (4096, 3, 8),
        ]
        .iter()
        .enumerate()
        {
            let w: Vec<i8> = (0..rows * k_pad).map(|_| rng.i8_in(-127, 127)).collect();
            let x: Vec<i8> = (0..n_tok * k_pad).map(|_| rng.i8_in(-127, 127)).collect();
            let sums: Vec<i32> = w
                .chunks(k_pad)
                .map(|r| r.iter().map(|&v| i32::from(v)).sum())
                .collect();
            let mut want = vec![0i32; rows * n_tok];
            i8_gemm_scalar(&w, k_pad, &x, n_tok, &mut want);
            for isa in Isa::available() {
                let mut got = vec![0i32; rows * n_tok];
                i8_gemm(isa, &w, &sums, k_pad, &x, n_tok, &mut got);
                assert_eq!(got, want, "case {case} isa {isa:?}");
                for (lo, hi) in [(1, rows), (0, rows - 1), (rows / 2, rows)] {
                    let mut part = vec![0i32; (hi - lo) * n_tok];
                    let ws = &w[lo * k_pad..hi * k_pad];
                    i8_gemm(isa, ws, &sums[lo..hi], k_pad, &x, n_tok, &mut part);
                    assert_eq!(
                        part,
                        want[lo * n_tok..hi * n_tok],
                        "case {case} isa {isa:?} rows {lo}..{hi}"
                    );
                }
            }
        }
    }

    /// Extreme values on several rows and tokens (the tiled paths, the biased sums of AVX-512
    /// and the pairwise i16 sums of AVX2 at their largest).
    #[test]
    fn i8_tiles_survive_extreme_values() {
        let k_pad = 4096;
        let (rows, n_tok) = (6, 5);
        let vals = [127i8, -127];
        let w: Vec<i8> = (0..rows)
            .flat_map(|r| std::iter::repeat_n(vals[r % 2], k_pad))
            .collect();
        let x: Vec<i8> = (0..n_tok)
            .flat_map(|t| std::iter::repeat_n(vals[t / 2 % 2], k_pad))
            .collect();
        let sums: Vec<i32> = (0..rows)
            .map(|r| i32::from(vals[r % 2]) * k_pad as i32)
            .collect();
        for isa in Isa::available() {
            let mut out = vec![0i32; rows * n_tok];
            i8_gemm(isa, &w, &sums, k_pad, &x, n_tok, &mut out);
            for r in 0..rows {
                for t in 0..n_tok {
                    assert_eq!(
                        out[r * n_tok + t],
                        i32::from(vals[r % 2]) * i32::from(vals[t / 2 % 2]) * k_pad as i32,
                        "{isa:?} row {r} token {t}"
                    );
                }
            }
        }
    }
}
