//! Integer-only requantization: qcc's one rounding policy for int8 arithmetic.
//!
//! An int8 convolution or matrix product accumulates in i32; its result must be brought back
//! to the output's scale: `q_y = zp_y + acc · M` with the real multiplier
//! `M = s_x · s_w / s_y`. qcc never does that in floating point. `M` is represented once, at
//! compile time, as a fixed-point multiplier ([`FixedPoint`]): an integer `m` in
//! `[2^30, 2^31)` and a right shift `n`, with `M ≈ m · 2^-n`. At run time
//!
//! ```text
//! q_y = saturate(zp_y + ((acc · m + 2^(n-1)) >> n))      (64-bit product, arithmetic shift)
//! ```
//!
//! that is, **one** rounding, half toward +∞, of the exact product (no double rounding as in
//! gemmlowp's high-mul-then-shift). The same function is the interpreter's semantics and the
//! contract of every compiled kernel on every target, so compiled int8 code equals the
//! interpreter bit for bit. A power-of-two scale ratio `2^-k` is `m = 2^30, n = 30 + k`: the
//! multiply is then exact and the policy is a rounding shift.

use crate::dtype::DType;

/// The smallest and largest right shift a [`FixedPoint`] may have: `n ≥ 1` keeps the rounding
/// term an integer; `n ≤ 62` keeps `acc · m + 2^(n-1)` inside i64 for every i32 `acc`.
pub const MIN_SHIFT: u32 = 1;
pub const MAX_SHIFT: u32 = 62;

/// `M ≈ multiplier · 2^-shift`, `multiplier` in `[2^30, 2^31)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedPoint {
    multiplier: i32,
    shift: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FixedPointError {
    #[error("requantization multiplier {0} is not a finite positive number")]
    NotPositive(f64),
    #[error(
        "requantization multiplier {0:e} is outside what a 31-bit multiplier and a shift of \
         {MIN_SHIFT}..={MAX_SHIFT} can represent"
    )]
    OutOfRange(f64),
}

impl FixedPoint {
    /// The nearest fixed-point representation of `real` (> 0): `m = round(real · 2^n)` with
    /// the `n` that puts `m` in `[2^30, 2^31)`; relative error below `2^-31`.
    pub fn from_real(real: f64) -> Result<FixedPoint, FixedPointError> {
        if !(real.is_finite() && real > 0.0) {
            return Err(FixedPointError::NotPositive(real));
        }
        // real = f · 2^e with f in [0.5, 1): m = f · 2^31, n = 31 - e.
        let mut e = real.log2().floor() as i32 + 1;
        let mut f = real / 2f64.powi(e);
        // log2 may be off by one at the edges of a binade.
        if f >= 1.0 {
            f /= 2.0;
            e += 1;
        } else if f < 0.5 {
            f *= 2.0;
            e -= 1;
        }
        let mut m = (f * 2f64.powi(31)).round() as i64;
        let mut n = 31 - e;
        if m == 1 << 31 {
            // Rounded up to the next binade.
            m = 1 << 30;
            n -= 1;
        }
        if n < MIN_SHIFT as i32 || n > MAX_SHIFT as i32 {
            return Err(FixedPointError::OutOfRange(real));
        }
        Ok(FixedPoint {
            multiplier: m as i32,
            shift: n as u32,
        })
    }

    /// The exact power of two `2^-k` (for power-of-two scale formats).
    pub fn power_of_two(k: i32) -> Result<FixedPoint, FixedPointError> {
        let n = 30 + k;
        if n < MIN_SHIFT as i32 || n > MAX_SHIFT as i32 {
            return Err(FixedPointError::OutOfRange(2f64.powi(-k)));
        }
        Ok(FixedPoint {
            multiplier: 1 << 30,
            shift: n as u32,
        })
    }

    pub fn multiplier(self) -> i32 {
        self.multiplier
    }

    pub fn shift(self) -> u32 {
        self.shift
    }

    /// The real number this represents.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 / 2f64.powi(self.shift as i32)
    }

    /// `(acc · m + 2^(n-1)) >> n`: the scaled accumulator, rounded half toward +∞.
    pub fn apply(self, acc: i32) -> i64 {
        let product = acc as i64 * self.multiplier as i64;
        (product + (1i64 << (self.shift - 1))) >> self.shift
    }

    /// The policy in full: scale, round, add the zero point, saturate to `dtype` (i8 or u8;
    /// any other type saturates to i32).
    pub fn requantize(self, acc: i32, zero_point: i32, dtype: DType) -> i32 {
        let (lo, hi) = match dtype {
            DType::I8 => (i8::MIN as i64, i8::MAX as i64),
            DType::U8 => (0, u8::MAX as i64),
            _ => (i32::MIN as i64, i32::MAX as i64),
        };
        (self.apply(acc) + zero_point as i64).clamp(lo, hi) as i32
    }
}

