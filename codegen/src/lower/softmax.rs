//! fp32 Softmax along one axis.
//!
//! The input is viewed as `[outer, len, inner]`: `len` is the softmax axis (for opsets before
//! 13, `coerce_2d`, the flattened `dims[axis..]`, and then `inner = 1`). Two kernels:
//! - [`SoftmaxKind::Rows`] (`inner == 1`, the common case: last axis or coerced),
//!   `void k(const float *x, float *y, size_t rows, size_t len)`: each row is contiguous, so
//!   the three passes over it (maximum, exponentials and their sum, division) run f32x4 along
//!   the row with a scalar tail.
//! - [`SoftmaxKind::Strided`] (`inner > 1`, an inner axis),
//!   `void k(const float *x, float *y, size_t outer, size_t len, size_t inner)`: the four lanes
//!   are four adjacent `inner` positions, each reducing its own strided row.
//!
//! The arithmetic is the interpreter's (`qcc_ir::eval::reduce::softmax`): the row maximum
//! (NaN skipped, as `f32::max` does; a NaN element still makes the whole row NaN through its
//! exponential), `exp(x - max)` stored, summed from `+0`, and every element *divided* by the
//! sum (not multiplied by a reciprocal). The sums run in the interpreter's order, element by
//! element (`Rows` folds each vector of exponentials into one scalar sum lane by lane: a
//! four-lane sum would differ by the sequential sum's rounding, 3.5e-6 on rows of 4099), so
//! the one difference left is exp: the polynomial of [`super::vmath`] (results below the
//! smallest normal f32 flushed to zero) instead of libm's `expf`.
//!
//! The bound the tests assert against the interpreter is [`SOFTMAX_MAX_REL_ERROR`] (relative)
//! plus [`SOFTMAX_ABS_ERROR`]; measured maxima are in the tests' module comment.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use super::elementwise::LANES;
use super::kernel::{
    arity_error, counted_loop, f32_address, flags, Kernel, KernelContext, KernelError, KernelParam,
    KernelSpec,
};
use super::node::{Arg, KernelCall, NodeLowering};
use super::vmath::FloatOps;
use crate::target::Arch;

/// Maximum relative error of a Softmax output against the interpreter's: exp's error against
/// libm's, carried through the sum and the division (the sums themselves are in the same
/// order, so this does not grow with the row length).
pub const SOFTMAX_MAX_REL_ERROR: f64 = 4.0e-7;
/// Absolute error allowed on top: exponentials below the smallest normal f32 are flushed to
/// zero, so tiny outputs may differ by about that much.
pub const SOFTMAX_ABS_ERROR: f64 = 2.0e-38;

/// The loop structure of a Softmax kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxKind {
    /// Contiguous rows: `(x, y, rows, len)`.
    Rows,
    /// Rows of stride `inner`: `(x, y, outer, len, inner)`.
    Strided,
}

/// A Softmax kernel (see the module docs).
#[derive(Clone, Debug)]
pub struct SoftmaxKernel {
    kind: SoftmaxKind,
    spec: KernelSpec,
}

impl SoftmaxKernel {
    pub fn new(arch: Arch, kind: SoftmaxKind) -> SoftmaxKernel {
        let mut params = vec![KernelParam::input("x"), KernelParam::output("y")];
        let op = match kind {
            SoftmaxKind::Rows => {
                params.extend([KernelParam::size("rows"), KernelParam::size("len")]);
                "softmax_rows"
            }
            SoftmaxKind::Strided => {
                params.extend([
                    KernelParam::size("outer"),
                    KernelParam::size("len"),
                    KernelParam::size("inner"),
                ]);
                "softmax_strided"
            }
        };
        let spec = KernelSpec::f32x4_stream(arch, op.to_string(), None, params);
        SoftmaxKernel { kind, spec }
    }

