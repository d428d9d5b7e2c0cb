//! qcc's realized int8 addition ([`qcc_ir::Op::QuantizedAdd`]), u8 + u8 → u8, same shapes:
//!
//! ```text
//! q = clamp(sat_u8(zp_y + ((a_m·(a − zp_a) + b_m·(b − zp_b) + 2^(n−1)) >> n)))
//! ```
//!
//! with `(a_m, b_m, n)` the op's [`AddMultipliers`] (no rounding term when `n = 0`). The
//! multipliers are below 2^15 and `|a − zp_a| ≤ 255`, so every term fits in i32: the kernel
//! computes exactly the interpreter's i32 expression in i32x4 lanes (`imul`, arithmetic
//! shift), 16 elements per step (each input's 16 bytes widened to four i32x4), then a scalar
//! tail with the same operations. Saturation and the fused clamp are one clamp to their
//! intersection. Zero points, multipliers, shift and clamp are baked and spelled in the
//! symbol.

use std::sync::Arc;

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::requant::{AddMultipliers, ADD_MULTIPLIER_LIMIT};

use super::bytes::{byte_spec, byte_stream, narrow_store_u8x16, widen_u8x16};
use super::{check_input_zero_point, unsupported};
use crate::lower::kernel::{
    arity_error, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::target::Arch;

/// Everything baked into a [`QAddKernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QAddParams {
    pub a_zero_point: u8,
    pub b_zero_point: u8,
    pub y_zero_point: u8,
    pub multipliers: AddMultipliers,
    /// Inclusive output bounds: `[0, 255]` intersected with the fused clamp.
    pub bounds: (u8, u8),
}

/// `void k(const uint8_t *a, const uint8_t *b, uint8_t *y, size_t n)`: see the module docs.
/// `y` may alias `a` or `b` (each element is read before it is written).
#[derive(Clone, Debug)]
pub struct QAddKernel {
    params: QAddParams,
    spec: KernelSpec,
}

impl QAddKernel {
    pub fn new(arch: Arch, params: QAddParams) -> QAddKernel {
        let m = params.multipliers;
        let op = format!(
            "qadd_u8_za{}_zb{}_zy{}_ma{}_mb{}_n{}_c{}_{}",
            params.a_zero_point,
            params.b_zero_point,
            params.y_zero_point,
            m.a,
            m.b,
            m.shift,
            params.bounds.0,
            params.bounds.1
        );
        let spec = byte_spec(
            arch,
            op,
            vec![
                KernelParam::input("a"),
                KernelParam::input("b"),
                KernelParam::output("y"),
                KernelParam::size("n"),
            ],
        );
        QAddKernel { params, spec }
    }

    /// The constants of [`QAddKernel::add`] as `ty` (`I32` or `I32X4`), made once before the
    /// loops.
    fn constants(&self, b: &mut FunctionBuilder, ty: Type) -> AddConstants {
        let p = &self.params;
        let m = p.multipliers;
        let mut int = |v: i64| {
            let scalar = b.ins().iconst(types::I32, v);
            if ty.is_vector() {
                b.ins().splat(ty, scalar)
            } else {
                scalar
            }
        };
        let round = (m.shift > 0).then(|| 1i64 << (m.shift - 1));
        AddConstants {
            a_zero_point: int(i64::from(p.a_zero_point)),
            b_zero_point: int(i64::from(p.b_zero_point)),
            a_multiplier: int(i64::from(m.a)),
            b_multiplier: int(i64::from(m.b)),
            round: round.map(&mut int),
            y_zero_point: int(i64::from(p.y_zero_point)),
            low: int(i64::from(p.bounds.0)),
            high: int(i64::from(p.bounds.1)),
        }
    }

    /// The sum of i32 (or i32x4, matching `k`) `x` and `y`, requantized to 0..=255: the
    /// interpreter's i32 expression.
    fn add(&self, b: &mut FunctionBuilder, k: &AddConstants, x: Value, y: Value) -> Value {
        let da = b.ins().isub(x, k.a_zero_point);
        let db = b.ins().isub(y, k.b_zero_point);
        let scaled_a = b.ins().imul(da, k.a_multiplier);
        let scaled_b = b.ins().imul(db, k.b_multiplier);
        let mut sum = b.ins().iadd(scaled_a, scaled_b);
        if let Some(round) = k.round {
            sum = b.ins().iadd(sum, round);
            let shift = b
                .ins()
                .iconst(types::I32, i64::from(self.params.multipliers.shift));
            sum = b.ins().sshr(sum, shift);
        }
        let shifted = b.ins().iadd(sum, k.y_zero_point);
        let clamped = b.ins().smax(shifted, k.low);
        b.ins().smin(clamped, k.high)
    }
}

