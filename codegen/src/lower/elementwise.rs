//! Element-wise fp32 kernels: activations, and Add/Sub/Mul/Div with numpy broadcasting and an
//! optional fused activation.
//!
//! Every kernel runs an f32x4 main loop and a scalar tail over the same CLIF (the helpers in
//! [`FloatOps`] work on both types), so the tail computes exactly what the vector lanes do.
//! Add, Sub, Mul, Div, Relu, LeakyRelu, Clip, HardSigmoid and HardSwish use the same IEEE
//! operations in the same order as the interpreter and match it bit for bit; Sigmoid and Tanh
//! use the polynomials of [`super::vmath`].
//!
//! Broadcasting is resolved at compile time by [`BroadcastPlan`]: dimensions are coalesced
//! and the result classified into the patterns CNNs use (same shape, scalar operand,
//! per-channel operand, per-row operand), each with its own loop structure, and a general
//! strided fallback for everything else.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::{Activation, BinaryOp};

use super::kernel::{
    arity_error, counted_loop, f32_address, flags, Kernel, KernelContext, KernelError, KernelParam,
    KernelSpec,
};
use super::vmath::FloatOps;
use crate::target::Arch;

/// f32 lanes per vector: Cranelift lowers 128-bit vectors only.
pub const LANES: u32 = 4;

/// Which operand of a binary op is the smaller, broadcast one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Lhs,
    Rhs,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Lhs => "lhs",
            Side::Rhs => "rhs",
        }
    }
}

/// The loop structure of a broadcasting binary kernel, with its C signature:
/// every kernel starts with `(const float *a, const float *b, float *out, ...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BroadcastKind {
    /// `a`, `b` and `out` have `n` elements: `(.., size_t n)`.
    Same,
    /// The `side` operand is one element: `(.., size_t n)`.
    Scalar(Side),
    /// `out` is `[outer, channels, inner]` and the `side` operand `[channels]`, one value per
    /// channel (an NCHW bias `[C,1,1]`): `(.., size_t outer, size_t channels, size_t inner)`.
    Channel(Side),
    /// `out` is `[outer, inner]` and the `side` operand `[inner]`, repeated for every row:
    /// `(.., size_t outer, size_t inner)`.
    Row(Side),
    /// Anything else, as `rank` coalesced dimensions: `(.., const size_t *desc)`, `desc`
    /// holding the dims, then `a`'s, `b`'s and `out`'s element strides (0 where broadcast).
    Strided { rank: usize },
}

impl BroadcastKind {
    fn name(self) -> String {
        match self {
            BroadcastKind::Same => "same".to_string(),
            BroadcastKind::Scalar(side) => format!("scalar_{}", side.name()),
            BroadcastKind::Channel(side) => format!("channel_{}", side.name()),
            BroadcastKind::Row(side) => format!("row_{}", side.name()),
            BroadcastKind::Strided { rank } => format!("strided_r{rank}"),
        }
    }

    fn size_params(self) -> Vec<KernelParam> {
        match self {
            BroadcastKind::Same | BroadcastKind::Scalar(_) => vec![KernelParam::size("n")],
            BroadcastKind::Channel(_) => vec![
                KernelParam::size("outer"),
                KernelParam::size("channels"),
                KernelParam::size("inner"),
            ],
            BroadcastKind::Row(_) => vec![KernelParam::size("outer"), KernelParam::size("inner")],
            BroadcastKind::Strided { .. } => vec![KernelParam::input("desc")],
        }
    }
}

/// How one broadcasting binary op is run: the kernel variant and its size arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastPlan {
    pub kind: BroadcastKind,
    /// The output's (uncoalesced) dims.
    pub out_dims: Vec<usize>,
    /// The size arguments after the three pointers (empty for `Strided`).
    pub sizes: Vec<usize>,
    /// For `Strided`: dims, a strides, b strides, out strides (each `rank` long).
    pub descriptor: Vec<usize>,
}

