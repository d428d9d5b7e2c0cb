//! Dynamic quantization's integer convolution and matrix product
//! ([`qcc_ir::op::Op::DynamicQuantizedConv`], [`qcc_ir::op::Op::DynamicQuantizedMatMul`]):
//! the static int8 kernels (`super::conv`, `super::gemm`, the same register block and dot
//! products) with the input's scale and zero point read at run time and the float epilogue
//! (`super::dynamic_epilogue`) in place of requantization.
//!
//! Node inputs, as the ops define them: 0 the u8 activations, 1 their f32 scale, 2 their u8
//! zero point (the three outputs of one DynamicQuantizeLinear), 3 and 4 the constant s8
//! weights and f32 bias (packed here into blobs 0 and 1), 5 the f32 residual of a
//! convolution. Output 0 is f32.
//!
//! Weights may be asymmetric (onnxruntime's `quantize_dynamic` writes u8 weights with zero
//! points, stored as s8 by `w − 128`): with any nonzero zero point the kernel also sums its
//! input (per panel pixel or row of A) and subtracts `zw[c]·Σ (x − zx)` in the epilogue
//! (`_zw` in its name); with all zero it is the plain kernel, the compensation `zx·Σw[c]` the
//! only correction. Depthwise convolutions have their own kernel
//! (`super::dynamic_depthwise`); the few it refuses run here as a grouped implicit GEMM,
//! which says so in [`NodeLowering::fallback`].

use std::sync::Arc;

use qcc_ir::Activation;

use super::conv::{pack_qconv_weights, QConvKernel};
use super::dynamic_epilogue::{float_records, FloatStage};
use super::gemm::{pack_qgemm_weights, QGemmKernel};
use super::microkernel::{BlockEpilogue, QMicroKernel, RowOperand, K_GROUP};
use super::residual::{nonzero_weight_zero_points, Extras};
use super::{check_conv_geometry, int8_spec, unsupported, Int8Choice};
use crate::lower::kernel::{KernelError, KernelParam};
use crate::lower::node::{Arg, ConvGeometry, KernelCall, NodeLowering};
use crate::target::{Arch, Target};

/// A dynamically quantized convolution: everything [`lower_dynamic_qconv`] needs.
#[derive(Clone, Copy, Debug)]
pub struct DynamicConvParams<'a> {
    pub geometry: ConvGeometry,
    /// s8 weights in the ONNX layout `[C_out, C_in/group, kH, kW]`.
    pub weight: &'a [i8],
    /// Per output channel (`C_out` values) or one for all.
    pub weight_scales: &'a [f32],
    /// One (per tensor) or `C_out` values, in −128..=127; all zero is the plain kernel.
    pub weight_zero_points: &'a [i32],
    /// f32, `C_out` values.
    pub bias: &'a [f32],
    /// Add node input 5 (f32, the output's shape) before the activation.
    pub residual: bool,
    pub activation: Option<Activation>,
}

/// A dynamically quantized matrix product `Y[m, n] = A[m, k] · B[k, n]`.
#[derive(Clone, Copy, Debug)]
pub struct DynamicGemmParams<'a> {
    /// Rows of A (u8, `k` bytes per row) and of Y (f32).
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// s8 B, `[k, n]` row-major.
    pub weight: &'a [i8],
    /// Per column (`n` values) or one for all.
    pub weight_scales: &'a [f32],
    /// One (per tensor) or `n` values, in −128..=127; all zero is the plain kernel.
    pub weight_zero_points: &'a [i32],
    /// f32, `n` values.
    pub bias: &'a [f32],
    pub activation: Option<Activation>,
}

/// The block with the weight-zero-point term when `zero_points` has a nonzero value.
fn with_zero_points(
    micro: QMicroKernel,
    zero_points: Option<&[i32]>,
) -> Result<QMicroKernel, String> {
    micro.with_extras(Extras {
        weight_zero_points: zero_points.is_some(),
        residual: None,
    })
}

/// `Σ_k w[c, k]` per output (wrapping, like the accumulator).
fn weight_sums(rows: usize, k: usize, weight: impl Fn(usize, usize) -> i8) -> Vec<i32> {
    (0..rows)
        .map(|c| (0..k).fold(0i32, |s, kk| s.wrapping_add(i32::from(weight(c, kk)))))
        .collect()
}

