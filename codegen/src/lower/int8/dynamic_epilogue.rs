//! The float epilogue of the int8 register block, for dynamic quantization
//! ([`qcc_ir::op::Op::DynamicQuantizedConv`], [`qcc_ir::op::Op::DynamicQuantizedMatMul`]):
//! the i32 accumulators become f32 with the input's scale and zero point read at run time.
//!
//! The kernels multiply the raw u8 bytes (padding taps read the run-time zero point), so
//! `Σ (x − zx)·w = acc − zx·Σw[c]`, the compensation moved from the compile-time bias (static
//! int8, `super`) into the epilogue. With `sdot` the bytes enter as `x − 128` and `zx` in
//! that term is `zx − 128` (`DotProduct::activation_offset`).
//!
//! Weight zero points `zw[c]` add `Σ (x − zx)(w − zw[c]) = Σ (x − zx)·w − zw[c]·Σ (x − zx)`.
//! The kernels with them (`_zw` in the name; the others compute no sums) sum the input bytes
//! per output pixel of the packed panel (convolution; padding taps and channels hold `zx`, so
//! `K` is the packed reduction) or per row of A (matrix product; `K = k`), centred on the
//! run-time `zx` as they are summed: `S = Σx − K·zx`, with `Σx` the sums of the stored u8
//! bytes and `zx` the u8 zero point whatever the dot product (`super::rowsum`). With `sdot`
//! that is still exact: `Σ (x' − zx')(w − zw) = acc' − zx'·Σw − zw·(Σx − K·zx)` for
//! `x' = x − 128`, `zx' = zx − 128`.
//!
//! Per output channel (convolution) or column (matrix product), in the interpreter's order,
//! every float step rounded once (no fused multiply-add):
//!
//! ```text
//! a = acc − zx·Σw[c] − zw[c]·S       i32, wrapping (exact modulo 2^32, like the interpreter)
//! s = x_scale · s_w[c]               scalar f32 product, then splatted
//! y = f32(a) · s + bias[c]           cvtdq2ps rounds to nearest even, like `as f32`
//! y = y + r                          with a residual (f32, the output's shape)
//! y = act(y)                         `elementwise::apply_activation`, the fp32 kernels' one
//! ```
//!
//! The compile-time constants ([`float_records`]) are three arrays of one entry per channel,
//! padded so a vector load at the last panel stays inside: i32 `Σw[c]`, f32 `s_w[c]`, f32
//! `bias[c]`, then with weight zero points a fourth, i32 `zw[c]`, each
//! [`FloatOperands::array_bytes`] long. A row (convolution) reads its scalars (`zw[c]` times
//! the panel's vectors of pixel sums); a column panel (matrix product) reads four columns per
//! vector load (`zw` of four columns times the row's sum), so both orientations run the
//! epilogue on vectors. Outputs are f32: an edge panel goes through a stack buffer and only
//! its valid columns are stored (and only those residual values read).

use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::Activation;

use super::microkernel::{QMicroKernel, QPanelOperands};
use crate::lower::elementwise::{activation_name, apply_activation};
use crate::lower::kernel::{counted_loop, flags, KernelContext};
use crate::lower::vmath::FloatOps;

/// The float epilogue as baked into a kernel: the fused activation and whether an f32
/// residual is added before it.
#[derive(Clone, Copy, Debug)]
pub struct FloatStage {
    pub activation: Option<Activation>,
    pub residual: bool,
}

// The activation's name spells its parameters bit for bit (`activation_name`), so two stages
// are the same code exactly when their names are equal.
impl PartialEq for FloatStage {
    fn eq(&self, other: &FloatStage) -> bool {
        self.name() == other.name()
    }
}

impl Eq for FloatStage {}