/// A coalesced dimension: its extent and whether `a` / `b` are broadcast along it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    extent: usize,
    a_broadcast: bool,
    b_broadcast: bool,
}

impl BroadcastPlan {
    /// Plans `a op b` for inputs of dims `a` and `b` (numpy broadcasting).
    pub fn new(a: &[usize], b: &[usize]) -> Result<BroadcastPlan, KernelError> {
        let out_dims = qcc_ir::infer::broadcast(a, b).map_err(|e| KernelError::Broadcast {
            a: a.to_vec(),
            b: b.to_vec(),
            reason: e.to_string(),
        })?;
        let numel: usize = out_dims.iter().product();
        let plan = |kind, sizes: Vec<usize>, descriptor| BroadcastPlan {
            kind,
            out_dims: out_dims.clone(),
            sizes,
            descriptor,
        };
        let rank = out_dims.len();
        let padded = |dims: &[usize], d: usize| {
            let lead = rank - dims.len();
            if d < lead {
                1
            } else {
                dims[d - lead]
            }
        };
        let mut runs: Vec<Run> = Vec::new();
        for (d, &extent) in out_dims.iter().enumerate() {
            if extent == 1 {
                continue;
            }
            let run = Run {
                extent,
                a_broadcast: padded(a, d) == 1,
                b_broadcast: padded(b, d) == 1,
            };
            match runs.last_mut() {
                Some(last)
                    if last.a_broadcast == run.a_broadcast
                        && last.b_broadcast == run.b_broadcast =>
                {
                    last.extent *= extent;
                }
                _ => runs.push(run),
            }
        }
        let pattern: Vec<(bool, bool)> = runs
            .iter()
            .map(|r| (r.a_broadcast, r.b_broadcast))
            .collect();
        let extents: Vec<usize> = runs.iter().map(|r| r.extent).collect();
        const FULL: (bool, bool) = (false, false);
        const A_SMALL: (bool, bool) = (true, false);
        let side_of = |p: (bool, bool)| if p == A_SMALL { Side::Lhs } else { Side::Rhs };
        Ok(match pattern.as_slice() {
            _ if numel == 0 => plan(BroadcastKind::Same, vec![0], vec![]),
            [] | [FULL] => plan(BroadcastKind::Same, vec![numel], vec![]),
            [p] => plan(BroadcastKind::Scalar(side_of(*p)), vec![numel], vec![]),
            [p, FULL] if *p != FULL => {
                plan(BroadcastKind::Row(side_of(*p)), extents.clone(), vec![])
            }
            [FULL, p] if *p != FULL => plan(
                BroadcastKind::Channel(side_of(*p)),
                vec![1, extents[0], extents[1]],
                vec![],
            ),
            [p, FULL, q] if *p != FULL && p == q => {
                plan(BroadcastKind::Channel(side_of(*p)), extents.clone(), vec![])
            }
            _ => {
                let rank = runs.len();
                let strides = |broadcast: &dyn Fn(&Run) -> bool| {
                    let mut strides = vec![0; rank];
                    let mut step = 1;
                    for d in (0..rank).rev() {
                        if !broadcast(&runs[d]) {
                            strides[d] = step;
                            step *= runs[d].extent;
                        }
                    }
                    strides
                };
                let mut descriptor = extents.clone();
                descriptor.extend(strides(&|r| r.a_broadcast));
                descriptor.extend(strides(&|r| r.b_broadcast));
                descriptor.extend(strides(&|_| false));
                plan(BroadcastKind::Strided { rank }, vec![], descriptor)
            }
        })
    }
}

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
    }
}

