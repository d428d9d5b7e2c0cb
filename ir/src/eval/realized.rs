//! qcc's realized int8 ops, QuantizedConv and QuantizedMatMul: exact i32 accumulation, then
//! qcc's one integer requantization policy ([`crate::requant::FixedPoint`]), so that compiled
//! int8 code equals this interpreter bit for bit.
//!
//! Unlike QLinearConv and QLinearMatMul (which follow onnxruntime's float requantization,
//! see [`super::quant::requantize`]), nothing here touches floating point at run time: the
//! multipliers come from the op's parameters through [`requant_multipliers`] and
//! [`residual_multipliers`], the single source of truth shared with the back ends.

use super::conv::{centered, integer_accumulators};
use super::matmul::batched_matmul;
use super::quant::{int_tensor, int_values};
use super::{op_err, R};
use crate::op::{requant_multipliers, residual_multipliers, ConvAttrs};
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

/// The output stage shared by both ops: multiplier per channel, zero point, saturation to
/// the output type intersected with the fused clamp.
struct OutputStage {
    multipliers: Vec<FixedPoint>,
    per_channel: bool,
    zero_point: i32,
    lo: i32,
    hi: i32,
}

impl OutputStage {
    fn new(x: &QParams, w: &QParams, y: &QParams, clamp: Option<(i32, i32)>) -> R<OutputStage> {
        let multipliers =
            requant_multipliers(x, w, y).map_err(|e| op_err(format!("requantization: {e}")))?;
        let (min, max) = quant_range(y.dtype())
            .filter(|_| y.dtype().is_quantized())
            .ok_or_else(|| op_err(format!("output type {} is not u8 or i8", y.dtype())))?;
        let (lo, hi) = clamp.unwrap_or((min as i32, max as i32));
        Ok(OutputStage {
            multipliers,
            per_channel: w.axis().is_some(),
            zero_point: y.zero_points()[0],
            lo: lo.max(min as i32),
            hi: hi.min(max as i32),
        })
    }

    /// `clamp(sat(zp_y + M[c].apply(acc)))`.
    fn requantize(&self, acc: i32, channel: usize) -> i32 {
        let m = self.multipliers[if self.per_channel { channel } else { 0 }];
        (m.apply(acc) + self.zero_point as i64).clamp(self.lo as i64, self.hi as i64) as i32
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

#[cfg(test)]
#[path = "realized_tests.rs"]
mod tests;
