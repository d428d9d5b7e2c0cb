//! qcc's realized int8 ops, QuantizedConv, QuantizedMatMul, QuantizedAdd and
//! QuantizedGlobalAveragePool: exact i32 arithmetic, then qcc's one integer requantization
//! policy ([`crate::requant::FixedPoint`], [`crate::requant::AddMultipliers`]), so that
//! compiled int8 code equals this interpreter bit for bit.
//!
//! Unlike QLinearConv and QLinearMatMul (which follow onnxruntime's float requantization,
//! see [`super::quant::requantize`]), nothing here touches floating point at run time: the
//! multipliers come from the op's parameters through [`requant_multipliers`],
//! [`residual_multipliers`], [`add_multipliers`] and [`pool_multiplier`], the single source
//! of truth shared with the back ends.

use super::conv::{centered, integer_accumulators};
use super::matmul::batched_matmul;
use super::quant::{int_tensor, int_values};
use super::{op_err, R};
use crate::op::{
    add_multipliers, pool_multiplier, requant_multipliers, residual_multipliers, ConvAttrs,
};
use crate::quant::{quant_range, QParams};
use crate::requant::FixedPoint;
use crate::tensor::Tensor;

/// The attributes of one QuantizedConv, borrowed from the op.
pub(super) struct ConvQuant<'a> {
    pub conv: &'a ConvAttrs,
    pub x: &'a QParams,
    pub w: &'a QParams,
    pub y: &'a QParams,
    pub residual: Option<&'a QParams>,
    pub clamp: Option<(i32, i32)>,
}

/// The last step of every realized op: add the output zero point, saturate to the output
/// type and clamp to the fused bounds (the clamp lies inside the type's range, so the two
/// bounds intersect).
struct OutputRange {
    zero_point: i32,
    lo: i32,
    hi: i32,
}

impl OutputRange {
    fn new(y: &QParams, clamp: Option<(i32, i32)>) -> R<OutputRange> {
        let (min, max) = quant_range(y.dtype())
            .filter(|_| y.dtype().is_quantized())
            .ok_or_else(|| op_err(format!("output type {} is not u8 or i8", y.dtype())))?;
        let (lo, hi) = clamp.unwrap_or((min as i32, max as i32));
        Ok(OutputRange {
            zero_point: y.zero_points()[0],
            lo: lo.max(min as i32),
            hi: hi.min(max as i32),
        })
    }

    /// `clamp(sat(zp_y + scaled))`.
    fn place(&self, scaled: i64) -> i32 {
        (scaled + self.zero_point as i64).clamp(self.lo as i64, self.hi as i64) as i32
    }
}

/// The output stage of QuantizedConv and QuantizedMatMul: multiplier per channel, then
/// [`OutputRange`].
struct OutputStage {
    multipliers: Vec<FixedPoint>,
    per_channel: bool,
    range: OutputRange,
}

impl OutputStage {
    fn new(x: &QParams, w: &QParams, y: &QParams, clamp: Option<(i32, i32)>) -> R<OutputStage> {
        let multipliers =
            requant_multipliers(x, w, y).map_err(|e| op_err(format!("requantization: {e}")))?;
        Ok(OutputStage {
            multipliers,
            per_channel: w.axis().is_some(),
            range: OutputRange::new(y, clamp)?,
        })
    }

    /// `clamp(sat(zp_y + M[c].apply(acc)))`.
    fn requantize(&self, acc: i32, channel: usize) -> i32 {
        let m = self.multipliers[if self.per_channel { channel } else { 0 }];
        self.range.place(m.apply(acc))
    }
}