impl std::hash::Hash for FloatStage {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

/// The run-time input quantization and the record layout, as CLIF values of one kernel.
#[derive(Clone, Copy)]
pub(crate) struct FloatOperands {
    /// `const float *`: the input's scale (one f32, DynamicQuantizeLinear's output 1).
    pub scale: Value,
    /// `const uint8_t *`: the input's zero point (one byte, its output 2).
    pub zero_point: Value,
    /// Bytes of each of the record arrays.
    pub array_bytes: i64,
}

/// One channel's (splatted) or four columns' terms.
#[derive(Clone, Copy)]
struct Terms {
    compensation: Value,
    scale: Value,
    bias: Value,
    /// `zw` (i32x4), with weight zero points.
    weight_zero_point: Option<Value>,
}

/// Entries per record array for `channels` outputs: room for a whole panel (at most 16
/// columns) read from the last panel's first column.
fn padded_channels(channels: usize) -> usize {
    (channels + 16).next_multiple_of(4)
}

/// The records of `channels` outputs: `Σw[c]` (wrapping), the weight scales (one per
/// channel, or one for all), the f32 bias and, when given, the weight zero points (one per
/// channel, or one for all). Returns the bytes and the array length in bytes.
pub fn float_records(
    weight_sums: &[i32],
    weight_scales: &[f32],
    bias: &[f32],
    weight_zero_points: Option<&[i32]>,
) -> Result<(Vec<u8>, usize), String> {
    let channels = weight_sums.len();
    if bias.len() != channels {
        return Err(format!(
            "bias has {} values for {channels} outputs",
            bias.len()
        ));
    }
    if weight_scales.len() != 1 && weight_scales.len() != channels {
        return Err(format!(
            "{} weight scales for {channels} outputs (expected 1 or {channels})",
            weight_scales.len()
        ));
    }
    if let Some(zero_points) = weight_zero_points {
        if zero_points.len() != 1 && zero_points.len() != channels {
            return Err(format!(
                "{} weight zero points for {channels} outputs (expected 1 or {channels})",
                zero_points.len()
            ));
        }
    }
    let pick = |len: usize, c: usize| if len == 1 { 0 } else { c };
    let padded = padded_channels(channels);
    let arrays = 3 + weight_zero_points.is_some() as usize;
    let mut records = vec![0u8; arrays * 4 * padded];
    let mut put = |array: usize, c: usize, entry: [u8; 4]| {
        let at = array * 4 * padded + 4 * c;
        records[at..at + 4].copy_from_slice(&entry);
    };
    for c in 0..channels {
        put(0, c, weight_sums[c].to_le_bytes());
        put(
            1,
            c,
            weight_scales[pick(weight_scales.len(), c)].to_le_bytes(),
        );
        put(2, c, bias[c].to_le_bytes());
        if let Some(zero_points) = weight_zero_points {
            put(3, c, zero_points[pick(zero_points.len(), c)].to_le_bytes());
        }
    }
    Ok((records, 4 * padded))
}

impl FloatStage {
    /// Bytes from one channel's entry to the next in each record array.
    pub const RECORD_STRIDE: usize = 4;

    /// `f32`, `f32_relu_r` (activation, then `_r` with a residual).
    pub fn name(&self) -> String {
        let mut name = "f32".to_string();
        if let Some(activation) = self.activation {
            name.push('_');
            name.push_str(&activation_name(activation));
        }
        if self.residual {
            name.push_str("_r");
        }
        name
    }

    /// The terms of the channel whose records start at `record` (scalars, splatted).
    fn row_terms(
        b: &mut FunctionBuilder,
        float: &FloatOperands,
        record: Value,
        zero_point: Value,
        input_scale: Value,
        weight_zero_points: bool,
    ) -> Terms {
        let sum = b.ins().load(types::I32, flags(), record, 0);
        let compensation = b.ins().imul(zero_point, sum);
        let weight_scale = b
            .ins()
            .load(types::F32, flags(), record, float.array_bytes as i32);
        let scale = b.ins().fmul(input_scale, weight_scale);
        let bias = b
            .ins()
            .load(types::F32, flags(), record, 2 * float.array_bytes as i32);
        let weight_zero_point = weight_zero_points.then(|| {
            let at = 3 * float.array_bytes as i32;
            let zw = b.ins().load(types::I32, flags(), record, at);
            b.ins().splat(types::I32X4, zw)
        });
        Terms {
            compensation: b.ins().splat(types::I32X4, compensation),
            scale: b.ins().splat(types::F32X4, scale),
            bias: b.ins().splat(types::F32X4, bias),
            weight_zero_point,
        }
    }

