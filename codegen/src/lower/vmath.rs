//! Transcendental functions in CLIF, for f32 scalars and f32x4 vectors alike.
//!
//! Written as polynomials rather than calls to libm's `expf`/`tanhf`: kernels stay free of
//! external symbols (objects link without libm, the JIT needs no symbol lookup) and the
//! vector loop stays vectorised. Accuracy against f64-exact values, measured by
//! `elementwise_tests` over a dense grid of [-100, 100] (step 1e-4, plus [-1, 1] in steps of
//! 1e-5 and powers of two down to 2^-40): Sigmoid 1.75e-7 with FMA and 1.81e-7 without, Tanh
//! 1.59e-7 and 1.56e-7; the bounds asserted are [`SIGMOID_MAX_REL_ERROR`] and
//! [`TANH_MAX_REL_ERROR`]. Results below the smallest normal f32 are flushed to zero.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

use super::kernel::f32_constant;

/// Maximum relative error of Sigmoid against the f64-exact value, on normal results.
pub const SIGMOID_MAX_REL_ERROR: f64 = 2.0e-7;
/// Maximum relative error of Tanh against the f64-exact value, on normal results.
pub const TANH_MAX_REL_ERROR: f64 = 2.0e-7;

/// ln(2^-126): below this, exp's result is not a normal f32 and is flushed to zero.
const EXP_MIN_ARG: f32 = -87.336_54;
/// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^15 (LN2_HI has 9 significant bits).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this |x|, tanh uses its odd polynomial: `(1 - e) / (1 + e)` loses digits near 0.
const TANH_POLY_LIMIT: f32 = 0.55;
/// tanh(x) = x + x·z·Q(z), z = x², on |x| ≤ 0.55: coefficients of Q, constant term first,
/// fitted by relative least squares in f64 and rounded to f32 (max rel error 6.4e-8 there).
const TANH_Q: [f32; 5] = [
    -0.333_333_2,
    0.133_326_32,
    -0.053_856_656,
    0.021_088_144,
    -0.006_295_95,
];

/// Float element-wise helpers that work for `F32` and `F32X4` values.
pub(crate) struct FloatOps {
    pub ty: Type,
    /// Use fused multiply-add in polynomials (only where it is one instruction).
    pub fma: bool,
}

impl FloatOps {
    pub fn constant(&self, b: &mut FunctionBuilder, value: f32) -> Value {
        f32_constant(b, self.ty, value)
    }

    /// `if lhs <cc> rhs { then } else { otherwise }`, lane by lane.
    pub fn select_cmp(
        &self,
        b: &mut FunctionBuilder,
        cc: FloatCC,
        lhs: Value,
        rhs: Value,
        then: Value,
        otherwise: Value,
    ) -> Value {
        let condition = b.ins().fcmp(cc, lhs, rhs);
        if self.ty.is_vector() {
            // The comparison yields an all-ones/all-zeros i32x4 mask: reinterpret it as f32x4.
            let mask = b.ins().bitcast(self.ty, MemFlagsData::new(), condition);
            b.ins().bitselect(mask, then, otherwise)
        } else {
            b.ins().select(condition, then, otherwise)
        }
    }

    /// `magnitude` (non-negative) with the sign bit of `sign`. x86 has no f32x4 `fcopysign`
    /// lowering in this Cranelift, so vectors OR in the masked sign bit.
    pub fn copy_sign(&self, b: &mut FunctionBuilder, magnitude: Value, sign: Value) -> Value {
        if self.ty.is_vector() {
            let sign_mask = self.constant(b, -0.0);
            let sign_bit = b.ins().band(sign, sign_mask);
            b.ins().bor(magnitude, sign_bit)
        } else {
            b.ins().fcopysign(magnitude, sign)
        }
    }

    /// `a * b + c`, fused when the target has FMA.
    pub fn mul_add(&self, b: &mut FunctionBuilder, x: Value, y: Value, z: Value) -> Value {
        if self.fma {
            b.ins().fma(x, y, z)
        } else {
            let product = b.ins().fmul(x, y);
            b.ins().fadd(product, z)
        }
    }

