//! The optional epilogue terms of the int8 kernels, between the bias and the requantization:
//! the weight-zero-point correction and the residual input of a convolution.
//!
//! **Weight zero points.** With per-channel weight zero points `zw[c]`,
//! `Σ (x − zx)(w − zw[c]) = Σ (x − zx)·w − zw[c]·Σ x + zw[c]·K·zx`. The first term is what
//! the kernels compute (the `zx·Σ w` part is in the compensated bias, see `super`), the
//! constant `zw[c]·K·zx` joins the bias at compile time (`weight_zero_point_bias`), and the
//! run-time sums of the input bytes, `Σ x` per output pixel (convolution, over the packed
//! panel, whose padding taps and channels hold `zx` and so need `K` = the packed reduction)
//! or per row of A (matrix product), are computed by `super::rowsum` and subtracted,
//! multiplied by `zw[c]`, in the epilogue. Everything wraps as the i32 accumulator does,
//! which is exact modulo 2^32 like the interpreter's wrapping sum.
//!
//! **Residual.** A convolution may add a u8 tensor `r` of the output's shape into its
//! accumulator before requantization: `acc = sat_i32(acc + R[c].apply(r − zp_r))`
//! ([`qcc_ir::op::Op::QuantizedConv`]). `R[c].apply(d)` is computed exactly in i64 lanes
//! the way `super::requant` computes the output multiplier: `X = d·m + 2^(n−1)`, then the
//! high 32 bits of `X·2^(32−n)` (`n < 32`) or of `X` shifted right by `n − 32`. That is
//! exact when every `R[c].apply(d)` fits i32 for the `d` the zero point allows, which
//! [`epilogue_records`] checks (a residual multiplier of `2^23` or more may not: such a
//! convolution is refused with [`KernelError::Unsupported`](crate::lower::KernelError)).
//! The saturating i32 sum is the wrapping sum with the overflow detected from the signs.
//!
//! Per output channel the kernels read a second 32-byte record:
//!
//! ```text
//! offset  0: i32 zw            weight zero point (0 without)
//!         4: i32 m             residual multiplier (0 without a residual)
//!         8: i32 shift_left    32 − n when n < 32, else 0
//!        12: i32 shift_right   n − 32 when n ≥ 32, else 0
//!        16: i64 round         2^(n−1)
//!        24: 8 bytes of padding
//! ```

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::requant::FixedPoint;

use super::microkernel::{little, shuffle_mask};
use crate::lower::kernel::flags;

/// Bytes of one epilogue record.
pub const EXTRA_RECORD_BYTES: usize = 32;

/// The residual input of an int8 convolution: node input 3, u8 in the output's NCHW shape.
#[derive(Clone, Copy, Debug)]
pub struct ResidualQuant<'a> {
    /// The residual's zero point, 0..=255 (an i8 residual is stored as `q + 128` with zero
    /// point `zp + 128`).
    pub zero_point: i32,
    /// `qcc_ir::op::residual_multipliers(x, w, r)`: one per output channel or one for all.
    pub multipliers: &'a [FixedPoint],
}

/// The epilogue terms baked into a kernel (both spelled in its name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extras {
    /// Subtract `zw[c]·Σ x` (the sums computed by `super::rowsum`).
    pub weight_zero_points: bool,
    /// The residual's zero point, when the kernel adds a residual.
    pub residual: Option<u8>,
}

impl Extras {
    pub fn any(&self) -> bool {
        self.weight_zero_points || self.residual.is_some()
    }

    /// `_zw`, `_r128`, `_zw_r3` or nothing.
    pub fn name(&self) -> String {
        let mut name = String::new();
        if self.weight_zero_points {
            name.push_str("_zw");
        }
        if let Some(zero_point) = self.residual {
            name.push_str(&format!("_r{zero_point}"));
        }
        name
    }

