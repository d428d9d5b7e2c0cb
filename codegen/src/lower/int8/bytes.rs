//! Data movement for 8-bit tensors: strided byte copies (copies, Concat slots) and Transpose,
//! the 1-byte-element twins of [`crate::lower::layout`] (whose kernels move whole f32).
//!
//! - [`ByteCopyKernel`]: `void k(const uint8_t *src, uint8_t *dst, size_t rows, size_t len,
//!   size_t src_stride, size_t dst_stride)` copies `rows` rows of `len` bytes, row `r` from
//!   `src + r·src_stride` to `dst + r·dst_stride`. Nothing is baked: one symbol per ISA.
//! - Transpose: the fp32 transpose kernel over bytes ([`layout::Element::Byte`]), using the
//!   two copy helpers below for its innermost loops.
//!
//! Contiguous runs move 16 bytes per vector load and store, then single bytes. The
//! module also holds the byte-stream helpers the element-wise int8 kernels share.

use std::sync::Arc;

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

use super::{int8_spec, unsupported};
use crate::lower::kernel::{
    arity_error, counted_loop, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
    Tile,
};
use crate::lower::layout;
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::target::Arch;

/// Bytes per vector: Cranelift lowers 128-bit vectors only.
pub const BYTE_LANES: i64 = 16;

/// The tile of a byte-streaming kernel: one row of 16 bytes per step.
pub(crate) const BYTE_TILE: Tile = Tile { rows: 1, cols: 16 };

/// Runs `vector(b, i)` for `i` in `start..end` stepping 16 while 16 elements remain, then
/// `scalar(b, i)` one element at a time: the shape of every byte-streaming kernel.
pub(crate) fn byte_stream(
    b: &mut FunctionBuilder,
    pointer: Type,
    start: Value,
    end: Value,
    vector: impl FnMut(&mut FunctionBuilder, Value),
    scalar: impl FnMut(&mut FunctionBuilder, Value),
) {
    let tail = counted_loop(b, pointer, start, end, BYTE_LANES, vector);
    counted_loop(b, pointer, tail, end, 1, scalar);
}

/// `base + index · element_bytes`.
pub(crate) fn element_address(
    b: &mut FunctionBuilder,
    base: Value,
    index: Value,
    element_bytes: i64,
) -> Value {
    let offset = if element_bytes == 1 {
        index
    } else {
        b.ins().imul_imm_s(index, element_bytes)
    };
    b.ins().iadd(base, offset)
}

/// The 16 bytes at `address` widened to four i32x4 (lanes 0-3, 4-7, 8-11, 12-15), zero
/// extended: u8 activations.
pub(crate) fn widen_u8x16(b: &mut FunctionBuilder, address: Value) -> [Value; 4] {
    let bytes = b.ins().load(types::I8X16, flags(), address, 0);
    let low = b.ins().uwiden_low(bytes);
    let high = b.ins().uwiden_high(bytes);
    [
        b.ins().uwiden_low(low),
        b.ins().uwiden_high(low),
        b.ins().uwiden_low(high),
        b.ins().uwiden_high(high),
    ]
}

/// Packs four i32x4 whose lanes are already in 0..=255 into 16 bytes at `address`.
pub(crate) fn narrow_store_u8x16(b: &mut FunctionBuilder, lanes: [Value; 4], address: Value) {
    let low = b.ins().unarrow(lanes[0], lanes[1]);
    let high = b.ins().unarrow(lanes[2], lanes[3]);
    let bytes = b.ins().unarrow(low, high);
    b.ins().store(flags(), bytes, address, 0);
}

/// The spec of a byte-streaming int8 kernel, named `{arch}_i32x4_{op}`.
pub(crate) fn byte_spec(arch: Arch, op: String, params: Vec<KernelParam>) -> KernelSpec {
    int8_spec(arch, op, BYTE_TILE, params)
}

