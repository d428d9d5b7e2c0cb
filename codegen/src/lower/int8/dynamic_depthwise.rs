//! The dynamically quantized depthwise convolution ([`qcc_ir::op::Op::DynamicQuantizedConv`]
//! with `group == C_in == C_out`): the static int8 depthwise kernel's loops
//! (`super::depthwise_plan::DepthwisePlan`: the padded scratch plane, four-pixel dot products per
//! tap chunk, the `Direct` and `Shuffled` gathers) with the input's scale and zero point read
//! at run time and a float epilogue writing f32, in place of the grouped implicit GEMM.
//!
//! `void k(const uint8_t *x, const float *x_scale, const uint8_t *x_zero_point, const int8_t
//! *w_packed[, const int8_t *w_offsets], const records *records[, const float *residual],
//! float *y, uint8_t *scratch)`, everything else baked in.
//!
//! - The scratch is filled with the run-time `zx` once per call (flipped to `zx − 128` for
//!   `sdot`, like every scratch byte), so padding taps add `zx·(w − zw)` exactly as real
//!   taps add `zx·(w − zw)` besides `(x − zx)·(w − zw)`; the epilogue removes
//!   `zx·Σ (w − zw)[c]` for all `K = kH·kW` taps at once.
//! - Weight zero points: the product wants `w − zw[c]`, which spans −255..=255. Per
//!   channel the lowering splits it into two s8 parts, `w − zw[c] = w'[c, k] + n[c]`, with
//!   `n[c]` the value nearest 0 that keeps every `w'` of the channel in −128..=127 (one
//!   exists unless the channel has both `w = 127` and `zw = −128`, a difference of 255: the
//!   lowering then refuses and the caller falls back to the grouped GEMM). The kernel dots
//!   each chunk with `w'` and, when some `n[c]` is nonzero (`_zw` in the name), once more
//!   with `n[c]` at the chunk's taps, into the same accumulator: `acc = Σ x·(w − zw[c])`,
//!   no extra register, no input sums. With every `n[c] = 0` (all zero points zero, or
//!   weights whose difference fits s8) the kernel is the plain one.
//! - Per channel, in the interpreter's order, every float step rounded once:
//!
//! ```text
//! a = acc − zx'·Σ_k (w − zw[c])    i32, wrapping (exact modulo 2^32, like the interpreter);
//!                                  zx' = zx − 128 for `sdot` (its accumulator sums x − 128)
//! y = f32(a) · (x_scale · s_w[c]) + bias[c]
//! y = y + r                        with a residual (f32, the output's shape)
//! y = act(y)                       `elementwise::apply_activation`
//! ```
//!
//!   The three per-channel terms are splatted once per plane into a stack slot and loaded
//!   per block. A `Direct` block's vectors hold its pixels interleaved (lane `i` of vector
//!   `k` of a load group of `m` vectors: pixel `m·i + k`); the scaled vectors are put in
//!   pixel order by lane shuffles (a 4×4 transpose for stride 1, an interleave for stride 2)
//!   before the residual and the activation. A row's partial last vector reads its residual
//!   and stores its outputs lane by lane, never past the row.
//!
//! The per-channel constants are `super::dynamic_epilogue::float_records` with
//! `Σ_k (w − zw[c])` in place of `Σw`.

use std::sync::Arc;

use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::FunctionBuilder;

use super::depthwise_plan::{block_vectors, BlockShape, ChunkMasks, DepthwisePlan, Gather};
use super::dynamic::DynamicConvParams;
use super::dynamic_epilogue::{float_records, FloatStage};
use super::microkernel::{little, shuffle_mask, BlockEpilogue, DotProduct, QMicroKernel};
use super::residual::nonzero_weight_zero_points;
use super::{int8_spec, unsupported, RowOperand, DEFAULT_K_UNROLL};
use crate::lower::elementwise::apply_activation;
use crate::lower::kernel::{
    arity_error, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec, Tile,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::lower::vmath::FloatOps;
use crate::target::{Arch, Target};

/// Output pixels per f32x4 vector.
const PIXELS: usize = 4;

/// Stack-slot offsets of the per-channel terms (each a splatted 16-byte vector).
const COMPENSATION_AT: i32 = 0;
const SCALE_AT: i32 = 16;
const BIAS_AT: i32 = 32;
const TERMS_BYTES: u32 = 48;

/// A whole dynamically quantized depthwise convolution (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamicDepthwiseKernel {
    spec: KernelSpec,
    plan: DepthwisePlan,
    stage: FloatStage,
    /// Bytes of each record array (`float_records`).
    array_bytes: usize,
    /// Whether some `n[c]` is nonzero: a second dot product per chunk.
    offsets: bool,
}