/// The i32 bias values, or zeros.
fn bias_values(bias: Option<&Tensor>, len: usize) -> R<Vec<i32>> {
    match bias {
        Some(b) => {
            let v = int_values(b)?;
            if v.len() != len {
                return Err(op_err(format!(
                    "bias has {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        }
        None => Ok(vec![0; len]),
    }
}

/// QuantizedConv (inputs x, w, optional bias, residual when the op has one); see
/// [`crate::op::Op::QuantizedConv`] for the formula.
pub(super) fn quantized_conv(q: &ConvQuant, inputs: &[&Tensor]) -> R<Tensor> {
    let (x, w) = (inputs[0], inputs[1]);
    let (dims, mut acc) = integer_accumulators(
        q.conv,
        x,
        q.x.zero_points(),
        w,
        q.w.zero_points(),
        q.w.axis(),
    )?;
    let cout = dims[1];
    let plane = dims[2..].iter().product::<usize>().max(1);
    let stage = OutputStage::new(q.x, q.w, q.y, q.clamp)?;
    let bias = bias_values(inputs.get(2).copied(), cout)?;
    let residual = match q.residual {
        Some(qr) => {
            let r = inputs
                .get(3)
                .ok_or_else(|| op_err("the residual input is missing"))?;
            let rescale = residual_multipliers(q.x, q.w, qr)
                .map_err(|e| op_err(format!("residual rescaling: {e}")))?;
            let values = centered(r, qr.zero_points(), None)?;
            if values.len() != acc.len() {
                return Err(op_err(format!(
                    "residual has {} elements, the output {}",
                    values.len(),
                    acc.len()
                )));
            }
            Some((rescale, values))
        }
        None => None,
    };
    for (i, v) in acc.iter_mut().enumerate() {
        let c = (i / plane) % cout.max(1);
        let mut total = v.wrapping_add(bias[c]);
        if let Some((rescale, r)) = &residual {
            let m = rescale[if stage.per_channel { c } else { 0 }];
            total = (total as i64 + m.apply(r[i])).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        }
        *v = stage.requantize(total, c);
    }
    int_tensor(q.y.dtype(), &dims, acc)
}

/// QuantizedMatMul: `a [..., M, K]` times `b [K, N]`, bias and multiplier per column.
pub(super) fn quantized_matmul(
    qa: &QParams,
    qb: &QParams,
    qy: &QParams,
    clamp: Option<(i32, i32)>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
) -> R<Tensor> {
    if b.dims().len() != 2 || a.dims().len() < 2 {
        return Err(op_err(
            "QuantizedMatMul takes a of rank >= 2 and b of rank 2",
        ));
    }
    let n = b.dims()[1];
    let ac = centered(a, qa.zero_points(), None)?;
    let bc = centered(b, qb.zero_points(), qb.axis())?;
    let (dims, mut acc) = batched_matmul(&ac, a.dims(), &bc, b.dims())?;
    let stage = OutputStage::new(qa, qb, qy, clamp)?;
    let bias = bias_values(bias, n)?;
    for (i, v) in acc.iter_mut().enumerate() {
        let column = i % n.max(1);
        *v = stage.requantize(v.wrapping_add(bias[column]), column);
    }
    int_tensor(qy.dtype(), &dims, acc)
}

/// QuantizedAdd: element-wise `clamp(sat(zp_y + AddMultipliers::apply(a − zp_a, b − zp_b)))`
/// on two inputs of the same dims; see [`crate::op::Op::QuantizedAdd`].
pub(super) fn quantized_add(
    qa: &QParams,
    qb: &QParams,
    qy: &QParams,
    clamp: Option<(i32, i32)>,
    a: &Tensor,
    b: &Tensor,
) -> R<Tensor> {
    if a.dims() != b.dims() {
        return Err(op_err(format!(
            "QuantizedAdd takes inputs of equal dims, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let multipliers =
        add_multipliers(qa, qb, qy).map_err(|e| op_err(format!("add multipliers: {e}")))?;
    let range = OutputRange::new(qy, clamp)?;
    let da = centered(a, qa.zero_points(), None)?;
    let db = centered(b, qb.zero_points(), None)?;
    let out = da
        .iter()
        .zip(&db)
        .map(|(&x, &y)| range.place(multipliers.apply(x, y) as i64))
        .collect();
    int_tensor(qy.dtype(), a.dims(), out)
}

/// QuantizedGlobalAveragePool: per (batch, channel) plane,
/// `sat(zp_y + M.apply(Σ (x − zp_x)))`; see [`crate::op::Op::QuantizedGlobalAveragePool`].
pub(super) fn quantized_global_average_pool(qx: &QParams, qy: &QParams, x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(op_err(format!(
            "QuantizedGlobalAveragePool takes rank >= 3, got {dims:?}"
        )));
    }
    let window: usize = dims[2..].iter().product();
    let multiplier =
        pool_multiplier(qx, qy, window).map_err(|e| op_err(format!("pool multiplier: {e}")))?;
    let range = OutputRange::new(qy, None)?;
    let centred = centered(x, qx.zero_points(), None)?;
    let planes = dims[0] * dims[1];
    let mut out = Vec::with_capacity(planes);
    for p in 0..planes {
        let sum: i64 = centred[p * window..][..window]
            .iter()
            .map(|&v| v as i64)
            .sum();
        // Inference bounds the window so that the sum always fits in i32.
        let sum =
            i32::try_from(sum).map_err(|_| op_err(format!("plane sum {sum} overflows i32")))?;
        out.push(range.place(multiplier.apply(sum)));
    }
    let mut out_dims = dims[..2].to_vec();
    out_dims.resize(dims.len(), 1);
    int_tensor(qy.dtype(), &out_dims, out)
}

#[cfg(test)]
#[path = "realized_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "realized_add_pool_tests.rs"]
mod add_pool_tests;