/// Copies `len` contiguous bytes from `src` to `dst` (`len` a pointer-sized value).
pub(crate) fn emit_contiguous_copy(
    b: &mut FunctionBuilder,
    context: &KernelContext,
    src: Value,
    dst: Value,
    len: Value,
) {
    let zero = b.ins().iconst(context.pointer, 0);
    byte_stream(
        b,
        context.pointer,
        zero,
        len,
        |b, i| {
            let from = b.ins().iadd(src, i);
            let to = b.ins().iadd(dst, i);
            let value = b.ins().load(types::I8X16, flags(), from, 0);
            b.ins().store(flags(), value, to, 0);
        },
        |b, i| {
            let from = b.ins().iadd(src, i);
            let to = b.ins().iadd(dst, i);
            let value = b.ins().load(types::I8, flags(), from, 0);
            b.ins().store(flags(), value, to, 0);
        },
    );
}

/// Copies `len` bytes `src_stride` apart in the source to contiguous `dst`.
pub(crate) fn emit_gather_copy(
    b: &mut FunctionBuilder,
    context: &KernelContext,
    src: Value,
    dst: Value,
    len: usize,
    src_stride: i64,
) {
    let zero = b.ins().iconst(context.pointer, 0);
    let end = b.ins().iconst(context.pointer, len as i64);
    counted_loop(b, context.pointer, zero, end, 1, |b, i| {
        let from = element_address(b, src, i, src_stride);
        let value = b.ins().load(types::I8, flags(), from, 0);
        let to = b.ins().iadd(dst, i);
        b.ins().store(flags(), value, to, 0);
    });
}

/// `rows` rows of `len` bytes from `src` (rows `src_stride` bytes apart) to `dst` (rows
/// `dst_stride` apart).
#[derive(Clone, Debug)]
pub struct ByteCopyKernel {
    spec: KernelSpec,
}

impl ByteCopyKernel {
    pub fn new(arch: Arch) -> ByteCopyKernel {
        let spec = byte_spec(
            arch,
            "u8_copy_rows".to_string(),
            vec![
                KernelParam::input("src"),
                KernelParam::output("dst"),
                KernelParam::size("rows"),
                KernelParam::size("len"),
                KernelParam::size("src_stride"),
                KernelParam::size("dst_stride"),
            ],
        );
        ByteCopyKernel { spec }
    }
}