/// The run-time operands of one kernel call.
struct CallOperands {
    x_scale: Value,
    x_zero_point: Value,
    weights: Value,
    offsets: Option<Value>,
    records: Value,
    residual: Option<Value>,
    y: Value,
}

/// The lanes of two f32x4 vectors: lane `i` is lane `picks[i]` of `a` (0-3) or of `c` (4-7).
fn pick_lanes(b: &mut FunctionBuilder, a: Value, c: Value, picks: [usize; 4]) -> Value {
    let mut indices = [0u8; 16];
    for (lane, &pick) in picks.iter().enumerate() {
        for byte in 0..4 {
            indices[4 * lane + byte] = (4 * pick + byte) as u8;
        }
    }
    let mask = shuffle_mask(b, indices);
    let a = b.ins().bitcast(types::I8X16, little(), a);
    let c = b.ins().bitcast(types::I8X16, little(), c);
    let picked = b.ins().shuffle(a, c, mask);
    b.ins().bitcast(types::F32X4, little(), picked)
}

/// One load group's vectors (lane `i` of vector `k` holds pixel `m·i + k`, `m` vectors) in
/// pixel order (vector `j` holds pixels `4j..4j + 4`).
fn in_pixel_order(b: &mut FunctionBuilder, group: &[Value]) -> Vec<Value> {
    const LOW: [usize; 4] = [0, 4, 1, 5];
    const HIGH: [usize; 4] = [2, 6, 3, 7];
    match *group {
        [a, c] => vec![pick_lanes(b, a, c, LOW), pick_lanes(b, a, c, HIGH)],
        [v0, v1, v2, v3] => {
            // [p0 p1 p4 p5], [p2 p3 p6 p7], [p8 p9 p12 p13], [p10 p11 p14 p15].
            let t0 = pick_lanes(b, v0, v1, LOW);
            let t1 = pick_lanes(b, v2, v3, LOW);
            let t2 = pick_lanes(b, v0, v1, HIGH);
            let t3 = pick_lanes(b, v2, v3, HIGH);
            let (first, second) = ([0, 1, 4, 5], [2, 3, 6, 7]);
            vec![
                pick_lanes(b, t0, t1, first),
                pick_lanes(b, t0, t1, second),
                pick_lanes(b, t2, t3, first),
                pick_lanes(b, t2, t3, second),
            ]
        }
        _ => group.to_vec(),
    }
}

impl DynamicDepthwiseKernel {
    /// Bytes of scratch the kernel needs (one padded plane).
    pub fn scratch_bytes(&self) -> usize {
        self.plan.scratch_bytes()
    }

    /// Splats channel `c`'s terms into `terms`: `zx'·Σ(w − zw)[c]`, `x_scale·s_w[c]`,
    /// `bias[c]`.
    fn store_channel_terms(
        &self,
        b: &mut FunctionBuilder,
        ops: &CallOperands,
        c: Value,
        terms: Value,
    ) {
        let offset = b.ins().ishl_imm_u(c, 2);
        let record = b.ins().iadd(ops.records, offset);
        let zero_point = b.ins().uload8(types::I32, flags(), ops.x_zero_point, 0);
        let activation_offset = self.plan.dot.dot.activation_offset();
        let zero_point = b
            .ins()
            .iadd_imm_s(zero_point, -i64::from(activation_offset));
        let sum = b.ins().load(types::I32, flags(), record, 0);
        let compensation = b.ins().imul(zero_point, sum);
        let compensation = b.ins().splat(types::I32X4, compensation);
        b.ins().store(flags(), compensation, terms, COMPENSATION_AT);
        let input_scale = b.ins().load(types::F32, flags(), ops.x_scale, 0);
        let at = self.array_bytes as i32;
        let weight_scale = b.ins().load(types::F32, flags(), record, at);
        let scale = b.ins().fmul(input_scale, weight_scale);
        let scale = b.ins().splat(types::F32X4, scale);
        b.ins().store(flags(), scale, terms, SCALE_AT);
        let bias = b.ins().load(types::F32, flags(), record, 2 * at);
        let bias = b.ins().splat(types::F32X4, bias);
        b.ins().store(flags(), bias, terms, BIAS_AT);
    }

