//! DynamicQuantizeLinear (f32 → u8 with a scale and zero point computed at run time), bit
//! for bit the interpreter's (`qcc_ir::eval` quant.rs `dynamic_quantize_linear`):
//!
//! ```text
//! lo = min(0, min x), hi = max(0, max x)      NaN ignored, as f32::min/max do
//! scale = hi == lo ? 1 : (hi − lo) / 255      f32
//! zp = sat_u8(round_half_even(0 − lo / scale))
//! y = sat_u8(round_half_even(x / scale) + zp)  an f32 division, NaN → zp
//! ```
//!
//! The range pass runs on f32x4 with compare-and-select (`v < lo ? v : lo`: a NaN compares
//! false and is skipped, exactly like `f32::min` keeping its non-NaN operand), the four
//! lanes folded the same way, then a scalar tail. Minimum and maximum are exact, so the
//! order of the fold does not matter (signed zeros may differ, but `±0` give the same scale,
//! zero point and outputs). The scale and zero point are scalar f32 code in the
//! interpreter's order; the quantization is QuantizeLinear's stream
//! (`quantize::emit_quantize_stream`) with them as run-time values.
//!
//! Infinite inputs are not special-cased: the same f32 operations give the interpreter's
//! results (an infinite range makes the scale infinite; `x / inf` is 0 and `inf / inf` NaN,
//! which quantizes to the zero point).

use std::sync::Arc;

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

use super::bytes::byte_spec;
use super::quantize::emit_quantize_stream;
use crate::lower::kernel::{
    arity_error, counted_loop, f32_address, flags, Kernel, KernelContext, KernelError, KernelParam,
    KernelSpec,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::lower::vmath::FloatOps;
use crate::target::Arch;

/// `void k(const float *x, uint8_t *y, float *y_scale, uint8_t *y_zero_point, size_t n)`.
/// Nothing is baked: one symbol per ISA.
#[derive(Clone, Debug)]
pub struct DynamicQuantizeKernel {
    spec: KernelSpec,
}

impl DynamicQuantizeKernel {
    pub fn new(arch: Arch) -> DynamicQuantizeKernel {
        let spec = byte_spec(
            arch,
            "dynamic_quantize_u8".to_string(),
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::output("y_scale"),
                KernelParam::output("y_zero_point"),
                KernelParam::size("n"),
            ],
        );
        DynamicQuantizeKernel { spec }
    }
}

/// `(min(lo, v), max(hi, v))` ignoring a NaN `v`, lane by lane for f32x4.
fn widen_range(
    ops: &FloatOps,
    b: &mut FunctionBuilder,
    (lo, hi): (Value, Value),
    v: Value,
) -> (Value, Value) {
    let lo = ops.select_cmp(b, FloatCC::LessThan, v, lo, v, lo);
    let hi = ops.select_cmp(b, FloatCC::GreaterThan, v, hi, v, hi);
    (lo, hi)
}

/// `[min(0, min x), max(0, max x)]` over `n` f32 at `x`, as scalar f32 values.
fn emit_range(b: &mut FunctionBuilder, pointer: Type, x: Value, n: Value) -> (Value, Value) {
    let vector = FloatOps {
        ty: types::F32X4,
        fma: false,
    };
    let scalar = FloatOps {
        ty: types::F32,
        fma: false,
    };
    let zeros = vector.constant(b, 0.0);
    let (lo, hi) = (b.declare_var(types::F32X4), b.declare_var(types::F32X4));
    b.def_var(lo, zeros);
    b.def_var(hi, zeros);
    let start = b.ins().iconst(pointer, 0);
    let tail = counted_loop(b, pointer, start, n, 4, |b, i| {
        let from = f32_address(b, x, i);
        let v = b.ins().load(types::F32X4, flags(), from, 0);
        let range = (b.use_var(lo), b.use_var(hi));
        let (low, high) = widen_range(&vector, b, range, v);
        b.def_var(lo, low);
        b.def_var(hi, high);
    });
    let (lo_lanes, hi_lanes) = (b.use_var(lo), b.use_var(hi));
    let mut range = (
        b.ins().extractlane(lo_lanes, 0),
        b.ins().extractlane(hi_lanes, 0),
    );
    for lane in 1..4 {
        let low = b.ins().extractlane(lo_lanes, lane);
        let high = b.ins().extractlane(hi_lanes, lane);
        range.0 = widen_range(&scalar, b, range, low).0;
        range.1 = widen_range(&scalar, b, range, high).1;
    }
    let (lo, hi) = (b.declare_var(types::F32), b.declare_var(types::F32));
    b.def_var(lo, range.0);
    b.def_var(hi, range.1);
    counted_loop(b, pointer, tail, n, 1, |b, i| {
        let from = f32_address(b, x, i);
        let v = b.ins().load(types::F32, flags(), from, 0);
        let range = (b.use_var(lo), b.use_var(hi));
        let (low, high) = widen_range(&scalar, b, range, v);
        b.def_var(lo, low);
        b.def_var(hi, high);
    });
    (b.use_var(lo), b.use_var(hi))
}

/// The scale (f32) and zero point (i32 in 0..=255) of the range `[lo, hi]`.
fn emit_scale_and_zero_point(b: &mut FunctionBuilder, lo: Value, hi: Value) -> (Value, Value) {
    let one = b.ins().f32const(1.0);
    let levels = b.ins().f32const(255.0);
    let width = b.ins().fsub(hi, lo);
    let step = b.ins().fdiv(width, levels);
    let empty = b.ins().fcmp(FloatCC::Equal, hi, lo);
    let scale = b.ins().select(empty, one, step);
    let zero = b.ins().f32const(0.0);
    let quotient = b.ins().fdiv(lo, scale);
    let shifted = b.ins().fsub(zero, quotient);
    let rounded = b.ins().nearest(shifted);
    // NaN → 0 and ±inf → the i32 bounds, then the u8 clamp: `saturate_rounded` exactly.
    let integer = b.ins().fcvt_to_sint_sat(types::I32, rounded);
    let low = b.ins().iconst(types::I32, 0);
    let high = b.ins().iconst(types::I32, 255);
    let clamped = b.ins().smax(integer, low);
    (scale, b.ins().smin(clamped, high))
}

impl Kernel for DynamicQuantizeKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let &[x, y, y_scale, y_zero_point, n] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (lo, hi) = emit_range(b, context.pointer, x, n);
        let (scale, zero_point) = emit_scale_and_zero_point(b, lo, hi);
        b.ins().store(flags(), scale, y_scale, 0);
        b.ins().istore8(flags(), zero_point, y_zero_point, 0);
        emit_quantize_stream(b, context.pointer, (x, y, n), scale, zero_point);
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers DynamicQuantizeLinear of `elements` f32 (input 0): output 0 the u8 values, output
/// 1 the f32 scale, output 2 the u8 zero point. An empty input still writes scale 1 and
/// zero point 0, as the interpreter does.
pub fn lower_dynamic_quantize(arch: Arch, elements: usize) -> Result<NodeLowering, KernelError> {
    let kernel = Arc::new(DynamicQuantizeKernel::new(arch));
    let args = vec![
        Arg::input(0),
        Arg::output(0),
        Arg::output(1),
        Arg::output(2),
        Arg::Size(elements),
    ];
    Ok(NodeLowering {
        calls: vec![KernelCall::new(kernel, args)?],
        description: format!("dynamic quantize {elements} f32 to u8 (scale at run time)"),
        ..NodeLowering::default()
    })
}