impl Kernel for ByteCopyKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [src, dst, rows, len, src_stride, dst_stride] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (src, dst, len) = (*src, *dst, *len);
        let (src_stride, dst_stride) = (*src_stride, *dst_stride);
        let zero = b.ins().iconst(context.pointer, 0);
        counted_loop(b, context.pointer, zero, *rows, 1, |b, row| {
            let from = element_address_dynamic(b, src, row, src_stride);
            let to = element_address_dynamic(b, dst, row, dst_stride);
            emit_contiguous_copy(b, context, from, to, len);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// `base + index · stride` with a run-time stride.
fn element_address_dynamic(
    b: &mut FunctionBuilder,
    base: Value,
    index: Value,
    stride: Value,
) -> Value {
    let offset = b.ins().imul(index, stride);
    b.ins().iadd(base, offset)
}

/// A strided byte copy as one call: merged into a single row when the rows touch.
fn copy_call(
    kernel: &Arc<ByteCopyKernel>,
    src: Arg,
    dst: Arg,
    rows: usize,
    len: usize,
    src_stride: usize,
    dst_stride: usize,
) -> Result<KernelCall, KernelError> {
    let (rows, len, src_stride, dst_stride) =
        if rows == 1 || (len == src_stride && len == dst_stride) {
            (1, rows * len, rows * len, rows * len)
        } else {
            (rows, len, src_stride, dst_stride)
        };
    KernelCall::new(
        kernel.clone(),
        vec![
            src,
            dst,
            Arg::Size(rows),
            Arg::Size(len),
            Arg::Size(src_stride),
            Arg::Size(dst_stride),
        ],
    )
}

/// Lowers a plain copy of `bytes` bytes from input 0 to output 0 (any element type).
pub fn lower_byte_copy(arch: Arch, bytes: usize) -> Result<NodeLowering, KernelError> {
    let mut lowering = NodeLowering {
        description: format!("byte copy of {bytes} bytes"),
        ..NodeLowering::default()
    };
    if bytes > 0 {
        let kernel = Arc::new(ByteCopyKernel::new(arch));
        let call = copy_call(
            &kernel,
            Arg::input(0),
            Arg::output(0),
            1,
            bytes,
            bytes,
            bytes,
        )?;
        lowering.calls.push(call);
    }
    Ok(lowering)
}

/// Lowers Concat of 1-byte elements along `axis` of inputs with `input_dims` into output 0,
/// copying only the inputs `i` with `copy[i]` (the others were written in place by their
/// producers): the contract of [`crate::lower::layout::lower_concat`].
pub fn lower_byte_concat(
    arch: Arch,
    axis: usize,
    input_dims: &[Vec<usize>],
    copy: &[bool],
) -> Result<NodeLowering, KernelError> {
    let fail = |reason: String| {
        unsupported(
            &format!("u8 Concat on {input_dims:?} along axis {axis}"),
            reason,
        )
    };
    let first = input_dims
        .first()
        .ok_or_else(|| fail("no inputs".to_string()))?;
    if copy.len() != input_dims.len() {
        return Err(fail(format!(
            "{} copy flags for {} inputs",
            copy.len(),
            input_dims.len()
        )));
    }
    if axis >= first.len() {
        return Err(fail(format!("axis out of range for rank {}", first.len())));
    }
    for dims in input_dims {
        let compatible =
            dims.len() == first.len() && (0..dims.len()).all(|d| d == axis || dims[d] == first[d]);
        if !compatible {
            return Err(fail(format!(
                "input {dims:?} does not match {first:?} outside the axis"
            )));
        }
    }
    let outer: usize = first[..axis].iter().product();
    let inner = |dims: &[usize]| dims[axis..].iter().product::<usize>();
    let total_inner: usize = input_dims.iter().map(|d| inner(d)).sum();
    let kernel = Arc::new(ByteCopyKernel::new(arch));
    let mut lowering = NodeLowering::default();
    let mut slot = 0;
    let mut copied = Vec::new();
    for (index, (dims, &needed)) in input_dims.iter().zip(copy).enumerate() {
        let len = inner(dims);
        if needed && len > 0 && outer > 0 {
            let dst = Arg::Output {
                index: 0,
                offset: slot,
            };
            let call = copy_call(
                &kernel,
                Arg::input(index),
                dst,
                outer,
                len,
                len,
                total_inner,
            )?;
            lowering.calls.push(call);
            copied.push(index);
        }
        slot += len;
    }
    lowering.description = format!(
        "u8 concat axis {axis}: {outer} rows of {total_inner} bytes, copying inputs {copied:?}"
    );
    Ok(lowering)
}

/// Lowers Transpose of a 1-byte-element input of `dims` by `perm` (input 0 → output 0): the
/// fp32 transpose's loop nest over bytes ([`layout::lower_transpose_of`]).
pub fn lower_byte_transpose(
    arch: Arch,
    perm: &[usize],
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    layout::lower_transpose_of(arch, perm, dims, layout::Element::Byte)
}

/// One contiguous copy of `bytes` bytes from input 0 to output 0.
pub(crate) fn plain_copy_call(arch: Arch, bytes: usize) -> Result<KernelCall, KernelError> {
    let kernel = Arc::new(ByteCopyKernel::new(arch));
    copy_call(&kernel, Arg::input(0), Arg::output(0), 1, bytes, 0, 0)
}

#[cfg(test)]
#[path = "bytes_tests.rs"]
mod tests;