    /// One block: its sums scaled, put in pixel order, the residual added, activated and
    /// stored at `output` (f32, the block's first output); `residual` is at the same offset.
    #[allow(clippy::too_many_arguments)]
    fn emit_block(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        masks: &ChunkMasks,
        (weights, offsets): (Value, Option<Value>),
        terms: Value,
        (input, output, residual): (Value, Value, Option<Value>),
        shape: BlockShape,
    ) -> Result<(), KernelError> {
        let plan = &self.plan;
        let sums = plan.accumulate(b, masks, (weights, offsets), input, shape)?;
        let compensation = b.ins().load(types::I32X4, flags(), terms, COMPENSATION_AT);
        let scale = b.ins().load(types::F32X4, flags(), terms, SCALE_AT);
        let bias = b.ins().load(types::F32X4, flags(), terms, BIAS_AT);
        let scaled: Vec<Value> = sums
            .iter()
            .map(|&sum| {
                let centred = b.ins().isub(sum, compensation);
                let value = b.ins().fcvt_from_sint(types::F32X4, centred);
                let value = b.ins().fmul(value, scale);
                b.ins().fadd(value, bias)
            })
            .collect();
        let ordered: Vec<Value> = match shape.gather {
            Gather::Direct => scaled
                .chunks(plan.load_group(Gather::Direct))
                .flat_map(|group| in_pixel_order(b, group))
                .collect(),
            Gather::Shuffled => scaled,
        };
        let float_ops = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        for (v, value) in ordered.into_iter().enumerate() {
            let lanes = shape.valid.saturating_sub(PIXELS * v).min(PIXELS);
            if lanes == 0 {
                continue;
            }
            let at = plan.imm(16 * v)?;
            let mut value = value;
            if let Some(residual) = residual {
                let r = if lanes == PIXELS {
                    b.ins().load(types::F32X4, flags(), residual, at)
                } else {
                    // Lane by lane: a whole vector could read past the residual tensor.
                    let zero = b.ins().f32const(0.0);
                    let mut r = b.ins().splat(types::F32X4, zero);
                    for lane in 0..lanes {
                        let element =
                            b.ins()
                                .load(types::F32, flags(), residual, at + 4 * lane as i32);
                        r = b.ins().insertlane(r, element, lane as u8);
                    }
                    r
                };
                value = b.ins().fadd(value, r);
            }
            if let Some(activation) = self.stage.activation {
                value = apply_activation(&float_ops, b, activation, value);
            }
            if lanes == PIXELS {
                b.ins().store(flags(), value, output, at);
            } else {
                for lane in 0..lanes {
                    let element = b.ins().extractlane(value, lane as u8);
                    b.ins()
                        .store(flags(), element, output, at + 4 * lane as i32);
                }
            }
        }
        Ok(())
    }
}