    /// One row's terms (record at `record`) as CLIF values, splatted for vectors.
    pub(crate) fn load_row(&self, b: &mut FunctionBuilder, record: Value) -> RowExtras {
        let splat_i32 = |b: &mut FunctionBuilder, offset: i32| {
            let scalar = b.ins().load(types::I32, flags(), record, offset);
            b.ins().splat(types::I32X4, scalar)
        };
        let weight_zero_point = self.weight_zero_points.then(|| splat_i32(b, 0));
        let residual = self.residual.map(|zero_point| {
            let round = b.ins().load(types::I64, flags(), record, 16);
            let zero_point = b.ins().iconst(types::I32, i64::from(zero_point));
            ResidualRow {
                multiplier: splat_i32(b, 4),
                shift_left: b.ins().load(types::I32, flags(), record, 8),
                shift_right: b.ins().load(types::I32, flags(), record, 12),
                round: b.ins().splat(types::I64X2, round),
                zero_point: b.ins().splat(types::I32X4, zero_point),
            }
        });
        RowExtras {
            weight_zero_point,
            residual,
        }
    }
}

/// The residual constants of one row.
pub(crate) struct ResidualRow {
    multiplier: Value,
    shift_left: Value,
    shift_right: Value,
    round: Value,
    zero_point: Value,
}

/// One row's epilogue terms as CLIF values.
pub(crate) struct RowExtras {
    weight_zero_point: Option<Value>,
    residual: Option<ResidualRow>,
}

impl RowExtras {
    /// `x − zw·sums` (wrapping): `sums` holds the input sums of the four columns.
    pub(crate) fn subtract_sums(&self, b: &mut FunctionBuilder, x: Value, sums: Value) -> Value {
        match self.weight_zero_point {
            Some(zw) => {
                let correction = b.ins().imul(zw, sums);
                b.ins().isub(x, correction)
            }
            None => x,
        }
    }

    /// `sat_i32(x + R.apply(r − zp_r))` for the four residual bytes at `source + offset`.
    pub(crate) fn add_residual(
        &self,
        b: &mut FunctionBuilder,
        x: Value,
        source: Value,
        offset: i32,
    ) -> Value {
        let Some(row) = &self.residual else {
            return x;
        };
        let bytes = b.ins().load(types::I32, flags(), source, offset);
        let bytes = b.ins().splat(types::I32X4, bytes);
        let bytes = b.ins().bitcast(types::I8X16, little(), bytes);
        let words = b.ins().uwiden_low(bytes);
        let values = b.ins().uwiden_low(words);
        let d = b.ins().isub(values, row.zero_point);
        let halves: Vec<Value> = [
            (b.ins().swiden_low(d), b.ins().swiden_low(row.multiplier)),
            (b.ins().swiden_high(d), b.ins().swiden_high(row.multiplier)),
        ]
        .into_iter()
        .map(|(d, m)| {
            let product = b.ins().imul(d, m);
            let rounded = b.ins().iadd(product, row.round);
            let shifted = b.ins().ishl(rounded, row.shift_left);
            b.ins().bitcast(types::I8X16, little(), shifted)
        })
        .collect();
        // The high i32 of each i64 lane, as in `OutputStage::requantize_vector`.
        let mask = shuffle_mask(
            b,
            [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31],
        );
        let high = b.ins().shuffle(halves[0], halves[1], mask);
        let high = b.ins().bitcast(types::I32X4, little(), high);
        let term = b.ins().sshr(high, row.shift_right);
        saturating_add(b, x, term)
    }
}

/// `sat_i32(x + y)` per lane: the wrapping sum, replaced by `i32::MIN`/`i32::MAX` (the sign
/// of `x`) where `x` and `y` share a sign the sum does not have.
fn saturating_add(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let sum = b.ins().iadd(x, y);
    let x_changed = b.ins().bxor(x, sum);
    let y_changed = b.ins().bxor(y, sum);
    let overflow = b.ins().band(x_changed, y_changed);
    let sign_bits = b.ins().iconst(types::I32, 31);
    let mask = b.ins().sshr(overflow, sign_bits);
    let sign = b.ins().sshr(x, sign_bits);
    let max = b.ins().iconst(types::I32, i64::from(i32::MAX));
    let max = b.ins().splat(types::I32X4, max);
    let saturated = b.ins().bxor(sign, max);
    b.ins().bitselect(mask, saturated, sum)
}

