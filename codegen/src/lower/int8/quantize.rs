//! QuantizeLinear (f32 → u8) and DequantizeLinear (u8 → f32), per tensor, element-wise.
//!
//! Semantics are the interpreter's (`qcc_ir::eval` quant.rs), bit for bit:
//! - quantize: `q = sat_u8(round_half_to_even(x / scale) + zp)`, the quotient an f32
//!   division (not a multiplication by the reciprocal: the two round differently), NaN → `zp`.
//!   In CLIF: `fdiv`, `nearest` (ties to even), `fcvt_to_sint_sat` (saturates ±inf and huge
//!   values to the i32 range, NaN → 0, so no float clamp is needed), then the i32 clamp to
//!   `[−zp, 255 − zp]` *before* adding `zp` (so `i32::MAX + zp` cannot wrap) and the add.
//! - dequantize: `y = (q − zp) as f32 · scale`: the difference is exact, one f32 rounding.
//!
//! Both kernels run 16 elements per step (four f32x4 and one 16-byte vector), then a scalar
//! tail built from the same operations on scalars. Scale and zero point are baked; the symbol
//! spells the scale's bit pattern. An i8 tensor is stored +128 with zero point `zp + 128`
//! (see the back end's storage convention): the same kernel serves it exactly.

use std::sync::Arc;

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

use super::bytes::{byte_spec, byte_stream, element_address, narrow_store_u8x16, widen_u8x16};
use super::{check_input_zero_point, unsupported};
use crate::lower::kernel::{
    arity_error, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::target::Arch;

/// `splat(ty, value)` for a vector type, `value` itself for a scalar one.
fn lanes_of(b: &mut FunctionBuilder, ty: Type, value: Value) -> Value {
    if ty.is_vector() {
        b.ins().splat(ty, value)
    } else {
        value
    }
}

/// `void k(const float *x, uint8_t *y, size_t n)`: QuantizeLinear to u8.
#[derive(Clone, Debug)]
pub struct QuantizeKernel {
    scale: f32,
    zero_point: u8,
    spec: KernelSpec,
}

impl QuantizeKernel {
    pub fn new(arch: Arch, scale: f32, zero_point: u8) -> QuantizeKernel {
        let op = format!("quantize_u8_s{:08x}_z{zero_point}", scale.to_bits());
        let spec = byte_spec(
            arch,
            op,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::size("n"),
            ],
        );
        QuantizeKernel {
            scale,
            zero_point,
            spec,
        }
    }
}

/// Splatted (or scalar) constants of the quantization: the scale, the i32 clamp to
/// `[−zp, 255 − zp]` and the zero point.
pub(super) struct QuantizeConstants {
    int_ty: Type,
    scale: Value,
    low: Value,
    high: Value,
    offset: Value,
}

impl QuantizeConstants {
    /// The constants for `float_ty` (`F32` or `F32X4`) from the scalar f32 `scale` and i32
    /// `zero_point` (0..=255), baked or read at run time; made once before the loops.
    pub(super) fn new(
        b: &mut FunctionBuilder,
        float_ty: Type,
        scale: Value,
        zero_point: Value,
    ) -> QuantizeConstants {
        let int_ty = if float_ty.is_vector() {
            types::I32X4
        } else {
            types::I32
        };
        let low = b.ins().ineg(zero_point);
        let top = b.ins().iconst(types::I32, 255);
        let high = b.ins().isub(top, zero_point);
        QuantizeConstants {
            int_ty,
            scale: lanes_of(b, float_ty, scale),
            low: lanes_of(b, int_ty, low),
            high: lanes_of(b, int_ty, high),
            offset: lanes_of(b, int_ty, zero_point),
        }
    }

    /// `x` (f32 or f32x4, matching these constants) quantized to i32 lanes in 0..=255.
    fn quantize(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let quotient = b.ins().fdiv(x, self.scale);
        let rounded = b.ins().nearest(quotient);
        let integer = b.ins().fcvt_to_sint_sat(self.int_ty, rounded);
        let clamped = b.ins().smax(integer, self.low);
        let clamped = b.ins().smin(clamped, self.high);
        b.ins().iadd(clamped, self.offset)
    }
}

/// QuantizeLinear of `n` f32 at `x` to u8 at `y` with the scalar f32 `scale` and i32
/// `zero_point` (0..=255): 16 elements per step, then one at a time. Shared by the
/// compile-time-scale kernel and DynamicQuantizeLinear (`super::dynamic_quantize`).
pub(super) fn emit_quantize_stream(
    b: &mut FunctionBuilder,
    pointer: Type,
    (x, y, n): (Value, Value, Value),
    scale: Value,
    zero_point: Value,
) {
    let vector = QuantizeConstants::new(b, types::F32X4, scale, zero_point);
    let scalar = QuantizeConstants::new(b, types::F32, scale, zero_point);
    let zero = b.ins().iconst(pointer, 0);
    byte_stream(
        b,
        pointer,
        zero,
        n,
        |b, i| {
            let from = element_address(b, x, i, 4);
            let lanes = [0, 16, 32, 48].map(|offset| {
                let value = b.ins().load(types::F32X4, flags(), from, offset);
                vector.quantize(b, value)
            });
            let to = b.ins().iadd(y, i);
            narrow_store_u8x16(b, lanes, to);
        },
        |b, i| {
            let from = element_address(b, x, i, 4);
            let value = b.ins().load(types::F32, flags(), from, 0);
            let q = scalar.quantize(b, value);
            let to = b.ins().iadd(y, i);
            b.ins().istore8(flags(), q, to, 0);
        },
    );
}

