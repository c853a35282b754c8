//! Ternary weights at 1.6 bits: five weights per byte (3^5 = 243 ≤ 256).
//!
//! # Layout
//! * A row of `k` weights is padded with zeros to a multiple of [`BLOCK5`] (320). Each block is
//!   64 bytes; byte `j` of a block holds the codes `u = w + 1 ∈ {0,1,2}` of weights
//!   `64p + j` (p = 0..4) of the block as the base-3 number `Σ_p u_p·3^p` (0..=242). Digit `p`
//!   is then the weight that meets activation `64p + j`: activations stay in natural order
//!   (zero-padded), and one 64-byte activation load matches one decoded digit plane.
//! * Matrices interleave rows in groups of [`ROW_GROUP`] at block granularity, exactly like the
//!   2-bit layout ([`super::tiled_offset`] with 64-byte blocks), so a row group is one
//!   sequential stream.
//!
//! Decoding a byte: the top digit is `u4 = [b ≥ 81] + [b ≥ 162]`; the rest `b − 81·u4 < 81`
//! indexes 128-entry digit tables (one `vpermi2b` per digit on AVX-512 VBMI). The portable
//! path below uses the same rule through a 256-entry table, so bytes above 242 (never written
//! by the packer) decode identically on every path.

use super::{tiled_offset, BLOCK_BYTES};

/// Weights per 5-trit block.
pub const BLOCK5: usize = 320;

/// Digits of byte `b` under the decoding rule of the module docs (`[u0, u1, u2, u3, u4]`).
const fn digits(b: usize) -> [u8; 5] {
    let u4 = (b >= 81) as usize + (b >= 162) as usize;
    let r = b - 81 * u4;
    if r >= 81 {
        // Only bytes 243..=255: the vector path's tables hold zeros past index 80.
        return [0, 0, 0, 0, u4 as u8];
    }
    [
        (r % 3) as u8,
        (r / 3 % 3) as u8,
        (r / 9 % 3) as u8,
        (r / 27 % 3) as u8,
        u4 as u8,
    ]
}

/// `DIGITS[b]` = digits of byte `b`.
pub(super) const DIGITS: [[u8; 5]; 256] = {
    let mut t = [[0u8; 5]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = digits(b);
        b += 1;
    }
    t
};

/// Digit `p` (0..4) of every index below 128 (0 from 81 on): the `vpermi2b` tables.
pub(super) const fn digit_table(p: usize) -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 81 {
        t[i] = digits(i)[p];
        i += 1;
    }
    t
}

/// Length of a row of `k` weights once padded to whole 5-trit blocks.
pub fn padded_len(k: usize) -> usize {
    k.div_ceil(BLOCK5) * BLOCK5
}

/// Packs ternary values (each -1, 0 or 1) into `out` (`padded_len(w.len()) / 5` bytes).
pub fn pack_row(w: &[i8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), padded_len(w.len()) / 5);
    for (b, block) in out.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        for (j, byte) in block.iter_mut().enumerate() {
            let mut v = 0u8;
            for p in (0..5).rev() {
                let q = w
                    .get(b * BLOCK5 + 64 * p + j)
                    .map_or(1u8, |&x| (x.clamp(-1, 1) + 1) as u8);
                v = v * 3 + q;
            }
            *byte = v;
        }
    }
}

/// Inverse of [`pack_row`]: the first `k` ternary values of a packed row.
pub fn unpack_row(packed: &[u8], k: usize) -> Vec<i8> {
    let mut out = vec![0i8; k];
    for (b, block) in packed.chunks_exact(BLOCK_BYTES).enumerate() {
        for (j, &byte) in block.iter().enumerate() {
            for (p, &u) in DIGITS[usize::from(byte)].iter().enumerate() {
                if let Some(slot) = out.get_mut(b * BLOCK5 + 64 * p + j) {
                    *slot = u as i8 - 1;
                }
            }
        }
    }
    out
}

/// Portable GEMM on raw codes (see `super::ternary_gemm`): each block of each row is decoded
/// once into a 320-byte digit buffer, then dotted with every token.
pub(super) fn gemm_portable(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    let row_bytes = k_pad / 5;
    let blocks = k_pad / BLOCK5;
    let mut u = [0u8; BLOCK5];
    let mut acc = vec![0i32; n_tok];
    for r in 0..n_rows {
        acc.fill(0);
        for blk in 0..blocks {
            let off = tiled_offset(n_rows, row_bytes, r, blk);
            for (j, &byte) in w[off..off + BLOCK_BYTES].iter().enumerate() {
                for (p, &d) in DIGITS[usize::from(byte)].iter().enumerate() {
                    u[64 * p + j] = d;
                }
            }
            for (t, a) in acc.iter_mut().enumerate() {
                let xb = &x[t * k_pad + blk * BLOCK5..t * k_pad + (blk + 1) * BLOCK5];
                // |Σ| ≤ 320·2·128: no overflow in i32.
                *a += u
                    .iter()
                    .zip(xb)
                    .map(|(&c, &v)| i32::from(c) * i32::from(v))
                    .sum::<i32>();
            }
        }
        for (t, &a) in acc.iter().enumerate() {
            out[t * n_rows + r] = a;
        }
    }
}