/// The kernel-name fragment of an activation; attributes are spelled as f32 bit patterns so
/// that kernels with different constants get different symbols.
pub fn activation_name(activation: Activation) -> String {
    match activation {
        Activation::Relu => "relu".to_string(),
        Activation::LeakyRelu { alpha } => format!("leakyrelu_{:08x}", alpha.to_bits()),
        Activation::Clip { min, max } => {
            format!("clip_{:08x}_{:08x}", min.to_bits(), max.to_bits())
        }
        Activation::Sigmoid => "sigmoid".to_string(),
        Activation::HardSigmoid { alpha, beta } => {
            format!("hardsigmoid_{:08x}_{:08x}", alpha.to_bits(), beta.to_bits())
        }
        Activation::HardSwish => "hardswish".to_string(),
        Activation::Tanh => "tanh".to_string(),
    }
}

/// `activation(x)` with the interpreter's operation order (so the exact ones stay exact).
pub(crate) fn apply_activation(
    ops: &FloatOps,
    b: &mut FunctionBuilder,
    activation: Activation,
    x: Value,
) -> Value {
    // `x < bound ? low : x` then `y > bound ? high : y`: comparisons, so NaN passes through.
    let clamp = |b: &mut FunctionBuilder, x: Value, min: f32, max: f32| {
        let min = ops.constant(b, min);
        let max = ops.constant(b, max);
        let low = ops.select_cmp(b, FloatCC::LessThan, x, min, min, x);
        ops.select_cmp(b, FloatCC::GreaterThan, low, max, max, low)
    };
    match activation {
        Activation::Relu => {
            let zero = ops.constant(b, 0.0);
            ops.select_cmp(b, FloatCC::LessThan, x, zero, zero, x)
        }
        Activation::LeakyRelu { alpha } => {
            let zero = ops.constant(b, 0.0);
            let alpha = ops.constant(b, alpha);
            let scaled = b.ins().fmul(alpha, x);
            ops.select_cmp(b, FloatCC::LessThan, x, zero, scaled, x)
        }
        Activation::Clip { min, max } => clamp(b, x, min, max),
        Activation::HardSigmoid { alpha, beta } => {
            // Not fused: the interpreter rounds the product before adding.
            let alpha = ops.constant(b, alpha);
            let beta = ops.constant(b, beta);
            let scaled = b.ins().fmul(alpha, x);
            let shifted = b.ins().fadd(scaled, beta);
            clamp(b, shifted, 0.0, 1.0)
        }
        Activation::HardSwish => {
            // x / 6, not x * (1/6): the interpreter divides, and the two round differently.
            let six = ops.constant(b, 6.0);
            let half = ops.constant(b, 0.5);
            let sixth = b.ins().fdiv(x, six);
            let shifted = b.ins().fadd(sixth, half);
            let gate = clamp(b, shifted, 0.0, 1.0);
            b.ins().fmul(x, gate)
        }
        Activation::Sigmoid => ops.sigmoid(b, x),
        Activation::Tanh => ops.tanh(b, x),
    }
}

fn apply_binary(b: &mut FunctionBuilder, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
    }
}

/// Runs `element(ops, builder, index)` for `index` in `start..end`: f32x4 steps while four
/// elements remain, then one element at a time with scalar `ops`.
fn vector_then_scalar(
    b: &mut FunctionBuilder,
    context: &KernelContext,
    start: Value,
    end: Value,
    mut element: impl FnMut(&FloatOps, &mut FunctionBuilder, Value),
) {
    let vector = FloatOps {
        ty: types::F32X4,
        fma: context.fma,
    };
    let scalar = FloatOps {
        ty: types::F32,
        fma: context.fma,
    };
    let tail = counted_loop(b, context.pointer, start, end, i64::from(LANES), |b, i| {
        element(&vector, b, i)
    });
    counted_loop(b, context.pointer, tail, end, 1, |b, i| {
        element(&scalar, b, i)
    });
}

fn load(ops: &FloatOps, b: &mut FunctionBuilder, base: Value, index: Value) -> Value {
    let address = f32_address(b, base, index);
    b.ins().load(ops.ty, flags(), address, 0)
}

fn store(b: &mut FunctionBuilder, value: Value, base: Value, index: Value) {
    let address = f32_address(b, base, index);
    b.ins().store(flags(), value, address, 0);
}