impl Kernel for QuantizeKernel {
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
        let scale = b.ins().f32const(self.scale);
        let zero_point = b.ins().iconst(types::I32, i64::from(self.zero_point));
        emit_quantize_stream(b, context.pointer, (*x, *y, *n), scale, zero_point);
        b.ins().return_(&[]);
        Ok(())
    }
}

/// `void k(const uint8_t *x, float *y, size_t n)`: DequantizeLinear from u8.
#[derive(Clone, Debug)]
pub struct DequantizeKernel {
    scale: f32,
    zero_point: u8,
    spec: KernelSpec,
}

impl DequantizeKernel {
    pub fn new(arch: Arch, scale: f32, zero_point: u8) -> DequantizeKernel {
        let op = format!("dequantize_u8_s{:08x}_z{zero_point}", scale.to_bits());
        let spec = byte_spec(
            arch,
            op,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::size("n"),
            ],
        );
        DequantizeKernel {
            scale,
            zero_point,
            spec,
        }
    }

    /// The zero point (`I32` or `I32X4`) and the scale (`F32` or `F32X4`), made once.
    fn constants(&self, b: &mut FunctionBuilder, vector: bool) -> (Value, Value) {
        let (int_ty, float_ty) = if vector {
            (types::I32X4, types::F32X4)
        } else {
            (types::I32, types::F32)
        };
        let zp = b.ins().iconst(types::I32, i64::from(self.zero_point));
        let scale = b.ins().f32const(self.scale);
        (lanes_of(b, int_ty, zp), lanes_of(b, float_ty, scale))
    }

    /// `(q − zp) as f32 · scale` for i32 (or i32x4) `q`, with `(zp, scale)` of its width.
    fn dequantize(b: &mut FunctionBuilder, (zp, scale): (Value, Value), q: Value) -> Value {
        let float_ty = b.func.dfg.value_type(scale);
        let centred = b.ins().isub(q, zp);
        let value = b.ins().fcvt_from_sint(float_ty, centred);
        b.ins().fmul(value, scale)
    }
}

impl Kernel for DequantizeKernel {
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
        let vector = self.constants(b, true);
        let scalar = self.constants(b, false);
        let zero = b.ins().iconst(context.pointer, 0);
        byte_stream(
            b,
            context.pointer,
            zero,
            n,
            |b, i| {
                let from = b.ins().iadd(x, i);
                let lanes = widen_u8x16(b, from);
                let to = element_address(b, y, i, 4);
                for (k, q) in lanes.into_iter().enumerate() {
                    let value = Self::dequantize(b, vector, q);
                    b.ins().store(flags(), value, to, 16 * k as i32);
                }
            },
            |b, i| {
                let from = b.ins().iadd(x, i);
                let q = b.ins().uload8(types::I32, flags(), from, 0);
                let value = Self::dequantize(b, scalar, q);
                let to = element_address(b, y, i, 4);
                b.ins().store(flags(), value, to, 0);
            },
        );
        b.ins().return_(&[]);
        Ok(())
    }
}

/// One streaming call `(input 0, output 0, n)`.
fn stream_lowering(
    kernel: Arc<dyn Kernel + Send + Sync>,
    elements: usize,
    description: String,
) -> Result<NodeLowering, KernelError> {
    let mut lowering = NodeLowering {
        description,
        ..NodeLowering::default()
    };
    if elements > 0 {
        lowering.calls.push(KernelCall::new(
            kernel,
            vec![Arg::input(0), Arg::output(0), Arg::Size(elements)],
        )?);
    }
    Ok(lowering)
}

/// Lowers QuantizeLinear of `elements` f32 (input 0) to u8 (output 0) with a per-tensor
/// `scale` and `zero_point` in 0..=255.
pub fn lower_quantize(
    arch: Arch,
    elements: usize,
    scale: f32,
    zero_point: i32,
) -> Result<NodeLowering, KernelError> {
    let name = "QuantizeLinear to u8";
    let zp = check_input_zero_point(name, zero_point)?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(unsupported(name, format!("scale {scale} is not positive")));
    }
    let kernel = Arc::new(QuantizeKernel::new(arch, scale, zp));
    stream_lowering(
        kernel,
        elements,
        format!("quantize {elements} f32 to u8 (scale {scale}, zero point {zp})"),
    )
}

/// Lowers DequantizeLinear of `elements` u8 (input 0) to f32 (output 0) with a per-tensor
/// `scale` and `zero_point` in 0..=255.
pub fn lower_dequantize(
    arch: Arch,
    elements: usize,
    scale: f32,
    zero_point: i32,
) -> Result<NodeLowering, KernelError> {
    let name = "DequantizeLinear from u8";
    let zp = check_input_zero_point(name, zero_point)?;
    if !scale.is_finite() {
        return Err(unsupported(name, format!("scale {scale} is not finite")));
    }
    let kernel = Arc::new(DequantizeKernel::new(arch, scale, zp));
    stream_lowering(
        kernel,
        elements,
        format!("dequantize {elements} u8 to f32 (scale {scale}, zero point {zp})"),
    )
}

#[cfg(test)]
#[path = "quantize_tests.rs"]
mod tests;
