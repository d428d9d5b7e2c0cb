//! int8 kernels: u8 activations (with a zero point) × s8 per-channel weights (symmetric, or
//! with per-channel zero points), i32 accumulators, an optional residual input added into
//! the accumulator (convolution), per-output-channel fixed-point requantization
//! ([`qcc_ir::requant`]) to u8 or i8, an optional clamp in the output's quantized domain
//! (fused ReLU/ReLU6): everything [`qcc_ir::op::Op::QuantizedConv`] and
//! [`qcc_ir::op::Op::QuantizedMatMul`] allow, bit for bit.
//!
//! Zero-point compensation: with `x` u8 of zero point `zx`,
//! `Σ (x − zx)·w = Σ x·w − zx·Σ w`, so the kernels multiply the raw bytes and the constant
//! `zx·Σ_k w[c, k]` is folded into the bias at compile time
//! (`bias'[c] = bias[c] − zx·Σ_k w[c, k]`, wrapping like the i32 accumulator). Padding
//! taps of a convolution read `zx` itself, contributing `(zx − zx)·w = 0`. aarch64's `sdot`
//! multiplies s8 × s8 only: there every activation enters as `x − 128`, and the bias
//! compensates `zx − 128` instead ([`DotProduct::activation_offset`]).
//!
//! [`lower_qconv`] and [`lower_qgemm`] turn a documented parameter struct into a
//! [`NodeLowering`] (input 0: u8 activations, NCHW for the convolution; output 0: u8 or i8)
//! whose byte blobs are the packed weights ([`Arg::Bytes`] 0) and the requantization records
//! (blob 1). The dot product is chosen from the target ([`DotProduct::for_target`]):
//! `vpdpbusd` where the target has AVX-512 VNNI or AVX-VNNI, `usdot` or `sdot` on aarch64,
//! the exact widening form elsewhere.
//!
//! Nonzero weight zero points and the residual are epilogue terms ([`residual`]): the
//! kernels without them are unchanged. With weight zero points the convolution sums each
//! packed im2col panel per pixel and the matrix product sums each row of A
//! (`rowsum`), and both subtract `zw[c]·Σ x` before requantizing; a residual is
//! read from node input 3 and added with i32 saturation. Their per-channel constants are a
//! third byte blob ([`epilogue_records`]).
//!
//! Dynamic quantization ([`dynamic`]): the same kernels with the input's scale and zero
//! point read at run time (the `zx·Σw` compensation moves from the bias into the epilogue)
//! and a float epilogue writing f32; [`dynamic_quantize`] computes that scale and zero point.
//!
//! Depthwise convolutions have their own kernel ([`depthwise::lower_qdepthwise`]); the ones it
//! does not take (a residual, weight zero points) run through [`lower_qconv`] as a grouped
//! implicit GEMM, which says so in [`NodeLowering::fallback`].

pub mod add;
pub mod bytes;
mod conv;
pub mod depthwise;
mod depthwise_plan;
pub mod dynamic;
pub mod dynamic_depthwise;
mod dynamic_epilogue;
#[cfg(test)]
mod dynamic_graph_tests;
pub mod dynamic_quantize;
#[cfg(test)]
mod dynamic_tests;
mod gemm;
#[cfg(test)]
mod gemm_tests;
mod microkernel;
pub mod pool;
pub mod quantize;
mod requant;
pub mod residual;
#[cfg(test)]
mod residual_tests;
mod rowsum;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use qcc_ir::requant::FixedPoint;

pub use conv::{pack_qconv_weights, packed_reduction, padded_channels, QConvKernel};
pub use dynamic::{
    lower_dynamic_qconv, lower_dynamic_qconv_with, lower_dynamic_qgemm, lower_dynamic_qgemm_with,
    DynamicConvParams, DynamicGemmParams,
};
pub use dynamic_epilogue::{float_records, FloatStage};
pub use dynamic_quantize::lower_dynamic_quantize;
pub use gemm::{lower_qgemm, lower_qgemm_with, pack_qgemm_weights, QGemmKernel, QGemmParams};
pub use microkernel::{BlockEpilogue, DotProduct, QMicroKernel, RowOperand, K_GROUP, LANES};
pub use requant::{requant_records, OutputQuant, OutputStage, RECORD_BYTES};
pub use residual::{epilogue_records, Extras, ResidualQuant, EXTRA_RECORD_BYTES};

