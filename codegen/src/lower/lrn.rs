//! fp32 LRN across channels (NCHW).
//!
//! `y[n,c,s] = x[n,c,s] / (bias + alpha/size · Σ x[n,k,s]²)^beta`, the sum over the channels
//! `k` in `c - ⌊(size-1)/2⌋ ..= c + ⌈(size-1)/2⌉` that exist (ONNX; `s` is any spatial
//! position). One kernel, `void k(const float *x, float *y, size_t batch, size_t channels,
//! size_t plane)`, with `size`, `alpha`, `beta` and `bias` baked in (and spelled in the symbol
//! name, the floats as their bit patterns). The four lanes are four adjacent spatial
//! positions of one channel: every load is a contiguous vector.
//!
//! The arithmetic is the interpreter's (`qcc_ir::eval::reduce::lrn`) up to the power: the
//! squares summed in channel order, `alpha / size` rounded once at compile time, the base
//! formed by a separate multiply and add (never fused), and `x` *divided* by the power. So
//! the base is bit-identical, and the only difference is `base^beta`:
//! - `beta = 0` and `beta = 1`: exact (`x / 1`, `x / base`): bit-exact;
//! - `beta = 0.5`: `sqrt(base)`, correctly rounded: within an ulp or two of libm's `powf`;
//! - `beta = 0.75` (AlexNet, GoogLeNet): `sqrt(base) · sqrt(sqrt(base))`;
//! - any other `beta`: `exp(-beta · ln(base))` with the exp of [`super::vmath`] and a log
//!   polynomial below, then `x · that` (or `x / exp(beta · ln(base))` where `-beta·ln(base)`
//!   is positive, so the exp argument is never positive). Its error grows with
//!   `|beta · ln(base)|`: the rounding of that product is amplified by the exp.
//!
//! The bounds the tests assert are [`LRN_SQRT_MAX_REL_ERROR`] and
//! [`lrn_general_max_rel_error`]. The general path needs `bias` to be a positive normal
//! float, and every path needs `alpha >= 0` and finite attributes, so the base is positive
//! (or +inf or NaN) and the special cases agree with `powf` on every input; other attributes
//! are refused, naming the reason.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::LrnAttrs;

use super::elementwise::LANES;
use super::kernel::{
    counted_loop, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use super::node::{Arg, KernelCall, NodeLowering};
use super::vmath::FloatOps;
use crate::target::Arch;

/// Maximum relative error against the interpreter for `beta` 0.5 and 0.75 (sqrt paths).
pub const LRN_SQRT_MAX_REL_ERROR: f64 = 4.0e-7;

/// Maximum relative error against the interpreter on the general `beta` path, for a base of
/// `base`: exp amplifies the rounding of `beta · ln(base)`. Measured: at most 45% of this
/// (1.6e-6 for beta 1.3 and bases near 1e6).
pub fn lrn_general_max_rel_error(beta: f32, base: f32) -> f64 {
    4.0e-7 + 2.0e-7 * f64::from(beta).abs() * f64::from(base).ln().abs()
}

/// ln 2 split so that `e · LN2_HI` is exact for the exponents of f32 (LN2_HI has 9
/// significant bits).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// ln(m) = 2·atanh(t), t = (m-1)/(m+1), for m in [√½, √2] (|t| ≤ 0.1716):
/// `t · (2 + 2t²/3 + 2t⁴/5 + 2t⁶/7 + 2t⁸/9)`, truncation below 1e-9 relative.
const ATANH_SERIES: [f32; 5] = [2.0, 2.0 / 3.0, 2.0 / 5.0, 2.0 / 7.0, 2.0 / 9.0];

/// How `base^beta` is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Power {
    /// `beta = 0`: 1.
    One,
    /// `beta = 1`: the base.
    Identity,
    /// `beta = 0.5`.
    Sqrt,
    /// `beta = 0.75`.
    ThreeQuarters,
    /// Anything else, through exp and ln.
    General(f32),
}