    /// The terms of the four columns whose records start at `record + offset`.
    fn column_terms(
        b: &mut FunctionBuilder,
        float: &FloatOperands,
        record: Value,
        offset: i32,
        zero_point: Value,
        input_scale: Value,
        weight_zero_points: bool,
    ) -> Terms {
        let sums = b.ins().load(types::I32X4, flags(), record, offset);
        let zero_point = b.ins().splat(types::I32X4, zero_point);
        let compensation = b.ins().imul(zero_point, sums);
        let at = offset + float.array_bytes as i32;
        let weight_scales = b.ins().load(types::F32X4, flags(), record, at);
        let input_scale = b.ins().splat(types::F32X4, input_scale);
        let scale = b.ins().fmul(input_scale, weight_scales);
        let at = offset + 2 * float.array_bytes as i32;
        let bias = b.ins().load(types::F32X4, flags(), record, at);
        let weight_zero_point = weight_zero_points.then(|| {
            let at = offset + 3 * float.array_bytes as i32;
            b.ins().load(types::I32X4, flags(), record, at)
        });
        Terms {
            compensation,
            scale,
            bias,
            weight_zero_point,
        }
    }

    /// `f32` copy of `count` elements from `from` to `to`.
    fn copy_f32(
        b: &mut FunctionBuilder,
        context: &KernelContext,
        from: Value,
        to: Value,
        count: Value,
    ) {
        let zero = b.ins().iconst(context.pointer, 0);
        counted_loop(b, context.pointer, zero, count, 1, |b, j| {
            let offset = b.ins().ishl_imm_u(j, 2);
            let source = b.ins().iadd(from, offset);
            let value = b.ins().load(types::F32, flags(), source, 0);
            let target = b.ins().iadd(to, offset);
            b.ins().store(flags(), value, target, 0);
        });
    }