    /// One contiguous row of `len` elements at `x` into `y`.
    fn emit_row(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        x: Value,
        y: Value,
        len: Value,
    ) {
        let vector = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let scalar = FloatOps {
            ty: types::F32,
            fma: context.fma,
        };
        let pointer = context.pointer;
        let step = i64::from(LANES);
        let zero = b.ins().iconst(pointer, 0);

        // Pass 1: the maximum, four lanes, then the lanes and the tail folded in.
        let lanes_max = b.declare_var(types::F32X4);
        let minus_inf = vector.constant(b, f32::NEG_INFINITY);
        b.def_var(lanes_max, minus_inf);
        let tail = counted_loop(b, pointer, zero, len, step, |b, j| {
            let at = f32_address(b, x, j);
            let v = b.ins().load(types::F32X4, flags(), at, 0);
            let m = b.use_var(lanes_max);
            let m = vector.select_cmp(b, FloatCC::GreaterThan, v, m, v, m);
            b.def_var(lanes_max, m);
        });
        let lanes = b.use_var(lanes_max);
        let row_max = b.declare_var(types::F32);
        let mut folded = b.ins().extractlane(lanes, 0);
        for lane in 1..LANES as u8 {
            let v = b.ins().extractlane(lanes, lane);
            folded = scalar.select_cmp(b, FloatCC::GreaterThan, v, folded, v, folded);
        }
        b.def_var(row_max, folded);
        counted_loop(b, pointer, tail, len, 1, |b, j| {
            let at = f32_address(b, x, j);
            let v = b.ins().load(types::F32, flags(), at, 0);
            let m = b.use_var(row_max);
            let m = scalar.select_cmp(b, FloatCC::GreaterThan, v, m, v, m);
            b.def_var(row_max, m);
        });
        let max = b.use_var(row_max);
        let max_lanes = b.ins().splat(types::F32X4, max);

        // Pass 2: e = exp(x - max) stored in y, and summed lane by lane in element order (the
        // interpreter's order: a four-lane sum would differ by the sequential sum's rounding,
        // which grows with the row).
        let row_sum = b.declare_var(types::F32);
        let zero_sum = b.ins().f32const(0.0);
        b.def_var(row_sum, zero_sum);
        let tail = counted_loop(b, pointer, zero, len, step, |b, j| {
            let from = f32_address(b, x, j);
            let v = b.ins().load(types::F32X4, flags(), from, 0);
            let shifted = b.ins().fsub(v, max_lanes);
            let e = vector.exp_non_positive(b, shifted);
            let to = f32_address(b, y, j);
            b.ins().store(flags(), e, to, 0);
            let mut s = b.use_var(row_sum);
            for lane in 0..LANES as u8 {
                let term = b.ins().extractlane(e, lane);
                s = b.ins().fadd(s, term);
            }
            b.def_var(row_sum, s);
        });
        counted_loop(b, pointer, tail, len, 1, |b, j| {
            let from = f32_address(b, x, j);
            let v = b.ins().load(types::F32, flags(), from, 0);
            let shifted = b.ins().fsub(v, max);
            let e = scalar.exp_non_positive(b, shifted);
            let to = f32_address(b, y, j);
            b.ins().store(flags(), e, to, 0);
            let s = b.use_var(row_sum);
            let s = b.ins().fadd(s, e);
            b.def_var(row_sum, s);
        });
        let sum = b.use_var(row_sum);
        let sum_lanes = b.ins().splat(types::F32X4, sum);

        // Pass 3: divide in place.
        let tail = counted_loop(b, pointer, zero, len, step, |b, j| {
            let at = f32_address(b, y, j);
            let e = b.ins().load(types::F32X4, flags(), at, 0);
            let q = b.ins().fdiv(e, sum_lanes);
            b.ins().store(flags(), q, at, 0);
        });
        counted_loop(b, pointer, tail, len, 1, |b, j| {
            let at = f32_address(b, y, j);
            let e = b.ins().load(types::F32, flags(), at, 0);
            let q = b.ins().fdiv(e, sum);
            b.ins().store(flags(), q, at, 0);
        });
    }

