//! The requantization epilogue of the int8 kernels: qcc's one rounding policy
//! ([`qcc_ir::requant::FixedPoint`]) in CLIF, bit for bit.
//!
//! Per output channel the kernels read a 32-byte record made at compile time
//! ([`requant_records`]): the zero-point-compensated bias and everything the fixed point
//! `(m, n)` needs, so the run-time code has no branches on `n`:
//!
//! ```text
//! offset  0: i32 bias'        bias − zx·Σw (the accumulator's missing term, see `super`)
//!         4: i32 m            multiplier in [2^30, 2^31)
//!         8: i32 shift_left   32 − n when n < 32, else 0
//!        12: i32 shift_right  n − 32 when n ≥ 32, else 0
//!        16: i64 round        2^(n−1)
//!        24: i32 bound        pre-clamp of the accumulator (n < 32), else i32::MAX
//!        28: i32 n
//! ```
//!
//! The vector form computes `X = (acc + bias')·m + 2^(n−1)` exactly in i64 lanes (`pmuldq`),
//! and `floor(X / 2^n)` as the high 32 bits of `X · 2^shift_left`, arithmetically shifted
//! right by `shift_right`: for `n ≥ 32` that is `floor(floor(X / 2^32) / 2^(n−32))`, exact,
//! and `|X| < 2^62` keeps the high half inside i32. For `n < 32` the multiplier is at least
//! `2^(30−n)`, so any `|acc| ≥ bound = 2^max(0, n−20)` scales to at least 1024 in magnitude
//! and saturates whatever the zero point (|zp| ≤ 255): clamping the accumulator to
//! `[−bound, bound]` first changes no output and keeps `X · 2^(32−n)` below 2^63.
//! Then the zero point, the clamp to the output type intersected with a fused ReLU/ReLU6
//! range, and the narrowing (exact after the clamp).

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::requant::FixedPoint;
use qcc_ir::DType;

use super::microkernel::{little, shuffle_mask};
use crate::lower::kernel::flags;

/// Bytes of one requantization record.
pub const RECORD_BYTES: usize = 32;

/// Shifts below this need the accumulator pre-clamp and the left shift (multipliers ≥ 1/2).
const HIGH_HALF_SHIFT: u32 = 32;

/// The quantization of an int8 node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutputQuant {
    /// `DType::U8` or `DType::I8`.
    pub dtype: DType,
    pub zero_point: i32,
    /// Inclusive bounds in the output's quantized domain, for a fused activation (ReLU is
    /// `(zp, 255)` for u8, ReLU6 `(zp, zp + round(6 / scale))`); intersected with the type's
    /// range.
    pub clamp: Option<(i32, i32)>,
}

impl OutputQuant {
    /// The output's `(lo, hi)` after the clamp, checked.
    pub fn bounds(&self) -> Result<(i32, i32), String> {
        let (lo, hi) = match self.dtype {
            DType::U8 => (0, 255),
            DType::I8 => (-128, 127),
            other => return Err(format!("output type {other:?} is not u8 or i8")),
        };
        if !(lo..=hi).contains(&self.zero_point) {
            return Err(format!(
                "output zero point {} is outside {:?}",
                self.zero_point, self.dtype
            ));
        }
        let (lo, hi) = match self.clamp {
            Some((a, b)) => (lo.max(a), hi.min(b)),
            None => (lo, hi),
        };
        if lo > hi {
            return Err(format!(
                "clamp {:?} leaves no {:?} value",
                self.clamp, self.dtype
            ));
        }
        Ok((lo, hi))
    }
}

/// The epilogue as baked into a kernel: output signedness, zero point, bounds, and whether
/// any record has `n < 32` (only then is the pre-clamp and left-shift code emitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutputStage {
    pub signed: bool,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
    pub left_shift: bool,
}

/// A signed integer for symbol names: `m5` for −5.
pub(crate) fn signed_name(value: i32) -> String {
    if value < 0 {
        format!("m{}", value.unsigned_abs())
    } else {
        value.to_string()
    }
}

impl OutputStage {
    pub fn new(output: &OutputQuant, requant: &[FixedPoint]) -> Result<OutputStage, String> {
        let (lo, hi) = output.bounds()?;
        Ok(OutputStage {
            signed: output.dtype == DType::I8,
            zero_point: output.zero_point,
            lo,
            hi,
            left_shift: requant.iter().any(|f| f.shift() < HIGH_HALF_SHIFT),
        })
    }

    /// `u8z3_3_255` / `i8zm1_m128_127_lsh`.
    pub fn name(&self) -> String {
        format!(
            "{}z{}_{}_{}{}",
            if self.signed { "i8" } else { "u8" },
            signed_name(self.zero_point),
            signed_name(self.lo),
            signed_name(self.hi),
            if self.left_shift { "_lsh" } else { "" }
        )
    }