impl Kernel for DynamicDepthwiseKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        if params.len() != self.spec.params.len() {
            return Err(arity_error(&self.spec, params));
        }
        let mut next = params.iter().copied();
        let mut take = || next.next().ok_or_else(|| arity_error(&self.spec, params));
        let (x, x_scale, x_zero_point, weights) = (take()?, take()?, take()?, take()?);
        let offsets = if self.offsets { Some(take()?) } else { None };
        let records = take()?;
        let residual = if self.stage.residual {
            Some(take()?)
        } else {
            None
        };
        let (y, scratch) = (take()?, take()?);
        let ops = CallOperands {
            x_scale,
            x_zero_point,
            weights,
            offsets,
            records,
            residual,
            y,
        };
        let plan = &self.plan;
        let g = plan.geometry;
        let masks = plan.chunk_masks(b);

        // The padding cells (and the slack) hold the run-time zx for the whole call, in the
        // dot product's domain like every scratch byte.
        let zx = b.ins().load(types::I8, flags(), x_zero_point, 0);
        let zx = b.ins().splat(types::I8X16, zx);
        let zx = plan.dot.dot.flip(b, zx);
        plan.fill_scratch(b, context, scratch, zx);

        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            TERMS_BYTES,
            4,
        ));
        let out_plane_bytes = (4 * g.out_h * g.out_w) as i64;
        let weight_bytes = plan.channel_weight_bytes() as i64;
        plan.emit_planes(b, context, (x, scratch), |b, index, c| {
            let terms = b.ins().stack_addr(context.pointer, slot, 0);
            self.store_channel_terms(b, &ops, c, terms);
            let w_offset = b.ins().imul_imm_s(c, weight_bytes);
            let weights = b.ins().iadd(ops.weights, w_offset);
            let offsets = ops.offsets.map(|o| b.ins().iadd(o, w_offset));
            let y_offset = b.ins().imul_imm_s(index, out_plane_bytes);
            let y_plane = b.ins().iadd(ops.y, y_offset);
            let r_plane = ops.residual.map(|r| b.ins().iadd(r, y_offset));
            plan.emit_rows(b, context, scratch, |b, input, pixel, shape| {
                let offset = b.ins().ishl_imm_u(pixel, 2);
                let output = b.ins().iadd(y_plane, offset);
                let residual = r_plane.map(|r| b.ins().iadd(r, offset));
                let places = (input, output, residual);
                self.emit_block(b, context, &masks, (weights, offsets), terms, places, shape)
            })
        })?;
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Per channel, the `n[c]` nearest 0 with `w − zw[c] − n[c]` in −128..=127 for every weight
/// of the channel (see the module docs), or why there is none.
fn weight_offsets(
    weight: &[i8],
    taps: usize,
    zero_points: &[i32],
    channels: usize,
) -> Result<Vec<i32>, String> {
    (0..channels)
        .map(|c| {
            let zw = zero_points[if zero_points.len() == 1 { 0 } else { c }];
            let row = &weight[c * taps..(c + 1) * taps];
            let low = i32::from(row.iter().copied().min().unwrap_or(0));
            let high = i32::from(row.iter().copied().max().unwrap_or(0));
            let from = (high - zw - 127).max(-128);
            let to = (low - zw + 128).min(127);
            if from > to {
                return Err(format!(
                    "channel {c}: weights {low}..={high} with zero point {zw} differ by up to \
                     {}, more than two s8 parts hold",
                    high - zw
                ));
            }
            Ok(0i32.clamp(from, to))
        })
        .collect()
}

/// Lowers a dynamically quantized depthwise convolution for `target`. Refuses
/// (`KernelError::Unsupported`; the caller then uses the grouped implicit GEMM,
/// [`super::lower_dynamic_qconv`]) what the kernel does not do: non-depthwise geometry,
/// horizontal strides above 5, a channel whose weights and zero point differ by 255.
pub fn lower_dynamic_qdepthwise(
    target: &Target,
    params: &DynamicConvParams,
) -> Result<NodeLowering, KernelError> {
    let dot = DotProduct::for_target(target);
    let gather = Gather::for_geometry(&params.geometry);
    lower_dynamic_qdepthwise_with(target.arch(), dot, gather, block_vectors(dot), params)
}