/// Splatted (or scalar) constants of the addition; `round` is absent for shift 0.
struct AddConstants {
    a_zero_point: Value,
    b_zero_point: Value,
    a_multiplier: Value,
    b_multiplier: Value,
    round: Option<Value>,
    y_zero_point: Value,
    low: Value,
    high: Value,
}

impl Kernel for QAddKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [a, rhs, y, n] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (a, rhs, y, n) = (*a, *rhs, *y, *n);
        let vector = self.constants(b, types::I32X4);
        let scalar = self.constants(b, types::I32);
        let zero = b.ins().iconst(context.pointer, 0);
        byte_stream(
            b,
            context.pointer,
            zero,
            n,
            |b, i| {
                let from_a = b.ins().iadd(a, i);
                let from_b = b.ins().iadd(rhs, i);
                let xa = widen_u8x16(b, from_a);
                let xb = widen_u8x16(b, from_b);
                let sums = [0, 1, 2, 3].map(|k| self.add(b, &vector, xa[k], xb[k]));
                let to = b.ins().iadd(y, i);
                narrow_store_u8x16(b, sums, to);
            },
            |b, i| {
                let from_a = b.ins().iadd(a, i);
                let from_b = b.ins().iadd(rhs, i);
                let xa = b.ins().uload8(types::I32, flags(), from_a, 0);
                let xb = b.ins().uload8(types::I32, flags(), from_b, 0);
                let sum = self.add(b, &scalar, xa, xb);
                let to = b.ins().iadd(y, i);
                b.ins().istore8(flags(), sum, to, 0);
            },
        );
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers QuantizedAdd of two u8 inputs of `elements` elements each (inputs 0 and 1) to u8
/// (output 0). Zero points are u8 values (0..=255); `clamp` is the fused activation's
/// inclusive range in the output's (u8) domain, intersected with `[0, 255]`.
pub fn lower_qadd(
    arch: Arch,
    elements: usize,
    a_zero_point: i32,
    b_zero_point: i32,
    y_zero_point: i32,
    mult: AddMultipliers,
    clamp: (i32, i32),
) -> Result<NodeLowering, KernelError> {
    let name = "QuantizedAdd";
    let fail = |reason: String| unsupported(name, reason);
    let a_zero_point = check_input_zero_point(name, a_zero_point)?;
    let b_zero_point = check_input_zero_point(name, b_zero_point)?;
    let y_zero_point = check_input_zero_point(name, y_zero_point)?;
    let in_range = |m: i32| (0..ADD_MULTIPLIER_LIMIT).contains(&i64::from(m));
    if !in_range(mult.a) || !in_range(mult.b) || mult.shift > 30 {
        return Err(fail(format!(
            "multipliers {mult:?} are outside [0, 2^15) with a shift of at most 30"
        )));
    }
    let (lo, hi) = (clamp.0.max(0), clamp.1.min(255));
    if lo > hi {
        return Err(fail(format!("clamp {clamp:?} leaves no u8 value")));
    }
    let params = QAddParams {
        a_zero_point,
        b_zero_point,
        y_zero_point,
        multipliers: mult,
        bounds: (lo as u8, hi as u8),
    };
    let mut lowering = NodeLowering {
        description: format!(
            "int8 add of {elements} u8 (a·{}/2^{n} + b·{}/2^{n})",
            mult.a,
            mult.b,
            n = mult.shift
        ),
        ..NodeLowering::default()
    };
    if elements > 0 {
        let kernel = Arc::new(QAddKernel::new(arch, params));
        lowering.calls.push(KernelCall::new(
            kernel,
            vec![
                Arg::input(0),
                Arg::input(1),
                Arg::output(0),
                Arg::Size(elements),
            ],
        )?);
    }
    Ok(lowering)
}

#[cfg(test)]
#[path = "add_tests.rs"]
mod tests;