/// `zw[c]·K·zx`, added (wrapping) to each channel's compensated bias.
pub(crate) fn weight_zero_point_bias(
    bias: &mut [i32],
    weight_zero_points: &[i32],
    reduction: usize,
    input_zero_point: u8,
) {
    let per_zero_point = (reduction as i32).wrapping_mul(i32::from(input_zero_point));
    for (c, bias) in bias.iter_mut().enumerate() {
        let zw = weight_zero_points[if weight_zero_points.len() == 1 { 0 } else { c }];
        *bias = bias.wrapping_add(zw.wrapping_mul(per_zero_point));
    }
}

/// The weight zero points when any is nonzero (all zero is the plain kernel), checked: one
/// or `channels` values in −128..=127.
pub(crate) fn nonzero_weight_zero_points(
    weight_zero_points: Option<&[i32]>,
    channels: usize,
) -> Result<Option<&[i32]>, String> {
    let Some(values) = weight_zero_points else {
        return Ok(None);
    };
    if values.len() != 1 && values.len() != channels {
        return Err(format!(
            "{} weight zero points for {channels} output channels (expected 1 or {channels})",
            values.len()
        ));
    }
    if let Some(bad) = values.iter().find(|v| !(-128..=127).contains(*v)) {
        return Err(format!("weight zero point {bad} is not an s8 value"));
    }
    Ok(values.iter().any(|&v| v != 0).then_some(values))
}

/// The checked residual zero point.
pub(crate) fn residual_zero_point(residual: &ResidualQuant) -> Result<u8, String> {
    u8::try_from(residual.zero_point).map_err(|_| {
        format!(
            "residual zero point {} is not a u8 value",
            residual.zero_point
        )
    })
}

/// The epilogue records of `channels` outputs (layout in the module docs). Refuses a
/// residual multiplier whose products with `r − zp_r` leave i32 (see the module docs).
pub fn epilogue_records(
    channels: usize,
    weight_zero_points: Option<&[i32]>,
    residual: Option<&ResidualQuant>,
) -> Result<Vec<u8>, String> {
    let pick = |values_len: usize, c: usize| if values_len == 1 { 0 } else { c };
    if let Some(residual) = residual {
        let count = residual.multipliers.len();
        if count != 1 && count != channels {
            return Err(format!(
                "{count} residual multipliers for {channels} output channels \
                 (expected 1 or {channels})"
            ));
        }
    }
    let mut records = Vec::with_capacity(channels * EXTRA_RECORD_BYTES);
    for c in 0..channels {
        let zw = weight_zero_points.map_or(0, |values| values[pick(values.len(), c)]);
        records.extend(zw.to_le_bytes());
        match residual {
            Some(residual) => {
                let zero_point = residual_zero_point(residual)?;
                let fixed = residual.multipliers[pick(residual.multipliers.len(), c)];
                let lowest = fixed.apply(-i32::from(zero_point));
                let highest = fixed.apply(255 - i32::from(zero_point));
                if lowest < i64::from(i32::MIN) || highest > i64::from(i32::MAX) {
                    return Err(format!(
                        "residual multiplier {:e} of output channel {c} scales r − zp_r \
                         (zero point {zero_point}) to [{lowest}, {highest}], beyond i32: the \
                         vector epilogue needs every scaled residual to fit 32 bits",
                        fixed.to_real()
                    ));
                }
                let n = fixed.shift();
                let (shift_left, shift_right) = if n < 32 { (32 - n, 0) } else { (0, n - 32) };
                records.extend(fixed.multiplier().to_le_bytes());
                records.extend(shift_left.to_le_bytes());
                records.extend(shift_right.to_le_bytes());
                records.extend((1i64 << (n - 1)).to_le_bytes());
            }
            None => records.extend([0u8; 20]),
        }
        records.extend([0u8; 8]);
    }
    Ok(records)
}