use super::kernel::{Accumulator, KernelError, KernelParam, KernelSpec, Tile};
use super::node::{Arg, ConvGeometry, KernelCall, NodeLowering};
use crate::target::{Arch, Feature, Target};

/// The default unroll of the loop over groups of four `k`.
pub const DEFAULT_K_UNROLL: u32 = 4;

/// An int8 convolution: everything [`lower_qconv`] needs.
#[derive(Clone, Copy, Debug)]
pub struct QConvParams<'a> {
    pub geometry: ConvGeometry,
    /// s8 weights in the ONNX layout `[C_out, C_in/group, kH, kW]`, zero point 0.
    pub weight: &'a [i8],
    /// i32 bias in the accumulator's scale (`s_x·s_w[c]`), `C_out` values.
    pub bias: Option<&'a [i32]>,
    /// `s_x·s_w[c] / s_y` per output channel (`C_out` values) or one for all.
    pub requant: &'a [FixedPoint],
    /// The u8 input's zero point, 0..=255.
    pub input_zero_point: i32,
    /// Weight zero points per output channel (`C_out` values) or one for all, in
    /// −128..=127; `None` or all zero is the plain kernel.
    pub weight_zero_points: Option<&'a [i32]>,
    /// The residual added into the accumulator: node input 3 (u8, the output's shape).
    pub residual: Option<ResidualQuant<'a>>,
    pub output: OutputQuant,
}

/// The code-generation choices of an int8 kernel (defaults from the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Choice {
    pub dot: DotProduct,
    pub tile: Tile,
    pub k_unroll: u32,
}