    /// The epilogue of rows `row..row + rows` of the block whose accumulators are on the
    /// stack at `tile` (row `r`, vector `v` at `(r·vectors + v)·16`), stored as f32.
    /// `per_row`: rows are output channels (convolution); otherwise columns are.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &self,
        micro: &QMicroKernel,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &QPanelOperands,
        (row, rows): (Value, u32),
        tile: Value,
        per_row: bool,
    ) {
        let Some(float) = ops.float else {
            unreachable!("the kernels with a float epilogue pass its run-time operands")
        };
        let pointer = context.pointer;
        let vectors = micro.vectors();
        let float_ops = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        // In the dot product's domain: `sdot` summed `x − 128`, so `acc − (zx − 128)·Σw`.
        let zero_point = b.ins().uload8(types::I32, flags(), float.zero_point, 0);
        let offset = micro.dot.activation_offset();
        let zero_point = if offset == 0 {
            zero_point
        } else {
            b.ins().iadd_imm_s(zero_point, -i64::from(offset))
        };
        let input_scale = b.ins().load(types::F32, flags(), float.scale, 0);
        let stack_buffer = |b: &mut FunctionBuilder| {
            let bytes = (16 * vectors) as u32;
            let slot = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                bytes,
                4,
            ));
            b.ins().stack_addr(pointer, slot, 0)
        };
        let edge = ops.columns.map(|columns| (columns, stack_buffer(b)));
        // An edge panel's residual values are copied first: whole vectors read in place
        // could run past the end of the residual tensor.
        let residual_buffer = match (edge, ops.residual, self.residual) {
            (Some(_), Some(_), true) => Some(stack_buffer(b)),
            _ => None,
        };
        // The centred input sums (`super::rowsum`), with weight zero points only.
        let sums = ops.sums.filter(|_| micro.extras.weight_zero_points);
        let with_zw = sums.is_some();
        let shared: Vec<Terms> = if per_row {
            Vec::new()
        } else {
            (0..vectors)
                .map(|v| {
                    let offset = (16 * v) as i32;
                    let records = ops.records;
                    Self::column_terms(b, &float, records, offset, zero_point, input_scale, with_zw)
                })
                .collect()
        };
        // A row's channel multiplies the panel's pixel sums, the same for every row.
        let pixel_sums: Vec<Value> = match sums {
            Some(sums) if per_row => (0..vectors)
                .map(|v| b.ins().load(types::I32X4, flags(), sums, (16 * v) as i32))
                .collect(),
            _ => Vec::new(),
        };
        for r in 0..rows as usize {
            let index = b.ins().iadd_imm_s(row, r as i64);
            let c_offset = b.ins().imul(index, ops.ldc);
            let c_row = b.ins().iadd(ops.c, c_offset);
            let row_terms = per_row.then(|| {
                let offset = b.ins().imul_imm_s(index, Self::RECORD_STRIDE as i64);
                let record = b.ins().iadd(ops.records, offset);
                Self::row_terms(b, &float, record, zero_point, input_scale, with_zw)
            });
            // A column panel's rows: this row's sum, times four columns' `zw` at a time.
            let row_sum = match sums {
                Some(sums) if !per_row => {
                    let offset = b.ins().ishl_imm_u(index, 2);
                    let address = b.ins().iadd(sums, offset);
                    let sum = b.ins().load(types::I32, flags(), address, 0);
                    Some(b.ins().splat(types::I32X4, sum))
                }
                _ => None,
            };
            let residual = match (ops.residual, self.residual) {
                (Some(residual), true) => {
                    let source = b.ins().iadd(residual, c_offset);
                    Some(match (edge, residual_buffer) {
                        (Some((columns, _)), Some(buffer)) => {
                            Self::copy_f32(b, context, source, buffer, columns);
                            buffer
                        }
                        _ => source,
                    })
                }
                _ => None,
            };
            let target = edge.map_or(c_row, |(_, buffer)| buffer);
            // One channel's terms for the whole row, or each vector's four columns.
            let terms = match row_terms {
                Some(terms) => vec![terms; vectors],
                None => shared.clone(),
            };
            for (v, terms) in terms.into_iter().enumerate() {
                let offset = (16 * v) as i32;
                let sum = b.ins().load(
                    types::I32X4,
                    flags(),
                    tile,
                    ((r * vectors) * 16) as i32 + offset,
                );
                let mut centred = b.ins().isub(sum, terms.compensation);
                let input_sums = pixel_sums.get(v).copied().or(row_sum);
                if let (Some(zw), Some(input_sums)) = (terms.weight_zero_point, input_sums) {
                    let correction = b.ins().imul(zw, input_sums);
                    centred = b.ins().isub(centred, correction);
                }
                let value = b.ins().fcvt_from_sint(types::F32X4, centred);
                let value = b.ins().fmul(value, terms.scale);
                let mut value = b.ins().fadd(value, terms.bias);
                if let Some(residual) = residual {
                    let r = b.ins().load(types::F32X4, flags(), residual, offset);
                    value = b.ins().fadd(value, r);
                }
                if let Some(activation) = self.activation {
                    value = apply_activation(&float_ops, b, activation, value);
                }
                b.ins().store(flags(), value, target, offset);
            }
            if let Some((columns, buffer)) = edge {
                Self::copy_f32(b, context, buffer, c_row, columns);
            }
        }
    }
}