/// LRN across channels with baked attributes (see the module docs).
#[derive(Clone, Debug)]
pub struct LrnKernel {
    size: usize,
    alpha_over_size: f32,
    bias: f32,
    power: Power,
    spec: KernelSpec,
}

impl LrnKernel {
    pub fn new(arch: Arch, attrs: &LrnAttrs) -> Result<LrnKernel, KernelError> {
        let unsupported = |reason: String| KernelError::Unsupported {
            kernel: format!("LRN {attrs:?}"),
            reason,
        };
        let finite = attrs.alpha.is_finite() && attrs.beta.is_finite() && attrs.bias.is_finite();
        if attrs.size == 0 || !finite || attrs.alpha < 0.0 {
            return Err(unsupported(
                "needs size >= 1, finite attributes and alpha >= 0".to_string(),
            ));
        }
        let beta = attrs.beta;
        let power = if beta == 0.0 {
            Power::One
        } else if beta == 1.0 {
            Power::Identity
        } else if beta == 0.5 {
            Power::Sqrt
        } else if beta == 0.75 {
            Power::ThreeQuarters
        } else {
            Power::General(beta)
        };
        // `bias` is finite here, so `<` is the negation of `>=`.
        if matches!(power, Power::General(_)) && attrs.bias < f32::MIN_POSITIVE {
            return Err(unsupported(format!(
                "beta {beta} is computed through ln(base), which needs bias to be a positive \
                 normal float"
            )));
        }
        let op = format!(
            "lrn_n{}_a{:08x}_b{:08x}_k{:08x}",
            attrs.size,
            attrs.alpha.to_bits(),
            attrs.beta.to_bits(),
            attrs.bias.to_bits()
        );
        let spec = KernelSpec::f32x4_stream(
            arch,
            op,
            None,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::size("batch"),
                KernelParam::size("channels"),
                KernelParam::size("plane"),
            ],
        );
        Ok(LrnKernel {
            size: attrs.size,
            // The interpreter's `alpha / size as f32`, rounded the same way.
            alpha_over_size: attrs.alpha / attrs.size as f32,
            bias: attrs.bias,
            power,
            spec,
        })
    }

    /// `x / base^beta` for one value (or four lanes).
    fn emit_normalize(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        x: Value,
        base: Value,
    ) -> Value {
        match self.power {
            Power::One => {
                let one = ops.constant(b, 1.0);
                b.ins().fdiv(x, one)
            }
            Power::Identity => b.ins().fdiv(x, base),
            Power::Sqrt => {
                let root = b.ins().sqrt(base);
                b.ins().fdiv(x, root)
            }
            Power::ThreeQuarters => {
                let root = b.ins().sqrt(base);
                let fourth_root = b.ins().sqrt(root);
                let power = b.ins().fmul(root, fourth_root);
                b.ins().fdiv(x, power)
            }
            Power::General(beta) => {
                let log = emit_ln(ops, b, base);
                let minus_beta = ops.constant(b, -beta);
                let exponent = b.ins().fmul(minus_beta, log);
                // exp(-|q|) ≤ 1: x · exp(q) for q ≤ 0, x / exp(-q) otherwise.
                let magnitude = b.ins().fabs(exponent);
                let negated = b.ins().fneg(magnitude);
                let e = ops.exp_non_positive(b, negated);
                let scaled = b.ins().fmul(x, e);
                let divided = b.ins().fdiv(x, e);
                let zero = ops.constant(b, 0.0);
                ops.select_cmp(b, FloatCC::LessThanOrEqual, exponent, zero, scaled, divided)
            }
        }
    }

    /// The outputs of channel `c` at spatial positions `s..s+lanes` (one lane per position).
    /// `channel_at(k)` is the address of channel `k`'s element at `s`.
    #[allow(clippy::too_many_arguments)]
    fn emit_positions(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        window: (Value, Value),
        channel_at: &dyn Fn(&mut FunctionBuilder, Value) -> Value,
        c: Value,
        out: Value,
    ) {
        let square_sum = b.declare_var(ops.ty);
        let zero = ops.constant(b, 0.0);
        b.def_var(square_sum, zero);
        counted_loop(b, context.pointer, window.0, window.1, 1, |b, k| {
            let at = channel_at(b, k);
            let v = b.ins().load(ops.ty, flags(), at, 0);
            let square = b.ins().fmul(v, v);
            let sum = b.use_var(square_sum);
            let sum = b.ins().fadd(sum, square);
            b.def_var(square_sum, sum);
        });
        let sum = b.use_var(square_sum);
        let alpha_over_size = ops.constant(b, self.alpha_over_size);
        let bias = ops.constant(b, self.bias);
        // Multiply, then add: the interpreter's rounding (no fma).
        let scaled = b.ins().fmul(alpha_over_size, sum);
        let base = b.ins().fadd(bias, scaled);
        let at = channel_at(b, c);
        let x = b.ins().load(ops.ty, flags(), at, 0);
        let y = self.emit_normalize(ops, b, x, base);
        b.ins().store(flags(), y, out, 0);
    }
}