/// An activation over a contiguous buffer: `void k(const float *x, float *y, size_t n)`.
/// `x` and `y` may be the same buffer (in place).
#[derive(Clone, Debug)]
pub struct ActivationKernel {
    activation: Activation,
    spec: KernelSpec,
}

impl ActivationKernel {
    pub fn new(arch: Arch, activation: Activation) -> ActivationKernel {
        let op = activation_name(activation);
        ActivationKernel {
            activation,
            spec: KernelSpec::f32x4_stream(
                arch,
                op,
                None,
                vec![
                    KernelParam::input("x"),
                    KernelParam::output("y"),
                    KernelParam::size("n"),
                ],
            ),
        }
    }
}

impl Kernel for ActivationKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, n] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (x, y, n) = (*x, *y, *n);
        let zero = b.ins().iconst(context.pointer, 0);
        vector_then_scalar(b, context, zero, n, |ops, b, i| {
            let value = load(ops, b, x, i);
            let result = apply_activation(ops, b, self.activation, value);
            store(b, result, y, i);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// `out = epilogue(a op b)` with broadcasting as planned by [`BroadcastPlan`]; signatures in
/// [`BroadcastKind`]. `out` may alias the full-size input (in place).
#[derive(Clone, Debug)]
pub struct BinaryKernel {
    op: BinaryOp,
    kind: BroadcastKind,
    spec: KernelSpec,
}

impl BinaryKernel {
    pub fn new(
        arch: Arch,
        op: BinaryOp,
        kind: BroadcastKind,
        epilogue: Option<Activation>,
    ) -> BinaryKernel {
        let mut name = format!("{}_{}", binary_name(op), kind.name());
        if let Some(activation) = epilogue {
            name.push('_');
            name.push_str(&activation_name(activation));
        }
        let mut params = vec![
            KernelParam::input("a"),
            KernelParam::input("b"),
            KernelParam::output("out"),
        ];
        params.extend(kind.size_params());
        BinaryKernel {
            op,
            kind,
            spec: KernelSpec::f32x4_stream(arch, name, epilogue, params),
        }
    }

    /// `epilogue(a op b)` where `full` comes from the full-size operand, `small` from the
    /// broadcast one (on side `side`).
    fn combine(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        side: Side,
        full: Value,
        small: Value,
    ) -> Value {
        let (lhs, rhs) = match side {
            Side::Lhs => (small, full),
            Side::Rhs => (full, small),
        };
        let value = apply_binary(b, self.op, lhs, rhs);
        match self.spec.epilogue {
            Some(activation) => apply_activation(ops, b, activation, value),
            None => value,
        }
    }

    /// Loads the `small` operand's element at `index` as a scalar and its splat.
    fn load_broadcast(b: &mut FunctionBuilder, base: Value, index: Value) -> (Value, Value) {
        let address = f32_address(b, base, index);
        let scalar = b.ins().load(types::F32, flags(), address, 0);
        let vector = b.ins().splat(types::F32X4, scalar);
        (scalar, vector)
    }
}

impl Kernel for BinaryKernel {
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
        let (a, rhs, out) = (params[0], params[1], params[2]);
        let sizes = &params[3..];
        let pick = |side: Side| match side {
            Side::Lhs => (rhs, a),
            Side::Rhs => (a, rhs),
        };
        let zero = b.ins().iconst(context.pointer, 0);
        match self.kind {
            BroadcastKind::Same => {
                vector_then_scalar(b, context, zero, sizes[0], |ops, b, i| {
                    let x = load(ops, b, a, i);
                    let y = load(ops, b, rhs, i);
                    let result = self.combine(ops, b, Side::Rhs, x, y);
                    store(b, result, out, i);
                });
            }
            BroadcastKind::Scalar(side) => {
                let (full, small) = pick(side);
                let (scalar, vector) = Self::load_broadcast(b, small, zero);
                vector_then_scalar(b, context, zero, sizes[0], |ops, b, i| {
                    let x = load(ops, b, full, i);
                    let s = if ops.ty.is_vector() { vector } else { scalar };
                    let result = self.combine(ops, b, side, x, s);
                    store(b, result, out, i);
                });
            }
            BroadcastKind::Channel(side) => {
                let (full, small) = pick(side);
                let (outer, channels, inner) = (sizes[0], sizes[1], sizes[2]);
                counted_loop(b, context.pointer, zero, outer, 1, |b, o| {
                    let row = b.ins().imul(o, channels);
                    counted_loop(b, context.pointer, zero, channels, 1, |b, c| {
                        let (scalar, vector) = Self::load_broadcast(b, small, c);
                        let plane = b.ins().iadd(row, c);
                        let start = b.ins().imul(plane, inner);
                        let end = b.ins().iadd(start, inner);
                        vector_then_scalar(b, context, start, end, |ops, b, i| {
                            let x = load(ops, b, full, i);
                            let s = if ops.ty.is_vector() { vector } else { scalar };
                            let result = self.combine(ops, b, side, x, s);
                            store(b, result, out, i);
                        });
                    });
                });
            }
            BroadcastKind::Row(side) => {
                let (full, small) = pick(side);
                let (outer, inner) = (sizes[0], sizes[1]);
                counted_loop(b, context.pointer, zero, outer, 1, |b, o| {
                    let start = b.ins().imul(o, inner);
                    let full_row = f32_address(b, full, start);
                    let out_row = f32_address(b, out, start);
                    vector_then_scalar(b, context, zero, inner, |ops, b, i| {
                        let x = load(ops, b, full_row, i);
                        let s = load(ops, b, small, i);
                        let result = self.combine(ops, b, side, x, s);
                        store(b, result, out_row, i);
                    });
                });
            }
            BroadcastKind::Strided { rank } => {
                if rank == 0 {
                    return Err(KernelError::Unsupported {
                        kernel: self.spec.name.clone(),
                        reason: "a strided kernel needs rank ≥ 1".to_string(),
                    });
                }
                let descriptor = sizes[0];
                let word = context.pointer.bytes() as i32;
                let read = |b: &mut FunctionBuilder, slot: usize| {
                    b.ins()
                        .load(context.pointer, flags(), descriptor, word * slot as i32)
                };
                let mut fields = Vec::with_capacity(4 * rank);
                for slot in 0..4 * rank {
                    fields.push(read(b, slot));
                }
                self.strided_level(b, context, [a, rhs, out], &fields, rank, 0, [zero; 3]);
            }
        }
        b.ins().return_(&[]);
        Ok(())
    }
}

impl BinaryKernel {
    /// One loop of the strided fallback: `offsets` are the element offsets of `a`, `b` and
    /// `out` so far; the innermost level computes one element per iteration.
    #[allow(clippy::too_many_arguments)]
    fn strided_level(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        bases: [Value; 3],
        fields: &[Value],
        rank: usize,
        level: usize,
        offsets: [Value; 3],
    ) {
        let zero = b.ins().iconst(context.pointer, 0);
        let extent = fields[level];
        let strides = [
            fields[rank + level],
            fields[2 * rank + level],
            fields[3 * rank + level],
        ];
        counted_loop(b, context.pointer, zero, extent, 1, |b, i| {
            let mut next = offsets;
            for k in 0..3 {
                let step = b.ins().imul(i, strides[k]);
                next[k] = b.ins().iadd(offsets[k], step);
            }
            if level + 1 < rank {
                self.strided_level(b, context, bases, fields, rank, level + 1, next);
            } else {
                let ops = FloatOps {
                    ty: types::F32,
                    fma: context.fma,
                };
                let x = load(&ops, b, bases[0], next[0]);
                let y = load(&ops, b, bases[1], next[1]);
                let result = self.combine(&ops, b, Side::Rhs, x, y);
                store(b, result, bases[2], next[2]);
            }
        });
    }
}