    /// Horner evaluation of `coefficients` (constant term first) at `x`.
    fn polynomial(&self, b: &mut FunctionBuilder, x: Value, coefficients: &[f32]) -> Value {
        let mut acc = self.constant(b, coefficients[coefficients.len() - 1]);
        for &c in coefficients.iter().rev().skip(1) {
            let c = self.constant(b, c);
            acc = self.mul_add(b, acc, x, c);
        }
        acc
    }

    /// exp(x) for x ≤ 0 (or NaN): Cody–Waite reduction x = n·ln2 + r with |r| ≤ ln2/2, a
    /// degree-7 Taylor polynomial for e^r (truncation error < 6e-9 relative), and 2^n built in
    /// the exponent bits. Results below the smallest normal f32 become 0.
    pub fn exp_non_positive(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let int_ty = if self.ty.is_vector() {
            types::I32X4
        } else {
            types::I32
        };
        let min_arg = self.constant(b, EXP_MIN_ARG);
        // fmax propagates NaN, so NaN stays NaN through the reduction.
        let clamped = b.ins().fmax(x, min_arg);
        let log2e = self.constant(b, std::f32::consts::LOG2_E);
        let scaled = b.ins().fmul(clamped, log2e);
        let n = b.ins().nearest(scaled);
        let ln2_hi = self.constant(b, -LN2_HI);
        let ln2_lo = self.constant(b, -LN2_LO);
        let r = self.mul_add(b, n, ln2_hi, clamped);
        let r = self.mul_add(b, n, ln2_lo, r);
        const TAYLOR: [f32; 8] = [
            1.0,
            1.0,
            1.0 / 2.0,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5040.0,
        ];
        let p = self.polynomial(b, r, &TAYLOR);
        // 2^n: n is in [-126, 0], so n + 127 is a valid biased exponent.
        let n_int = b.ins().fcvt_to_sint_sat(int_ty, n);
        let bias = b.ins().iconst(types::I32, 127);
        let bias = if self.ty.is_vector() {
            b.ins().splat(int_ty, bias)
        } else {
            bias
        };
        let biased = b.ins().iadd(n_int, bias);
        let bits = b.ins().ishl_imm_u(biased, 23);
        let two_n = b.ins().bitcast(self.ty, MemFlagsData::new(), bits);
        let result = b.ins().fmul(p, two_n);
        let zero = self.constant(b, 0.0);
        self.select_cmp(b, FloatCC::LessThan, x, min_arg, zero, result)
    }

    /// 1 / (1 + e^-x), from e = exp(-|x|) ≤ 1 so nothing overflows: 1/(1+e) for x ≥ 0 and
    /// e/(1+e) for x < 0 (which keeps relative accuracy for very negative x).
    pub fn sigmoid(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let magnitude = b.ins().fabs(x);
        let negated = b.ins().fneg(magnitude);
        let e = self.exp_non_positive(b, negated);
        let one = self.constant(b, 1.0);
        let denominator = b.ins().fadd(one, e);
        let positive = b.ins().fdiv(one, denominator);
        let negative = b.ins().fdiv(e, denominator);
        let zero = self.constant(b, 0.0);
        self.select_cmp(b, FloatCC::LessThan, x, zero, negative, positive)
    }

    /// tanh(x) = sign(x)·t(|x|), t an odd polynomial below 0.55 and (1 - e)/(1 + e) with
    /// e = exp(-2|x|) above. Working on |x| and copying the sign last keeps tanh(-0) = -0.
    pub fn tanh(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let magnitude = b.ins().fabs(x);
        let minus_two = self.constant(b, -2.0);
        let argument = b.ins().fmul(magnitude, minus_two);
        let e = self.exp_non_positive(b, argument);
        let one = self.constant(b, 1.0);
        let numerator = b.ins().fsub(one, e);
        let denominator = b.ins().fadd(one, e);
        let large = b.ins().fdiv(numerator, denominator);

        let z = b.ins().fmul(magnitude, magnitude);
        let q = self.polynomial(b, z, &TANH_Q);
        let cube = b.ins().fmul(magnitude, z);
        let small = self.mul_add(b, cube, q, magnitude);

        let limit = self.constant(b, TANH_POLY_LIMIT);
        let result = self.select_cmp(b, FloatCC::LessThan, magnitude, limit, small, large);
        self.copy_sign(b, result, x)
    }
}