/// Integer type with the lanes of `ty`, and an integer constant of it.
fn int_constant(b: &mut FunctionBuilder, ty: Type, value: i64) -> Value {
    let scalar = b.ins().iconst(types::I32, value);
    if ty.is_vector() {
        b.ins().splat(types::I32X4, scalar)
    } else {
        scalar
    }
}

/// ln(x) for x positive normal, +inf (→ +inf) or NaN (→ NaN): x = 2^e · m with m in
/// [√½, √2), ln x = e·ln2 + 2·atanh((m-1)/(m+1)).
fn emit_ln(ops: &FloatOps, b: &mut FunctionBuilder, x: Value) -> Value {
    let int_ty = if ops.ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    };
    let bits = b.ins().bitcast(int_ty, MemFlagsData::new(), x);
    let biased = b.ins().ushr_imm_u(bits, 23);
    let bias = int_constant(b, ops.ty, 127);
    let exponent = b.ins().isub(biased, bias);
    let mantissa_mask = int_constant(b, ops.ty, 0x007f_ffff);
    let one_bits = int_constant(b, ops.ty, 0x3f80_0000);
    let mantissa_bits = b.ins().band(bits, mantissa_mask);
    let mantissa_bits = b.ins().bor(mantissa_bits, one_bits);
    let m = b.ins().bitcast(ops.ty, MemFlagsData::new(), mantissa_bits);
    let e = b.ins().fcvt_from_sint(ops.ty, exponent);
    // Centre m on 1: above √2, halve it and count one more power of two.
    let sqrt2 = ops.constant(b, std::f32::consts::SQRT_2);
    let half = ops.constant(b, 0.5);
    let one = ops.constant(b, 1.0);
    let halved = b.ins().fmul(m, half);
    let e_plus = b.ins().fadd(e, one);
    let centred = ops.select_cmp(b, FloatCC::GreaterThan, m, sqrt2, halved, m);
    let e = ops.select_cmp(b, FloatCC::GreaterThan, m, sqrt2, e_plus, e);
    let m = centred;
    let numerator = b.ins().fsub(m, one);
    let denominator = b.ins().fadd(m, one);
    let t = b.ins().fdiv(numerator, denominator);
    let t2 = b.ins().fmul(t, t);
    let mut series = ops.constant(b, ATANH_SERIES[ATANH_SERIES.len() - 1]);
    for &c in ATANH_SERIES.iter().rev().skip(1) {
        let c = ops.constant(b, c);
        series = ops.mul_add(b, series, t2, c);
    }
    let ln_m = b.ins().fmul(t, series);
    let ln2_lo = ops.constant(b, LN2_LO);
    let ln2_hi = ops.constant(b, LN2_HI);
    let low = ops.mul_add(b, e, ln2_lo, ln_m);
    let ln = ops.mul_add(b, e, ln2_hi, low);
    // +inf and NaN fail `x < inf` and are their own logarithm.
    let inf = ops.constant(b, f32::INFINITY);
    ops.select_cmp(b, FloatCC::LessThan, x, inf, ln, x)
}