/// The first operands of both kernels: the u8 input, its run-time scale and zero point
/// (node inputs 0 to 2, named `input`), the packed weights and the records (blobs 0 and 1).
fn quantized_input_operands(input: [&'static str; 3]) -> (Vec<KernelParam>, Vec<Arg>) {
    let mut params: Vec<KernelParam> = input.into_iter().map(KernelParam::input).collect();
    params.extend([
        KernelParam::input("w_packed"),
        KernelParam::input("records"),
    ]);
    let bytes = |index| Arg::Bytes { index, offset: 0 };
    let args = vec![
        Arg::input(0),
        Arg::input(1),
        Arg::input(2),
        bytes(0),
        bytes(1),
    ];
    (params, args)
}

/// Lowers a dynamically quantized convolution for `target` with its default kernel choice.
pub fn lower_dynamic_qconv(
    target: &Target,
    params: &DynamicConvParams,
) -> Result<NodeLowering, KernelError> {
    lower_dynamic_qconv_with(target.arch(), Int8Choice::for_target(target), params)
}

/// Lowers a dynamically quantized convolution with an explicit kernel choice.
pub fn lower_dynamic_qconv_with(
    arch: Arch,
    choice: Int8Choice,
    params: &DynamicConvParams,
) -> Result<NodeLowering, KernelError> {
    let g = params.geometry.walked();
    let kernel_name = "dynamic int8 Conv";
    let fail = |reason: String| unsupported(kernel_name, reason);
    check_conv_geometry(&g).map_err(fail)?;
    let zero_points = nonzero_weight_zero_points(Some(params.weight_zero_points), g.out_channels)
        .map_err(fail)?;
    let stage = FloatStage {
        activation: params.activation,
        residual: params.residual,
    };
    let micro = QMicroKernel::new(
        choice.tile,
        choice.dot,
        RowOperand::WeightPanels,
        BlockEpilogue::Float(stage),
        choice.k_unroll,
    )
    .and_then(|micro| with_zero_points(micro, zero_points))
    .map_err(fail)?;
    let k = g.reduction();
    let weight = params.weight;
    if weight.len() != g.out_channels * k {
        return Err(fail(format!(
            "weight has {} values, expected {}·{k}",
            weight.len(),
            g.out_channels
        )));
    }
    let sums = weight_sums(g.out_channels, k, |c, kk| weight[c * k + kk]);
    let (records, array_bytes) =
        float_records(&sums, params.weight_scales, params.bias, zero_points).map_err(fail)?;
    let packed = pack_qconv_weights(&g, weight, choice.tile.rows as usize).map_err(fail)?;
    let op = format!(
        "dqconv_n{}_c{}x{}x{}_o{}x{}x{}_{}_{}",
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_channels,
        g.out_h,
        g.out_w,
        g.short_name().replace(',', "_"),
        micro.name()
    );
    let (mut kernel_params, mut args) = quantized_input_operands(["x", "x_scale", "x_zero_point"]);
    if params.residual {
        kernel_params.push(KernelParam::input("residual"));
        args.push(Arg::input(5));
    }
    kernel_params.extend([KernelParam::output("y"), KernelParam::output("scratch")]);
    args.extend([Arg::output(0), Arg::Scratch { offset: 0 }]);
    let spec = int8_spec(arch, op, choice.tile, kernel_params);
    let kernel = QConvKernel::new_float(spec, g, micro, array_bytes);
    let scratch_bytes = kernel.scratch_bytes();
    let fallback = params.geometry.is_depthwise().then(|| {
        "dynamic int8 depthwise convolution runs as a grouped implicit GEMM (one channel per \
         group, a quarter of each dot product used): correct but slow"
            .to_string()
    });
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes: vec![packed, records],
        scratch_bytes,
        description: format!(
            "dynamic int8 implicit gemm {} {}",
            params.geometry.short_name(),
            micro.name()
        ),
        fallback,
        ..NodeLowering::default()
    })
}

/// Lowers a dynamically quantized matrix product for `target` with its default kernel
/// choice.
pub fn lower_dynamic_qgemm(
    target: &Target,
    params: &DynamicGemmParams,
) -> Result<NodeLowering, KernelError> {
    lower_dynamic_qgemm_with(target.arch(), Int8Choice::for_target(target), params)
}

/// Lowers a dynamically quantized matrix product with an explicit kernel choice.
pub fn lower_dynamic_qgemm_with(
    arch: Arch,
    choice: Int8Choice,
    params: &DynamicGemmParams,
) -> Result<NodeLowering, KernelError> {
    let kernel_name = "dynamic int8 Gemm";
    let fail = |reason: String| unsupported(kernel_name, reason);
    let (m, k, n) = (params.m, params.k, params.n);
    if k == 0 || n == 0 {
        return Err(fail(format!("empty product: k = {k}, n = {n}")));
    }
    let zero_points =
        nonzero_weight_zero_points(Some(params.weight_zero_points), n).map_err(fail)?;
    let stage = FloatStage {
        activation: params.activation,
        residual: false,
    };
    let rows = RowOperand::ActivationRows {
        k_rem: (k % K_GROUP) as u32,
    };
    let micro = QMicroKernel::new(
        choice.tile,
        choice.dot,
        rows,
        BlockEpilogue::Float(stage),
        choice.k_unroll,
    )
    .and_then(|micro| with_zero_points(micro, zero_points))
    .map_err(fail)?;
    let weight = params.weight;
    if k.checked_mul(n) != Some(weight.len()) {
        return Err(fail(format!(
            "B has {} values, expected k·n = {k}·{n}",
            weight.len()
        )));
    }
    let sums = weight_sums(n, k, |j, kk| weight[kk * n + j]);
    let (records, array_bytes) =
        float_records(&sums, params.weight_scales, params.bias, zero_points).map_err(fail)?;
    let packed = pack_qgemm_weights(weight, k, n, false, micro.nr() as usize).map_err(fail)?;
    let op = format!("dqgemm_k{k}_n{n}_{}", micro.name());
    let (mut kernel_params, mut args) = quantized_input_operands(["a", "a_scale", "a_zero_point"]);
    kernel_params.push(KernelParam::output("y"));
    args.push(Arg::output(0));
    // The `m` centred row sums of A, with weight zero points.
    let scratch_bytes = if zero_points.is_some() {
        kernel_params.push(KernelParam::output("row_sums"));
        args.push(Arg::Scratch { offset: 0 });
        4 * m
    } else {
        0
    };
    kernel_params.extend([
        KernelParam::size("m"),
        KernelParam::size("lda"),
        KernelParam::size("ldc"),
    ]);
    // Bytes between output rows: f32.
    args.extend([Arg::Size(m), Arg::Size(k), Arg::Size(4 * n)]);
    let spec = int8_spec(arch, op, choice.tile, kernel_params);
    let kernel = QGemmKernel::new_float(spec, micro, k, n, array_bytes);
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes: vec![packed, records],
        scratch_bytes,
        description: format!("dynamic int8 gemm {m}x{n}x{k} {}", micro.name()),
        ..NodeLowering::default()
    })
}