    /// One row's record, splatted for [`Self::requantize_vector`].
    pub(crate) fn load_row(&self, b: &mut FunctionBuilder, record: Value) -> RowRequant {
        let splat_i32 = |b: &mut FunctionBuilder, offset: i32| {
            let scalar = b.ins().load(types::I32, flags(), record, offset);
            b.ins().splat(types::I32X4, scalar)
        };
        let constant = |b: &mut FunctionBuilder, value: i32| {
            let scalar = b.ins().iconst(types::I32, i64::from(value));
            b.ins().splat(types::I32X4, scalar)
        };
        let round = b.ins().load(types::I64, flags(), record, 16);
        let bound = self.left_shift.then(|| {
            let bound = b.ins().load(types::I32, flags(), record, 24);
            let negative = b.ins().ineg(bound);
            (
                b.ins().splat(types::I32X4, bound),
                b.ins().splat(types::I32X4, negative),
            )
        });
        RowRequant {
            bias: splat_i32(b, 0),
            multiplier: splat_i32(b, 4),
            shift_left: b.ins().load(types::I32, flags(), record, 8),
            shift_right: b.ins().load(types::I32, flags(), record, 12),
            round: b.ins().splat(types::I64X2, round),
            bound,
            zero_point: constant(b, self.zero_point),
            lo: constant(b, self.lo),
            hi: constant(b, self.hi),
        }
    }

    /// Four accumulators of one row plus the row's bias (wrapping).
    pub(crate) fn add_bias(&self, b: &mut FunctionBuilder, row: &RowRequant, acc: Value) -> Value {
        b.ins().iadd(acc, row.bias)
    }

    /// Four accumulators of one row, bias included ([`Self::add_bias`]) → four clamped
    /// outputs in i32 lanes (module docs).
    pub(crate) fn requantize_vector(
        &self,
        b: &mut FunctionBuilder,
        row: &RowRequant,
        biased: Value,
    ) -> Value {
        let mut x = biased;
        if let Some((bound, negative)) = row.bound {
            x = b.ins().smax(x, negative);
            x = b.ins().smin(x, bound);
        }
        let halves = [
            (b.ins().swiden_low(x), b.ins().swiden_low(row.multiplier)),
            (b.ins().swiden_high(x), b.ins().swiden_high(row.multiplier)),
        ];
        let halves: Vec<Value> = halves
            .into_iter()
            .map(|(x, m)| {
                let product = b.ins().imul(x, m);
                let rounded = b.ins().iadd(product, row.round);
                let rounded = if self.left_shift {
                    b.ins().ishl(rounded, row.shift_left)
                } else {
                    rounded
                };
                b.ins().bitcast(types::I8X16, little(), rounded)
            })
            .collect();
        // The high i32 of each i64 lane: lanes 1 and 3 of both halves (one `shufps`).
        let mask = shuffle_mask(
            b,
            [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31],
        );
        let high = b.ins().shuffle(halves[0], halves[1], mask);
        let high = b.ins().bitcast(types::I32X4, little(), high);
        let scaled = b.ins().sshr(high, row.shift_right);
        let y = b.ins().iadd(scaled, row.zero_point);
        let y = b.ins().smax(y, row.lo);
        b.ins().smin(y, row.hi)
    }

    /// One accumulator with the record at `record`, in scalar i64 arithmetic (the policy
    /// exactly as written): returns the clamped output as an i64.
    pub(crate) fn requantize_scalar(
        &self,
        b: &mut FunctionBuilder,
        record: Value,
        acc: Value,
    ) -> Value {
        let bias = b.ins().load(types::I32, flags(), record, 0);
        let multiplier = b.ins().sload32(flags(), record, 4);
        let round = b.ins().load(types::I64, flags(), record, 16);
        let shift = b.ins().load(types::I32, flags(), record, 28);
        let x = b.ins().iadd(acc, bias);
        let x = b.ins().sextend(types::I64, x);
        let product = b.ins().imul(x, multiplier);
        let rounded = b.ins().iadd(product, round);
        let scaled = b.ins().sshr(rounded, shift);
        let y = b.ins().iadd_imm_s(scaled, i64::from(self.zero_point));
        let lo = b.ins().iconst(types::I64, i64::from(self.lo));
        let hi = b.ins().iconst(types::I64, i64::from(self.hi));
        let y = b.ins().smax(y, lo);
        b.ins().smin(y, hi)
    }
}

/// One row's requantization constants as CLIF values.
pub(crate) struct RowRequant {
    bias: Value,
    multiplier: Value,
    shift_left: Value,
    shift_right: Value,
    round: Value,
    /// `(bound, −bound)` splatted, when the kernel pre-clamps.
    bound: Option<(Value, Value)>,
    zero_point: Value,
    lo: Value,
    hi: Value,
}

/// The records of `channels` outputs: `bias'[c]` (already compensated) and `fixed[c]`, or one
/// fixed point for all.
pub fn requant_records(bias: &[i32], fixed: &[FixedPoint]) -> Result<Vec<u8>, String> {
    if fixed.len() != bias.len() && fixed.len() != 1 {
        return Err(format!(
            "{} requantization multipliers for {} output channels (expected 1 or {})",
            fixed.len(),
            bias.len(),
            bias.len()
        ));
    }
    let mut records = Vec::with_capacity(bias.len() * RECORD_BYTES);
    for (c, &bias) in bias.iter().enumerate() {
        let fixed = fixed[if fixed.len() == 1 { 0 } else { c }];
        let n = fixed.shift();
        let (shift_left, shift_right, bound) = if n < HIGH_HALF_SHIFT {
            (HIGH_HALF_SHIFT - n, 0, 1i32 << n.saturating_sub(20))
        } else {
            (0, n - HIGH_HALF_SHIFT, i32::MAX)
        };
        records.extend(bias.to_le_bytes());
        records.extend(fixed.multiplier().to_le_bytes());
        records.extend(shift_left.to_le_bytes());
        records.extend(shift_right.to_le_bytes());
        records.extend((1i64 << (n - 1)).to_le_bytes());
        records.extend(bound.to_le_bytes());
        records.extend(n.to_le_bytes());
    }
    Ok(records)
}