/// Lowers a dynamically quantized depthwise convolution with an explicit dot product, gather
/// and block width in vectors (tests and benchmarks).
pub fn lower_dynamic_qdepthwise_with(
    arch: Arch,
    dot: DotProduct,
    gather: Gather,
    vectors: usize,
    params: &DynamicConvParams,
) -> Result<NodeLowering, KernelError> {
    let g = params.geometry;
    let kernel_name = "dynamic int8 depthwise Conv";
    let fail = |reason: String| unsupported(kernel_name, reason);
    let stage = FloatStage {
        activation: params.activation,
        residual: params.residual,
    };
    // Only `prepare` and `dot` of the micro-kernel are used: its own default tile.
    let micro = QMicroKernel::new(
        dot.default_tile(),
        dot,
        RowOperand::WeightPanels,
        BlockEpilogue::Float(stage),
        DEFAULT_K_UNROLL,
    )
    .map_err(fail)?;
    let plan = DepthwisePlan::new(kernel_name, &g, micro, gather, vectors)?;
    let channels = g.out_channels;
    let taps = g.kernel_h * g.kernel_w;
    let weight = params.weight;
    if weight.len() != channels * taps {
        return Err(fail(format!(
            "weight has {} values, expected {channels}·{taps}",
            weight.len()
        )));
    }
    let zero_points = nonzero_weight_zero_points(Some(params.weight_zero_points), channels)
        .map_err(fail)?
        .unwrap_or(&[0]);
    let offsets = weight_offsets(weight, taps, zero_points, channels).map_err(fail)?;
    let zw = |c: usize| zero_points[if zero_points.len() == 1 { 0 } else { c }];
    // `Σ_k (w − zw[c])`: at most 255·K in magnitude, exact in i32 for any kernel that fits.
    let sums: Vec<i32> = (0..channels)
        .map(|c| {
            let row = &weight[c * taps..(c + 1) * taps];
            row.iter()
                .fold(0i32, |s, &w| s.wrapping_add(i32::from(w) - zw(c)))
        })
        .collect();
    let (records, array_bytes) =
        float_records(&sums, params.weight_scales, params.bias, None).map_err(fail)?;
    // `w' = w − zw[c] − n[c]`, in −128..=127 by the choice of `n[c]`.
    let packed = plan.pack_chunks(|c, ky, kx| {
        let w = i32::from(weight[c * taps + ky * g.kernel_w + kx]);
        (w - zw(c) - offsets[c]) as i8
    });
    let with_offsets = offsets.iter().any(|&n| n != 0);
    let mut bytes = vec![packed, records];
    if with_offsets {
        bytes.push(plan.pack_chunks(|c, _, _| offsets[c] as i8));
    }
    let op = format!(
        "dqdw_n{}_c{}_i{}x{}_o{}x{}_{}_{}_{}{}",
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_h,
        g.out_w,
        g.short_name().replace(',', "_"),
        plan.name(),
        stage.name(),
        if with_offsets { "_zw" } else { "" }
    );
    let tile = Tile {
        rows: 1,
        cols: plan.block_pixels() as u32,
    };
    let bytes_arg = |index| Arg::Bytes { index, offset: 0 };
    let mut kernel_params = vec![
        KernelParam::input("x"),
        KernelParam::input("x_scale"),
        KernelParam::input("x_zero_point"),
        KernelParam::input("w_packed"),
    ];
    let mut args = vec![Arg::input(0), Arg::input(1), Arg::input(2), bytes_arg(0)];
    if with_offsets {
        kernel_params.push(KernelParam::input("w_offsets"));
        args.push(bytes_arg(2));
    }
    kernel_params.push(KernelParam::input("records"));
    args.push(bytes_arg(1));
    if params.residual {
        kernel_params.push(KernelParam::input("residual"));
        args.push(Arg::input(5));
    }
    kernel_params.extend([KernelParam::output("y"), KernelParam::output("scratch")]);
    args.extend([Arg::output(0), Arg::Scratch { offset: 0 }]);
    let description = format!(
        "dynamic int8 depthwise {}x{}/s{}x{} {} {:?} ({} vectors, padded u8 scratch{})",
        g.kernel_h,
        g.kernel_w,
        g.stride_h,
        g.stride_w,
        dot.name(),
        plan.gather(),
        plan.block_vectors(),
        if with_offsets {
            ", weight zero points as a second dot product"
        } else {
            ""
        }
    );
    let kernel = DynamicDepthwiseKernel {
        spec: int8_spec(arch, op, tile, kernel_params),
        plan,
        stage,
        array_bytes,
        offsets: with_offsets,
    };
    let scratch_bytes = kernel.scratch_bytes();
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes,
        scratch_bytes,
        description,
        ..NodeLowering::default()
    })
}

#[cfg(test)]
#[path = "dynamic_depthwise_tests.rs"]
mod tests;