impl Kernel for LrnKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, batch, channels, plane] = params else {
            return Err(KernelError::Unsupported {
                kernel: self.spec.name.clone(),
                reason: format!("expected 5 parameters, got {}", params.len()),
            });
        };
        let (x, y, batch, channels, plane) = (*x, *y, *batch, *channels, *plane);
        let pointer = context.pointer;
        let vector = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let scalar = FloatOps {
            ty: types::F32,
            fma: context.fma,
        };
        // floor((size-1)/2) channels before, ceil((size-1)/2) = floor(size/2) after.
        let (before, after) = ((self.size - 1) / 2, self.size / 2);
        let plane_bytes = b.ins().ishl_imm_u(plane, 2);
        let batch_bytes = b.ins().imul(plane_bytes, channels);
        let zero = b.ins().iconst(pointer, 0);
        counted_loop(b, pointer, zero, batch, 1, |b, n| {
            let offset = b.ins().imul(n, batch_bytes);
            let x_batch = b.ins().iadd(x, offset);
            let y_batch = b.ins().iadd(y, offset);
            counted_loop(b, pointer, zero, channels, 1, |b, c| {
                // The window [lo, hi) of channels that exist.
                let lowered = b.ins().iadd_imm_s(c, -(before as i64));
                let has_before =
                    b.ins()
                        .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, c, before as i64);
                let lo = b.ins().select(has_before, lowered, zero);
                let raised = b.ins().iadd_imm_s(c, after as i64 + 1);
                let hi = b.ins().umin(raised, channels);
                let channel_offset = b.ins().imul(c, plane_bytes);
                let y_channel = b.ins().iadd(y_batch, channel_offset);
                let positions = |ops: &FloatOps, b: &mut FunctionBuilder, s: Value| {
                    let s_bytes = b.ins().ishl_imm_u(s, 2);
                    let x_position = b.ins().iadd(x_batch, s_bytes);
                    let channel_at = |b: &mut FunctionBuilder, k: Value| {
                        let offset = b.ins().imul(k, plane_bytes);
                        b.ins().iadd(x_position, offset)
                    };
                    let out = b.ins().iadd(y_channel, s_bytes);
                    self.emit_positions(ops, b, context, (lo, hi), &channel_at, c, out);
                };
                let tail = counted_loop(b, pointer, zero, plane, i64::from(LANES), |b, s| {
                    positions(&vector, b, s)
                });
                counted_loop(b, pointer, tail, plane, 1, |b, s| positions(&scalar, b, s));
            });
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers LRN on an NCHW input of `dims` (input 0 → output 0).
pub fn lower_lrn(
    arch: Arch,
    attrs: &LrnAttrs,
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    if dims.len() < 3 {
        return Err(KernelError::Unsupported {
            kernel: format!("LRN on {dims:?}"),
            reason: "needs batch, channel and spatial axes (rank >= 3)".to_string(),
        });
    }
    let kernel = LrnKernel::new(arch, attrs)?;
    let (batch, channels) = (dims[0], dims[1]);
    let plane: usize = dims[2..].iter().product();
    let mut lowering = NodeLowering {
        description: format!(
            "lrn size {} beta {} ({:?}) on {batch} x {channels} x {plane}",
            attrs.size, attrs.beta, kernel.power
        ),
        ..NodeLowering::default()
    };
    if batch * channels * plane > 0 {
        lowering.calls.push(KernelCall::new(
            std::sync::Arc::new(kernel),
            vec![
                Arg::input(0),
                Arg::output(0),
                Arg::Size(batch),
                Arg::Size(channels),
                Arg::Size(plane),
            ],
        )?);
    }
    Ok(lowering)
}

#[cfg(test)]
#[path = "lrn_tests.rs"]
mod tests;
