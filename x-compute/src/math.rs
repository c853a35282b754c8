//! Exact integer arithmetic for consensus formulas: `a · b / c` through a 256-bit intermediate.
//!
//! Reward shares multiply a pool (u128) by a weight (u128) before dividing; the product
//! needs up to 256 bits. Instead of a bignum crate the product is kept as two u128 halves
//! and divided by shift-and-subtract long division: 128 iterations, exact floor, no floats.

use crate::error::{ComputeError, ComputeResult};

/// Parts per million: the fixed-point unit for every ratio (1_000_000 = 1.0).
pub const PPM: u64 = 1_000_000;

const LOW64: u128 = u64::MAX as u128;

/// The full 256-bit product `a · b` as `(high, low)` halves.
// Every operation below is on 64-bit halves widened to u128 or on values shown to fit:
// overflow is impossible, so wrapping ops state the arithmetic without branches.
pub(crate) fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & LOW64);
    let (b1, b0) = (b >> 64, b & LOW64);
    // Each partial product is < 2^128.
    let p00 = a0.wrapping_mul(b0);
    let p01 = a0.wrapping_mul(b1);
    let p10 = a1.wrapping_mul(b0);
    let p11 = a1.wrapping_mul(b1);
    // mid < 3 · 2^64: cannot overflow.
    let mid = (p00 >> 64)
        .wrapping_add(p01 & LOW64)
        .wrapping_add(p10 & LOW64);
    let low = (p00 & LOW64) | (mid << 64);
    // The high half of a 256-bit product of two u128s is < 2^128: cannot overflow.
    let high = p11
        .wrapping_add(p01 >> 64)
        .wrapping_add(p10 >> 64)
        .wrapping_add(mid >> 64);
    (high, low)
}

/// `(high·2^128 + low) / c` as `(quotient, remainder)`; refuses a zero divisor and a
/// quotient that does not fit in u128 (exactly when `high >= c`).
pub(crate) fn div_wide(high: u128, low: u128, c: u128) -> ComputeResult<(u128, u128)> {
    if c == 0 {
        return Err(ComputeError::DivisionByZero(
            "expected a non-zero divisor, got 0".into(),
        ));
    }
    if high == 0 {
        // checked_* cannot fail with c > 0; they keep the lint honest.
        let q = low.checked_div(c).unwrap_or(0);
        let r = low.checked_rem(c).unwrap_or(0);
        return Ok((q, r));
    }
    if high >= c {
        return Err(ComputeError::Overflow(format!(
            "expected a quotient below 2^128, got one of at least 2^128 (high half {high} >= divisor {c})"
        )));
    }
    // Invariant: rem < c before each step, so 2·rem + 1 < 2c and one subtraction suffices.
    let mut rem = high;
    let mut quot: u128 = 0;
    for i in (0..128u32).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((low >> i) & 1);
        quot <<= 1;
        if carry == 1 || rem >= c {
            // With carry set the true value is 2^128 + rem >= c; wrapping_sub yields
            // the exact difference, which is < c and so fits.
            rem = rem.wrapping_sub(c);
            quot |= 1;
        }
    }
    Ok((quot, rem))
}

/// `floor(a · b / c)`, exact for all u128 inputs; errors on `c == 0` or a result above u128.
pub fn mul_div(a: u128, b: u128, c: u128) -> ComputeResult<u128> {
    let (high, low) = mul_wide(a, b);
    div_wide(high, low, c).map(|(q, _)| q)
}

/// `floor(a · b / c)` and the remainder `(a · b) mod c`, for callers that carry the fraction.
pub(crate) fn mul_div_rem(a: u128, b: u128, c: u128) -> ComputeResult<(u128, u128)> {
    let (high, low) = mul_wide(a, b);
    div_wide(high, low, c)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_cases() {
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), Ok(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 3, 3), Ok(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 2, 3), Ok(u128::MAX / 3 * 2));
        assert_eq!(mul_div(0, u128::MAX, 1), Ok(0));
        assert_eq!(mul_div(7, 3, 2), Ok(10));
        assert!(matches!(
            mul_div(1, 1, 0),
            Err(ComputeError::DivisionByZero(_))
        ));
        assert!(matches!(
            mul_div(u128::MAX, 2, 1),
            Err(ComputeError::Overflow(_))
        ));
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_checked_u128_when_the_product_fits(a in any::<u128>(), b in any::<u128>(), c in 1u128..) {
            if let Some(p) = a.checked_mul(b) {
                prop_assert_eq!(mul_div(a, b, c), Ok(p / c));
                prop_assert_eq!(mul_div_rem(a, b, c), Ok((p / c, p % c)));
            }
        }

        #[test]
        fn matches_checked_u128_on_small_operands(a in any::<u64>(), b in any::<u64>(), c in 1u128..) {
            let p = u128::from(a) * u128::from(b);
            prop_assert_eq!(mul_div(a.into(), b.into(), c), Ok(p / c));
        }

        #[test]
        fn quotient_and_remainder_reconstruct_the_product(a in any::<u128>(), b in any::<u128>(), c in 1u128..) {
            // q·c + r == a·b, checked in 256 bits: (q·c) wide plus r must equal mul_wide(a, b).
            if let Ok((q, r)) = mul_div_rem(a, b, c) {
                prop_assert!(r < c);
                let (h, l) = mul_wide(q, c);
                let (l2, carry) = l.overflowing_add(r);
                let h2 = h + u128::from(carry);
                prop_assert_eq!((h2, l2), mul_wide(a, b));
            } else {
                // Refused only when the quotient really exceeds u128: high half >= c.
                prop_assert!(mul_wide(a, b).0 >= c);
            }
        }

        #[test]
        fn dividing_by_one_factor_gives_the_other(a in any::<u128>(), b in 1u128..) {
            prop_assert_eq!(mul_div(a, b, b), Ok(a));
        }
    }
}