/// The multipliers of an int8 addition ([`crate::op::Op::QuantizedAdd`]):
/// `r_a = s_a / s_y` and `r_b = s_b / s_y` as 15-bit integers over one shared shift,
/// so that the sum of the two scaled inputs is rounded **once**:
///
/// ```text
/// q_y = saturate(zp_y + ((a_m·(a − zp_a) + b_m·(b − zp_b) + 2^(n-1)) >> n))
/// ```
///
/// (no rounding term when `n = 0`). `n` is the largest shift in `0..=30` with both
/// multipliers below 2^15, so every product fits in i32 (`|a − zp_a| ≤ 255`): the kernels use
/// 32-bit lanes. The relative error of each ratio is below 2^-14 of the larger one, far under
/// one output step for the ranges 8-bit tensors have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddMultipliers {
    pub a: i32,
    pub b: i32,
    pub shift: u32,
}

/// The largest multiplier an [`AddMultipliers`] may hold, exclusive.
pub const ADD_MULTIPLIER_LIMIT: i64 = 1 << 15;

impl AddMultipliers {
    /// The multipliers for real ratios `r_a`, `r_b` (finite, ≥ 0, not both 0), each rounded
    /// to nearest (half away from zero) at the shared shift.
    pub fn from_ratios(r_a: f64, r_b: f64) -> Result<AddMultipliers, FixedPointError> {
        for r in [r_a, r_b] {
            if !(r.is_finite() && r >= 0.0) {
                return Err(FixedPointError::NotPositive(r));
            }
        }
        let largest = r_a.max(r_b);
        if largest <= 0.0 {
            return Err(FixedPointError::NotPositive(largest));
        }
        let fits = |n: u32| {
            let scale = 2f64.powi(n as i32);
            ((r_a * scale).round() as i64) < ADD_MULTIPLIER_LIMIT
                && ((r_b * scale).round() as i64) < ADD_MULTIPLIER_LIMIT
        };
        let shift = (0..=30u32)
            .rev()
            .find(|&n| fits(n))
            .ok_or(FixedPointError::OutOfRange(largest))?;
        let scale = 2f64.powi(shift as i32);
        Ok(AddMultipliers {
            a: (r_a * scale).round() as i32,
            b: (r_b * scale).round() as i32,
            shift,
        })
    }

    /// `(a_m·da + b_m·db + 2^(n-1)) >> n` for centred inputs `da = a − zp_a`, `db = b − zp_b`
    /// (each within ±255: the sum then fits in i32).
    pub fn apply(self, da: i32, db: i32) -> i32 {
        let round = if self.shift == 0 {
            0
        } else {
            1i32 << (self.shift - 1)
        };
        (self.a * da + self.b * db + round) >> self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representation_is_normalised_and_close() {
        for &real in &[
            1e-9,
            3.1e-5,
            0.0039,
            0.25,
            0.5,
            0.7,
            0.999_999_999_9,
            1.0,
            1.5,
            123.0,
        ] {
            let fp = FixedPoint::from_real(real).unwrap();
            assert!(
                (1 << 30..1i64 << 31).contains(&(fp.multiplier() as i64)),
                "{real}: {fp:?}"
            );
            let error = (fp.to_real() - real).abs() / real;
            assert!(error <= 2f64.powi(-31), "{real}: relative error {error:e}");
        }
    }

    #[test]
    fn bad_multipliers_are_errors() {
        for real in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                FixedPoint::from_real(real),
                Err(FixedPointError::NotPositive(_))
            ));
        }
        assert!(matches!(
            FixedPoint::from_real(1e30),
            Err(FixedPointError::OutOfRange(_))
        ));
    }

    #[test]
    fn rounding_is_half_toward_positive_infinity() {
        // M = 1/2 exactly: x/2 with ties going up.
        let half = FixedPoint::power_of_two(1).unwrap();
        let cases = [
            (3, 2),
            (1, 1),
            (-1, 0),
            (-3, -1),
            (5, 3),
            (-5, -2),
            (4, 2),
            (0, 0),
        ];
        for (acc, want) in cases {
            assert_eq!(half.apply(acc), want, "{acc} / 2");
        }
    }

    #[test]
    fn one_rounding_of_the_exact_product() {
        // Against exact rational arithmetic for many multipliers and accumulators.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let real = 2f64.powf(-((state % 2000) as f64) / 100.0);
            let acc = (state >> 20) as i32;
            let fp = FixedPoint::from_real(real).unwrap();
            let exact = acc as i128 * fp.multiplier() as i128;
            let denominator = 1i128 << fp.shift();
            // floor((exact + d/2) / d) with floor division.
            let want = (exact + denominator / 2).div_euclid(denominator) as i64;
            assert_eq!(fp.apply(acc), want, "acc {acc}, {fp:?}");
        }
    }

    #[test]
    fn extremes_do_not_overflow_and_saturate() {
        let fp = FixedPoint::from_real(0.999_999).unwrap();
        assert_eq!(fp.requantize(i32::MAX, 0, DType::I8), 127);
        assert_eq!(fp.requantize(i32::MIN, 0, DType::I8), -128);
        assert_eq!(fp.requantize(i32::MIN, 0, DType::U8), 0);
        assert_eq!(fp.requantize(200, 100, DType::U8), 255);
        let tiny = FixedPoint::from_real(1e-9).unwrap();
        assert_eq!(tiny.apply(i32::MAX), 2);
        assert_eq!(tiny.apply(i32::MIN), -2);
    }
}