impl DotProduct {
    /// `Vnni` where the fold into `vpdpbusd` exists (x86 with AVX-512 VNNI + VL or
    /// AVX-VNNI), `Widening` on x86 without; on aarch64 `Usdot` with i8mm (u8 × s8 in one
    /// `usdot`), `Sdot` with the dot-product extension only (activations flipped to s8,
    /// one `sdot`), `Vnni`'s tree (no fold: widening multiplies) with neither.
    pub fn for_target(target: &Target) -> DotProduct {
        #[cfg(test)]
        if let Some(dot) = FORCED_DOT_PRODUCT.get() {
            return dot;
        }
        match target.arch() {
            Arch::X86_64 => {
                let evex = target.has(Feature::Avx512vnni) && target.has(Feature::Avx512vl);
                if evex || target.has(Feature::AvxVnni) {
                    DotProduct::Vnni
                } else {
                    DotProduct::Widening
                }
            }
            // With i8mm the tree folds into `usdot`. Without it Cranelift 0.135 folds only
            // s8 × s8 into `sdot`, so the activations are flipped to s8 (`Sdot`); without
            // either the tree is widening multiplies and pairwise adds.
            Arch::Aarch64 if target.has(Feature::I8mm) => DotProduct::Usdot,
            Arch::Aarch64 if target.has(Feature::Dotprod) => DotProduct::Sdot,
            Arch::Aarch64 => DotProduct::Vnni,
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The dot product [`DotProduct::for_target`] returns on this thread, whatever the
    /// target: see [`with_dot_product`].
    static FORCED_DOT_PRODUCT: std::cell::Cell<Option<DotProduct>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` with every int8 lowering on this thread using `dot`: the x86 JIT then runs the
/// kernels of another target's dot product (`sdot`'s flipped activations and compensation
/// compute the same sums without the fold), through every test helper and the model
/// lowering unchanged.
#[cfg(test)]
pub(crate) fn with_dot_product<T>(dot: DotProduct, f: impl FnOnce() -> T) -> T {
    let previous = FORCED_DOT_PRODUCT.replace(Some(dot));
    let result = f();
    FORCED_DOT_PRODUCT.set(previous);
    result
}

impl Int8Choice {
    pub fn for_target(target: &Target) -> Int8Choice {
        let dot = DotProduct::for_target(target);
        Int8Choice {
            dot,
            tile: dot.default_tile(),
            k_unroll: DEFAULT_K_UNROLL,
        }
    }
}

pub(crate) fn unsupported(kernel: &str, reason: String) -> KernelError {
    KernelError::Unsupported {
        kernel: kernel.to_string(),
        reason,
    }
}

/// The spec of an int8 kernel: `{arch}_i32x4_{op}`.
pub(crate) fn int8_spec(
    arch: Arch,
    op: String,
    tile: Tile,
    params: Vec<KernelParam>,
) -> KernelSpec {
    KernelSpec {
        name: KernelSpec::symbol(arch, Accumulator::I32, LANES, &op),
        arch,
        op,
        accumulator: Accumulator::I32,
        lanes: LANES,
        tile,
        epilogue: None,
        params,
    }
}

/// `bias[c] − zx·Σ_k w[c, k]` for rows of `k` weights, wrapping as the accumulator does.
/// Callers pass the zero point in the dot product's domain, `zx − activation_offset()`
/// ([`DotProduct::activation_offset`]): with `sdot`, `zx − 128`, which also adds back the
/// `128·Σw` the flipped activations took out of the accumulator.
pub(crate) fn compensated_bias(
    weight: &[i8],
    rows: usize,
    k: usize,
    bias: Option<&[i32]>,
    input_zero_point: i32,
    row_weight: impl Fn(usize, usize) -> i8,
) -> Result<Vec<i32>, String> {
    if let Some(bias) = bias {
        if bias.len() != rows {
            return Err(format!("bias has {} values for {rows} outputs", bias.len()));
        }
    }
    if weight.len() != rows * k {
        return Err(format!(
            "weight has {} values, expected {rows}·{k}",
            weight.len()
        ));
    }
    Ok((0..rows)
        .map(|c| {
            let sum = (0..k).fold(0i32, |s, kk| s.wrapping_add(i32::from(row_weight(c, kk))));
            let base = bias.map_or(0, |b| b[c]);
            base.wrapping_sub(input_zero_point.wrapping_mul(sum))
        })
        .collect())
}

pub(crate) fn check_input_zero_point(kernel: &str, zero_point: i32) -> Result<u8, KernelError> {
    u8::try_from(zero_point).map_err(|_| {
        unsupported(
            kernel,
            format!("input zero point {zero_point} is not a u8 value"),
        )
    })
}

/// What every int8 implicit-GEMM convolution kernel needs of its (walked) geometry: groups
/// that divide the channels, nonzero strides and dilations, an input plane that 32-bit byte
/// offsets address.
pub(crate) fn check_conv_geometry(g: &ConvGeometry) -> Result<(), String> {
    if g.group == 0
        || !g.in_channels.is_multiple_of(g.group)
        || !g.out_channels.is_multiple_of(g.group)
    {
        return Err(format!(
            "group {} does not divide {} input and {} output channels",
            g.group, g.in_channels, g.out_channels
        ));
    }
    if g.stride_h == 0 || g.stride_w == 0 || g.dilation_h == 0 || g.dilation_w == 0 {
        return Err("zero stride or dilation".into());
    }
    let plane = g.in_h * g.in_w;
    if plane.saturating_mul(4).saturating_add(16) > i32::MAX as usize {
        return Err(format!(
            "input plane of {plane} bytes is too large for 32-bit offsets"
        ));
    }
    Ok(())
}

/// Lowers an int8 convolution for `target` with its default kernel choice.
pub fn lower_qconv(target: &Target, params: &QConvParams) -> Result<NodeLowering, KernelError> {
    lower_qconv_with(target.arch(), Int8Choice::for_target(target), params)
}

/// Lowers an int8 convolution with an explicit kernel choice (tests and benchmarks).
pub fn lower_qconv_with(
    arch: Arch,
    choice: Int8Choice,
    params: &QConvParams,
) -> Result<NodeLowering, KernelError> {
    let g = params.geometry.walked();
    let kernel_name = "int8 Conv";
    let fail = |reason: String| unsupported(kernel_name, reason);
    check_conv_geometry(&g).map_err(fail)?;
    let zx = check_input_zero_point(kernel_name, params.input_zero_point)?;
    let stage = OutputStage::new(&params.output, params.requant).map_err(fail)?;
    let rows = RowOperand::WeightPanels;
    let weight_zero_points =
        residual::nonzero_weight_zero_points(params.weight_zero_points, g.out_channels)
            .map_err(fail)?;
    let residual_zero_point = params
        .residual
        .as_ref()
        .map(residual::residual_zero_point)
        .transpose()
        .map_err(fail)?;
    let extras = Extras {
        weight_zero_points: weight_zero_points.is_some(),
        residual: residual_zero_point,
    };
    let micro = QMicroKernel::new(choice.tile, choice.dot, rows, stage, choice.k_unroll)
        .and_then(|micro| micro.with_extras(extras))
        .map_err(fail)?;
    let cin_g = g.in_channels / g.group;
    let taps = g.kernel_h * g.kernel_w;
    let k = cin_g * taps;
    let weight = params.weight;
    let mut bias = compensated_bias(
        weight,
        g.out_channels,
        k,
        params.bias,
        params.input_zero_point - choice.dot.activation_offset(),
        |c, kk| weight[c * k + kk],
    )
    .map_err(fail)?;
    if let Some(zw) = weight_zero_points {
        // The pixel sums run over the packed panel, whose padding taps and padding channels
        // hold zx: K is the packed reduction.
        residual::weight_zero_point_bias(&mut bias, zw, packed_reduction(&g), zx);
    }
    let records = requant_records(&bias, params.requant).map_err(fail)?;
    let packed = pack_qconv_weights(&g, weight, choice.tile.rows as usize).map_err(fail)?;
    let mut bytes = vec![packed, records];
    if extras.any() {
        let records =
            epilogue_records(g.out_channels, weight_zero_points, params.residual.as_ref())
                .map_err(fail)?;
        bytes.push(records);
    }
    let op = format!(
        "qconv_n{}_c{}x{}x{}_o{}x{}x{}_{}_zx{}_{}",
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_channels,
        g.out_h,
        g.out_w,
        g.short_name().replace(',', "_"),
        zx,
        micro.name()
    );
    let bytes_arg = |index| Arg::Bytes { index, offset: 0 };
    let mut kernel_params = vec![
        KernelParam::input("x"),
        KernelParam::input("w_packed"),
        KernelParam::input("requant"),
    ];
    let mut args = vec![Arg::input(0), bytes_arg(0), bytes_arg(1)];
    if extras.any() {
        kernel_params.push(KernelParam::input("extras"));
        args.push(bytes_arg(2));
    }
    if extras.residual.is_some() {
        kernel_params.push(KernelParam::input("residual"));
        args.push(Arg::input(3));
    }
    kernel_params.extend([KernelParam::output("y"), KernelParam::output("scratch")]);
    args.extend([Arg::output(0), Arg::Scratch { offset: 0 }]);
    let spec = int8_spec(arch, op, choice.tile, kernel_params);
    let kernel = QConvKernel::new(spec, g, micro, zx);
    let scratch_bytes = kernel.scratch_bytes();
    let fallback = params.geometry.is_depthwise().then(|| {
        "int8 depthwise convolution with a residual or weight zero points runs as a grouped \
         implicit GEMM (one channel per group, a quarter of each dot product used): correct \
         but slow"
            .to_string()
    });
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes,
        scratch_bytes,
        description: format!(
            "int8 implicit gemm {} {}",
            params.geometry.short_name(),
            micro.name()
        ),
        fallback,
        ..NodeLowering::default()
    })
}