    /// One `ops`-wide column of rows (one row per lane): `len` elements `row_bytes` apart
    /// from `x` into `y`, each lane in the interpreter's order.
    #[allow(clippy::too_many_arguments)]
    fn emit_column(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        x: Value,
        y: Value,
        len: Value,
        row_bytes: Value,
    ) {
        let pointer = context.pointer;
        let zero = b.ins().iconst(pointer, 0);
        let at = |b: &mut FunctionBuilder, base: Value, j: Value| {
            let offset = b.ins().imul(j, row_bytes);
            b.ins().iadd(base, offset)
        };

        let running_max = b.declare_var(ops.ty);
        let minus_inf = ops.constant(b, f32::NEG_INFINITY);
        b.def_var(running_max, minus_inf);
        counted_loop(b, pointer, zero, len, 1, |b, j| {
            let from = at(b, x, j);
            let v = b.ins().load(ops.ty, flags(), from, 0);
            let m = b.use_var(running_max);
            let m = ops.select_cmp(b, FloatCC::GreaterThan, v, m, v, m);
            b.def_var(running_max, m);
        });
        let max = b.use_var(running_max);

        let running_sum = b.declare_var(ops.ty);
        let zeros = ops.constant(b, 0.0);
        b.def_var(running_sum, zeros);
        counted_loop(b, pointer, zero, len, 1, |b, j| {
            let from = at(b, x, j);
            let v = b.ins().load(ops.ty, flags(), from, 0);
            let shifted = b.ins().fsub(v, max);
            let e = ops.exp_non_positive(b, shifted);
            let to = at(b, y, j);
            b.ins().store(flags(), e, to, 0);
            let s = b.use_var(running_sum);
            let s = b.ins().fadd(s, e);
            b.def_var(running_sum, s);
        });
        let sum = b.use_var(running_sum);

        counted_loop(b, pointer, zero, len, 1, |b, j| {
            let to = at(b, y, j);
            let e = b.ins().load(ops.ty, flags(), to, 0);
            let q = b.ins().fdiv(e, sum);
            b.ins().store(flags(), q, to, 0);
        });
    }
}

impl Kernel for SoftmaxKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let pointer = context.pointer;
        let zero = b.ins().iconst(pointer, 0);
        match (self.kind, params) {
            (SoftmaxKind::Rows, &[x, y, rows, len]) => {
                let row_bytes = b.ins().ishl_imm_u(len, 2);
                counted_loop(b, pointer, zero, rows, 1, |b, r| {
                    let offset = b.ins().imul(r, row_bytes);
                    let from = b.ins().iadd(x, offset);
                    let to = b.ins().iadd(y, offset);
                    self.emit_row(b, context, from, to, len);
                });
            }
            (SoftmaxKind::Strided, &[x, y, outer, len, inner]) => {
                let vector = FloatOps {
                    ty: types::F32X4,
                    fma: context.fma,
                };
                let scalar = FloatOps {
                    ty: types::F32,
                    fma: context.fma,
                };
                let row_bytes = b.ins().ishl_imm_u(inner, 2);
                let block_bytes = b.ins().imul(row_bytes, len);
                counted_loop(b, pointer, zero, outer, 1, |b, o| {
                    let offset = b.ins().imul(o, block_bytes);
                    let x_block = b.ins().iadd(x, offset);
                    let y_block = b.ins().iadd(y, offset);
                    let step = i64::from(LANES);
                    let column = |ops: &FloatOps, b: &mut FunctionBuilder, i: Value| {
                        let from = f32_address(b, x_block, i);
                        let to = f32_address(b, y_block, i);
                        self.emit_column(ops, b, context, from, to, len, row_bytes);
                    };
                    let tail =
                        counted_loop(b, pointer, zero, inner, step, |b, i| column(&vector, b, i));
                    counted_loop(b, pointer, tail, inner, 1, |b, i| column(&scalar, b, i));
                });
            }
            _ => return Err(arity_error(&self.spec, params)),
        }
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers Softmax on an input of `dims` (input 0 → output 0).
pub fn lower_softmax(
    arch: Arch,
    axis: usize,
    coerce_2d: bool,
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    if axis >= dims.len() {
        return Err(KernelError::Unsupported {
            kernel: format!("Softmax on {dims:?}"),
            reason: format!("axis {axis} is out of range"),
        });
    }
    let outer: usize = dims[..axis].iter().product();
    let (len, inner) = if coerce_2d {
        (dims[axis..].iter().product(), 1)
    } else {
        (dims[axis], dims[axis + 1..].iter().product())
    };
    let mut lowering = NodeLowering::default();
    if outer * len * inner == 0 {
        lowering.description = format!("softmax on {dims:?}: empty");
        return Ok(lowering);
    }
    let (kind, sizes) = if inner == 1 {
        (SoftmaxKind::Rows, vec![outer, len])
    } else {
        (SoftmaxKind::Strided, vec![outer, len, inner])
    };
    let kernel = std::sync::Arc::new(SoftmaxKernel::new(arch, kind));
    let mut args = vec![Arg::input(0), Arg::output(0)];
    args.extend(sizes.into_iter().map(Arg::Size));
    lowering.calls.push(KernelCall::new(kernel, args)?);
    lowering.description = format!("softmax {kind:?}: {outer} x {len} x {inner}");
    Ok(lowering)
}

#[cfg(test)]
#[path = "softmax_tests.rs"]
mod tests;
