//! The int8 depthwise convolution (`group == C_in == C_out`, one filter per channel): u8
//! activations, s8 weights of zero point 0, i32 accumulators, the int8 kernels'
//! requantization ([`OutputStage`], the same 32-byte records), u8 or i8 output.
//!
//! One kernel, `void k(const uint8_t *x, const int8_t *w_packed, const record *requant,
//! uint8_t *y, uint8_t *scratch)`, everything else baked in. Per (image, channel) plane:
//!
//! - the plan (`super::depthwise_plan`): a scratch plane padded with `zx`, four-pixel dot
//!   products per tap chunk, the row and block loops;
//! - the requantization here: per block the i32 sums get the compensated bias
//!   (`bias − zx·Σw`, see `super`: padding taps hold `zx`, so every tap adds `(x − zx)·w`),
//!   are requantized, narrowed to bytes and stored, the partial last block only its valid
//!   bytes.
//!
//! The dynamically quantized depthwise kernel (`super::dynamic_depthwise`: run-time `zx`,
//! weight zero points, a float epilogue) shares the plan.

use std::sync::Arc;

use cranelift_codegen::ir::{types, Immediate, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

pub use super::depthwise_plan::{block_vectors, tap_chunks, Gather, TapChunk, MAX_BLOCK_VECTORS};
use super::depthwise_plan::{BlockShape, ChunkMasks, DepthwisePlan, PIXELS, VECTOR_BYTES};
use super::microkernel::{little, DotProduct, QMicroKernel, RowOperand};
use super::requant::{requant_records, OutputStage, RECORD_BYTES};
use super::{
    check_input_zero_point, compensated_bias, int8_spec, residual, unsupported, QConvParams,
    DEFAULT_K_UNROLL,
};
use crate::lower::kernel::{
    arity_error, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec, Tile,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::target::{Arch, Target};

/// A whole int8 depthwise convolution (see the module docs).
#[derive(Clone, Debug)]
pub struct QDepthwiseKernel {
    spec: KernelSpec,
    plan: DepthwisePlan,
    stage: OutputStage,
    input_zero_point: u8,
}

impl QDepthwiseKernel {
    /// Bytes of scratch the kernel needs (one padded plane).
    pub fn scratch_bytes(&self) -> usize {
        self.plan.scratch_bytes()
    }

    /// One block: its sums requantized, narrowed and stored at `output` (its first byte).
    fn emit_block(
        &self,
        b: &mut FunctionBuilder,
        (masks, reorder): (&ChunkMasks, Option<Immediate>),
        (weights, record): (Value, Value),
        (input, output): (Value, Value),
        shape: BlockShape,
    ) -> Result<(), KernelError> {
        let accumulators = self
            .plan
            .accumulate(b, masks, (weights, None), input, shape)?;
        // Four vectors at a time, requantized, narrowed and stored: fewer values live next
        // to the requantization's constants.
        let requant = self.stage.load_row(b, record);
        for (i, group) in accumulators.chunks(VECTOR_BYTES / PIXELS).enumerate() {
            let values: Vec<Value> = group
                .iter()
                .map(|&acc| {
                    let biased = self.stage.add_bias(b, &requant, acc);
                    self.stage.requantize_vector(b, &requant, biased)
                })
                .collect();
            let mut bytes = narrow_to_bytes(b, self.stage.signed, &values);
            if let (Gather::Direct, Some(reorder)) = (shape.gather, reorder) {
                bytes = b.ins().shuffle(bytes, bytes, reorder);
            }
            let stored = shape
                .valid
                .saturating_sub(i * VECTOR_BYTES)
                .min(VECTOR_BYTES);
            let at = self.plan.imm(i * VECTOR_BYTES)?;
            store_prefix(b, bytes, output, at, stored);
        }
        Ok(())
    }
}

/// Up to four vectors of clamped i32 outputs → their bytes (u8 or i8), in order.
fn narrow_to_bytes(b: &mut FunctionBuilder, signed: bool, values: &[Value]) -> Value {
    let at = |i: usize| values.get(i).copied().unwrap_or(values[0]);
    let words_low = b.ins().snarrow(at(0), at(1));
    let words_high = b.ins().snarrow(at(2), at(3));
    if signed {
        b.ins().snarrow(words_low, words_high)
    } else {
        b.ins().unarrow(words_low, words_high)
    }
}

/// Stores the first `len` (≤ 16) bytes of `bytes` at `base + offset`: the whole vector, or
/// 8-, 4-, 2- and 1-byte lanes (each piece's offset is a multiple of its size).
fn store_prefix(b: &mut FunctionBuilder, bytes: Value, base: Value, offset: i32, len: usize) {
    if len >= VECTOR_BYTES {
        b.ins().store(flags(), bytes, base, offset);
        return;
    }
    let mut at = 0;
    for (size, ty) in [
        (8, types::I64X2),
        (4, types::I32X4),
        (2, types::I16X8),
        (1, types::I8X16),
    ] {
        if len - at >= size {
            let lanes = if ty == types::I8X16 {
                bytes
            } else {
                b.ins().bitcast(ty, little(), bytes)
            };
            let lane = b.ins().extractlane(lanes, (at / size) as u8);
            b.ins().store(flags(), lane, base, offset + at as i32);
            at += size;
        }
    }
}

impl Kernel for QDepthwiseKernel {
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
        let (x, w, records, y, scratch) = (params[0], params[1], params[2], params[3], params[4]);
        let plan = &self.plan;
        let g = plan.geometry;
        let masks = plan.chunk_masks(b);
        let reorder = plan.byte_reorder(b);

        // The padding cells (and the slack) hold zx for the whole call (flipped like every
        // scratch byte for `sdot`).
        let zx = b.ins().iconst(types::I8, i64::from(self.input_zero_point));
        let zx = b.ins().splat(types::I8X16, zx);
        let zx = plan.dot.dot.flip(b, zx);
        plan.fill_scratch(b, context, scratch, zx);

        let out_plane = (g.out_h * g.out_w) as i64;
        let weight_bytes = plan.channel_weight_bytes() as i64;
        plan.emit_planes(b, context, (x, scratch), |b, index, c| {
            let y_offset = b.ins().imul_imm_s(index, out_plane);
            let y_plane = b.ins().iadd(y, y_offset);
            let w_offset = b.ins().imul_imm_s(c, weight_bytes);
            let weights = b.ins().iadd(w, w_offset);
            let record_offset = b.ins().imul_imm_s(c, RECORD_BYTES as i64);
            let record = b.ins().iadd(records, record_offset);
            plan.emit_rows(b, context, scratch, |b, input, pixel, shape| {
                let output = b.ins().iadd(y_plane, pixel);
                self.emit_block(
                    b,
                    (&masks, reorder),
                    (weights, record),
                    (input, output),
                    shape,
                )
            })
        })?;
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers an int8 depthwise convolution for `target`. Refuses (`KernelError::Unsupported`,
/// the caller then uses [`super::lower_qconv`]'s grouped path) what this kernel does not do:
/// non-depthwise geometry, nonzero weight zero points, a residual, horizontal strides
/// above 5.
pub fn lower_qdepthwise(
    target: &Target,
    params: &QConvParams,
) -> Result<NodeLowering, KernelError> {
    let dot = DotProduct::for_target(target);
    let gather = Gather::for_geometry(&params.geometry);
    lower_qdepthwise_with(target.arch(), dot, gather, block_vectors(dot), params)
}

/// Lowers an int8 depthwise convolution with an explicit dot product, gather and block width
/// in vectors (rounded up to whole load groups; tests and benchmarks).
pub fn lower_qdepthwise_with(
    arch: Arch,
    dot: DotProduct,
    gather: Gather,
    vectors: usize,
    params: &QConvParams,
) -> Result<NodeLowering, KernelError> {
    let g = params.geometry;
    let kernel_name = "int8 depthwise Conv";
    let fail = |reason: String| unsupported(kernel_name, reason);
    if residual::nonzero_weight_zero_points(params.weight_zero_points, g.out_channels)
        .map_err(fail)?
        .is_some()
    {
        return Err(fail("nonzero weight zero points".into()));
    }
    if params.residual.is_some() {
        return Err(fail("a residual input".into()));
    }
    let zx = check_input_zero_point(kernel_name, params.input_zero_point)?;
    let stage = OutputStage::new(&params.output, params.requant).map_err(fail)?;
    // Only `prepare` and `dot` of the micro-kernel are used: its own default tile.
    let dot_kernel = QMicroKernel::new(
        dot.default_tile(),
        dot,
        RowOperand::WeightPanels,
        stage,
        DEFAULT_K_UNROLL,
    )
    .map_err(fail)?;
    let plan = DepthwisePlan::new(kernel_name, &g, dot_kernel, gather, vectors)?;
    let taps = g.kernel_h * g.kernel_w;
    let weight = params.weight;
    let bias = compensated_bias(
        weight,
        g.out_channels,
        taps,
        params.bias,
        params.input_zero_point - dot.activation_offset(),
        |c, k| weight[c * taps + k],
    )
    .map_err(fail)?;
    let records = requant_records(&bias, params.requant).map_err(fail)?;
    let packed = plan.pack_chunks(|c, ky, kx| weight[(c * g.kernel_h + ky) * g.kernel_w + kx]);
    let op = format!(
        "qdw_n{}_c{}_i{}x{}_o{}x{}_{}_zx{}_{}_{}",
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_h,
        g.out_w,
        g.short_name().replace(',', "_"),
        zx,
        plan.name(),
        stage.name()
    );
    let tile = Tile {
        rows: 1,
        cols: plan.block_pixels() as u32,
    };
    let inputs = ["x", "w_packed", "requant"].map(KernelParam::input);
    let outputs = ["y", "scratch"].map(KernelParam::output);
    let kernel_params = inputs.into_iter().chain(outputs).collect();
    let description = format!(
        "int8 depthwise {}x{}/s{}x{} {} {:?} ({} vectors, padded u8 scratch)",
        g.kernel_h,
        g.kernel_w,
        g.stride_h,
        g.stride_w,
        dot.name(),
        plan.gather(),
        plan.block_vectors()
    );
    let kernel = QDepthwiseKernel {
        spec: int8_spec(arch, op, tile, kernel_params),
        plan,
        stage,
        input_zero_point: zx,
    };
    let scratch_bytes = kernel.scratch_bytes();
    let bytes = |index| Arg::Bytes { index, offset: 0 };
    let scratch = Arg::Scratch { offset: 0 };
    let args = vec![Arg::input(0), bytes(0), bytes(1), Arg::output(0), scratch];
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes: vec![packed, records],
        scratch_bytes,
        description,
        ..NodeLowering::default()
    })
}

#[cfg(test)]
#[path = "depthwise_tests.rs"]
mod tests;
