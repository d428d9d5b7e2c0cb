//! 8-bit pooling, NCHW: MaxPool on u8 and qcc's realized
//! [`qcc_ir::Op::QuantizedGlobalAveragePool`].
//!
//! **MaxPool** ([`QMaxPoolKernel`], `void k(const uint8_t *x, uint8_t *y, uint8_t *scratch,
//! size_t planes)`). The interpreter's u8 MaxPool keeps `v > m ? v : m` from `m = 0` over the
//! window's taps inside the input (padding never wins; a window of padding only gives 0).
//! Because 0 is also the smallest u8, reading a padding tap as 0 changes nothing, and a max
//! over a rectangular window is separable, so each output row is computed in two passes:
//! 1. vertical: the max over the window's kernel rows, for every input column, into a
//!    staging row in scratch (16 columns per `umax` step). A kernel row outside the input
//!    reads a row of zeros in scratch instead (a pointer `select`, no branches);
//! 2. horizontal: the max over the kernel columns of the staging row for each output column.
//!    The staging row has zeros where the left and right padding (and ceil-mode overhang) are,
//!    so no window needs a bounds check. Stride 1 and 2 take 16 outputs per step (stride 2
//!    de-interleaves two loads with a shuffle), other strides one output at a time.
//!
//! The geometry is baked and spelled in the symbol; `planes = N·C` is a run-time argument.
//! Rank-3 inputs (1-D pooling) are pooled as height 1. An i8 tensor stored +128 pools the
//! same (max is monotone; its padding value −128 is stored as 0).
//!
//! **Global average pool** ([`QGlobalAvgPoolKernel`], `void k(const uint8_t *x, uint8_t *y,
//! size_t planes)`): per plane `q = sat_u8(zp_y + M.apply(Σ x − zp_x·size))`, the sum in
//! i32x4 lanes (exact: the plane size is checked so it cannot overflow), the fixed-point step
//! in i64 exactly as [`FixedPoint::apply`].

use std::sync::Arc;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::requant::FixedPoint;
use qcc_ir::{DType, PoolAttrs};

use super::bytes::{byte_spec, byte_stream, widen_u8x16};
use super::microkernel::shuffle_mask;
use super::{check_input_zero_point, unsupported};
use crate::lower::kernel::{
    arity_error, counted_loop, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::lower::pool::{window_axes, PoolAxis};
use crate::target::Arch;

/// Slack after the staging row, so no vector load of the horizontal pass can leave scratch.
const STAGING_SLACK: usize = 32;

/// u8 MaxPool over two spatial axes (see the module docs).
#[derive(Clone, Debug)]
pub struct QMaxPoolKernel {
    rows: PoolAxis,
    columns: PoolAxis,
    spec: KernelSpec,
}

impl QMaxPoolKernel {
    pub fn new(arch: Arch, rows: PoolAxis, columns: PoolAxis) -> QMaxPoolKernel {
        let op = format!(
            "qmaxpool_u8_i{}x{}_o{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}",
            rows.input,
            columns.input,
            rows.output,
            columns.output,
            rows.kernel,
            columns.kernel,
            rows.stride,
            columns.stride,
            rows.dilation,
            columns.dilation,
            rows.pad_begin,
            columns.pad_begin,
        );
        let spec = byte_spec(
            arch,
            op,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::output("scratch"),
                KernelParam::size("planes"),
            ],
        );
        QMaxPoolKernel {
            rows,
            columns,
            spec,
        }
    }

    /// Bytes of the zero row at the start of scratch (16-byte multiple).
    fn zero_row_bytes(&self) -> usize {
        self.columns.input.div_ceil(16) * 16
    }

    /// Bytes of the staging row: the left padding, the input row, the right overhang.
    fn staging_bytes(&self) -> usize {
        let c = &self.columns;
        (c.pad_begin + c.input).max(c.reach()) + STAGING_SLACK
    }

    pub fn scratch_bytes(&self) -> usize {
        self.zero_row_bytes() + self.staging_bytes()
    }

    /// Pass 1: `staging[pad_left + c] = max_k rows[k][c]` for every input column `c`.
    fn emit_vertical(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        rows: &[Value],
        staging: Value,
    ) {
        let zero = b.ins().iconst(context.pointer, 0);
        let width = b.ins().iconst(context.pointer, self.columns.input as i64);
        let into = b.ins().iadd_imm_s(staging, self.columns.pad_begin as i64);
        let reduce = |b: &mut FunctionBuilder, i: Value, ty| {
            let mut acc = None;
            for &row in rows {
                let at = b.ins().iadd(row, i);
                let value = if ty == types::I8X16 {
                    b.ins().load(ty, flags(), at, 0)
                } else {
                    b.ins().uload8(types::I32, flags(), at, 0)
                };
                acc = Some(match acc {
                    Some(m) => b.ins().umax(m, value),
                    None => value,
                });
            }
            acc
        };
        byte_stream(
            b,
            context.pointer,
            zero,
            width,
            |b, i| {
                if let Some(value) = reduce(b, i, types::I8X16) {
                    let to = b.ins().iadd(into, i);
                    b.ins().store(flags(), value, to, 0);
                }
            },
            |b, i| {
                if let Some(value) = reduce(b, i, types::I32) {
                    let to = b.ins().iadd(into, i);
                    b.ins().istore8(flags(), value, to, 0);
                }
            },
        );
    }

    /// 16 bytes `stride` apart from `address` (stride 1 or 2).
    fn load_strided(&self, b: &mut FunctionBuilder, address: Value) -> Value {
        let first = b.ins().load(types::I8X16, flags(), address, 0);
        if self.columns.stride == 1 {
            return first;
        }
        let second = b.ins().load(types::I8X16, flags(), address, 16);
        let even: [u8; 16] = std::array::from_fn(|lane| 2 * lane as u8);
        let mask = shuffle_mask(b, even);
        b.ins().shuffle(first, second, mask)
    }

    /// Pass 2: `out[o] = max_k staging[o·stride + k·dilation]`.
    fn emit_horizontal(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        staging: Value,
        out_row: Value,
    ) {
        let c = self.columns;
        let zero = b.ins().iconst(context.pointer, 0);
        let end = b.ins().iconst(context.pointer, c.output as i64);
        let window_start = |b: &mut FunctionBuilder, o: Value| {
            let offset = b.ins().imul_imm_s(o, c.stride as i64);
            b.ins().iadd(staging, offset)
        };
        let start = if c.stride <= 2 {
            counted_loop(b, context.pointer, zero, end, 16, |b, o| {
                let first = window_start(b, o);
                let mut acc = self.load_strided(b, first);
                for k in 1..c.kernel {
                    let at = b.ins().iadd_imm_s(first, (k * c.dilation) as i64);
                    let value = self.load_strided(b, at);
                    acc = b.ins().umax(acc, value);
                }
                let to = b.ins().iadd(out_row, o);
                b.ins().store(flags(), acc, to, 0);
            })
        } else {
            zero
        };
        counted_loop(b, context.pointer, start, end, 1, |b, o| {
            let first = window_start(b, o);
            let mut acc = b.ins().uload8(types::I32, flags(), first, 0);
            for k in 1..c.kernel {
                let offset = (k * c.dilation) as i32;
                let value = b.ins().uload8(types::I32, flags(), first, offset);
                acc = b.ins().umax(acc, value);
            }
            let to = b.ins().iadd(out_row, o);
            b.ins().istore8(flags(), acc, to, 0);
        });
    }
}

impl Kernel for QMaxPoolKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, scratch, planes] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (x, y, scratch, planes) = (*x, *y, *scratch, *planes);
        let (rows, columns) = (self.rows, self.columns);
        let pointer = context.pointer;
        // Zero the whole scratch once: the zero row and the staging row's padding stay zero.
        let zero = b.ins().iconst(pointer, 0);
        let scratch_end = b.ins().iconst(pointer, self.scratch_bytes() as i64);
        let zeros = b.ins().iconst(types::I8, 0);
        let zero_bytes = b.ins().splat(types::I8X16, zeros);
        byte_stream(
            b,
            pointer,
            zero,
            scratch_end,
            |b, i| {
                let to = b.ins().iadd(scratch, i);
                b.ins().store(flags(), zero_bytes, to, 0);
            },
            |b, i| {
                let to = b.ins().iadd(scratch, i);
                b.ins().store(flags(), zeros, to, 0);
            },
        );
        let zero_row = scratch;
        let staging = b.ins().iadd_imm_s(scratch, self.zero_row_bytes() as i64);
        let in_plane_bytes = (rows.input * columns.input) as i64;
        let out_plane_bytes = (rows.output * columns.output) as i64;
        counted_loop(b, pointer, zero, planes, 1, |b, plane| {
            let in_offset = b.ins().imul_imm_s(plane, in_plane_bytes);
            let in_plane = b.ins().iadd(x, in_offset);
            let out_offset = b.ins().imul_imm_s(plane, out_plane_bytes);
            let out_plane = b.ins().iadd(y, out_offset);
            let out_rows = b.ins().iconst(pointer, rows.output as i64);
            counted_loop(b, pointer, zero, out_rows, 1, |b, o| {
                let origin = b.ins().imul_imm_s(o, rows.stride as i64);
                let tap_rows: Vec<Value> = (0..rows.kernel)
                    .map(|k| {
                        let shift = (k * rows.dilation) as i64 - rows.pad_begin as i64;
                        let row = b.ins().iadd_imm_s(origin, shift);
                        // Unsigned: a row above the input wraps to a huge index.
                        let inside =
                            b.ins()
                                .icmp_imm_u(IntCC::UnsignedLessThan, row, rows.input as i64);
                        let offset = b.ins().imul_imm_s(row, columns.input as i64);
                        let address = b.ins().iadd(in_plane, offset);
                        b.ins().select(inside, address, zero_row)
                    })
                    .collect();
                self.emit_vertical(b, context, &tap_rows, staging);
                let out_offset = b.ins().imul_imm_s(o, columns.output as i64);
                let out_row = b.ins().iadd(out_plane, out_offset);
                self.emit_horizontal(b, context, staging, out_row);
            });
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers MaxPool on a u8 NCHW input of `input_dims` (rank 3 or 4) with window `attrs`
/// (input 0 → output 0, `[N, C, *pooled]` as shape inference gives).
pub fn lower_qmaxpool(
    arch: Arch,
    attrs: &PoolAttrs,
    input_dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    let name = format!("u8 MaxPool on {input_dims:?}");
    let fail = |reason: String| unsupported(&name, reason);
    if !(3..=4).contains(&input_dims.len()) {
        return Err(fail(format!(
            "only 1-D and 2-D pooling (rank 3 or 4) is lowered, input has rank {}",
            input_dims.len()
        )));
    }
    let axes = window_axes(attrs, input_dims, DType::U8).map_err(&fail)?;
    let (rows, columns) = match axes.as_slice() {
        [only] => (PoolAxis::unit(), *only),
        [rows, columns] => (*rows, *columns),
        _ => return Err(fail(format!("{} spatial axes", axes.len()))),
    };
    let planes = input_dims[0] * input_dims[1];
    let mut lowering = NodeLowering {
        description: format!(
            "u8 maxpool k{}x{} s{}x{} (vertical then horizontal max)",
            rows.kernel, columns.kernel, rows.stride, columns.stride
        ),
        ..NodeLowering::default()
    };
    let empty = planes == 0 || axes.iter().any(|a| a.output == 0);
    if empty || axes.iter().any(|a| a.input == 0) {
        // Nothing to compute, or windows over an empty input: every output is padding only.
        if !empty {
            return Err(fail(
                "empty spatial input with a non-empty output".to_string(),
            ));
        }
        return Ok(lowering);
    }
    let kernel = QMaxPoolKernel::new(arch, rows, columns);
    lowering.scratch_bytes = kernel.scratch_bytes();
    lowering.calls.push(KernelCall::new(
        Arc::new(kernel),
        vec![
            Arg::input(0),
            Arg::output(0),
            Arg::Scratch { offset: 0 },
            Arg::Size(planes),
        ],
    )?);
    Ok(lowering)
}

/// QuantizedGlobalAveragePool on u8 (see the module docs).
#[derive(Clone, Debug)]
pub struct QGlobalAvgPoolKernel {
    size: usize,
    x_zero_point: u8,
    y_zero_point: u8,
    multiplier: FixedPoint,
    spec: KernelSpec,
}

impl QGlobalAvgPoolKernel {
    pub fn new(
        arch: Arch,
        size: usize,
        x_zero_point: u8,
        y_zero_point: u8,
        multiplier: FixedPoint,
    ) -> QGlobalAvgPoolKernel {
        let op = format!(
            "qglobalavgpool_u8_n{size}_zx{x_zero_point}_zy{y_zero_point}_m{}_s{}",
            multiplier.multiplier(),
            multiplier.shift()
        );
        let spec = byte_spec(
            arch,
            op,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::size("planes"),
            ],
        );
        QGlobalAvgPoolKernel {
            size,
            x_zero_point,
            y_zero_point,
            multiplier,
            spec,
        }
    }

    /// `Σ x` over the plane at `base`, as i32.
    fn emit_sum(&self, b: &mut FunctionBuilder, context: &KernelContext, base: Value) -> Value {
        let lanes = b.declare_var(types::I32X4);
        let total = b.declare_var(types::I32);
        let zero32 = b.ins().iconst(types::I32, 0);
        let zeros = b.ins().splat(types::I32X4, zero32);
        b.def_var(lanes, zeros);
        b.def_var(total, zero32);
        let zero = b.ins().iconst(context.pointer, 0);
        let end = b.ins().iconst(context.pointer, self.size as i64);
        let tail = counted_loop(b, context.pointer, zero, end, 16, |b, i| {
            let at = b.ins().iadd(base, i);
            let [w0, w1, w2, w3] = widen_u8x16(b, at);
            let low = b.ins().iadd(w0, w1);
            let high = b.ins().iadd(w2, w3);
            let chunk = b.ins().iadd(low, high);
            let acc = b.use_var(lanes);
            let next = b.ins().iadd(acc, chunk);
            b.def_var(lanes, next);
        });
        let acc = b.use_var(lanes);
        let mut sum = b.ins().extractlane(acc, 0);
        for lane in 1..4 {
            let value = b.ins().extractlane(acc, lane);
            sum = b.ins().iadd(sum, value);
        }
        b.def_var(total, sum);
        counted_loop(b, context.pointer, tail, end, 1, |b, i| {
            let at = b.ins().iadd(base, i);
            let value = b.ins().uload8(types::I32, flags(), at, 0);
            let acc = b.use_var(total);
            let next = b.ins().iadd(acc, value);
            b.def_var(total, next);
        });
        b.use_var(total)
    }
}

impl Kernel for QGlobalAvgPoolKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, planes] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (x, y, planes) = (*x, *y, *planes);
        let zero = b.ins().iconst(context.pointer, 0);
        let m = self.multiplier;
        counted_loop(b, context.pointer, zero, planes, 1, |b, plane| {
            let offset = b.ins().imul_imm_s(plane, self.size as i64);
            let base = b.ins().iadd(x, offset);
            let sum = self.emit_sum(b, context, base);
            // Σ (x − zx) = Σ x − zx·size: exact in i32 (size ≤ i32::MAX / 255, checked).
            let centred = b
                .ins()
                .iadd_imm_s(sum, -(i64::from(self.x_zero_point) * self.size as i64));
            let wide = b.ins().sextend(types::I64, centred);
            let product = b.ins().imul_imm_s(wide, i64::from(m.multiplier()));
            let rounded = b.ins().iadd_imm_s(product, 1i64 << (m.shift() - 1));
            let scaled = b.ins().sshr_imm_s(rounded, i64::from(m.shift()));
            let shifted = b.ins().iadd_imm_s(scaled, i64::from(self.y_zero_point));
            let low = b.ins().iconst(types::I64, 0);
            let high = b.ins().iconst(types::I64, 255);
            let clamped = b.ins().smax(shifted, low);
            let clamped = b.ins().smin(clamped, high);
            let to = b.ins().iadd(y, plane);
            b.ins().istore8(flags(), clamped, to, 0);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers QuantizedGlobalAveragePool on a u8 input of `input_dims` (`[N, C, *spatial]`,
/// input 0) to u8 `[N, C, 1, ...]` (output 0). Zero points are u8 values; `multiplier` is
/// [`qcc_ir::op::pool_multiplier`] over the spatial size.
pub fn lower_qglobal_avgpool(
    arch: Arch,
    input_dims: &[usize],
    x_zero_point: i32,
    y_zero_point: i32,
    multiplier: FixedPoint,
) -> Result<NodeLowering, KernelError> {
    let name = format!("QuantizedGlobalAveragePool on {input_dims:?}");
    let fail = |reason: String| unsupported(&name, reason);
    let zx = check_input_zero_point(&name, x_zero_point)?;
    let zy = check_input_zero_point(&name, y_zero_point)?;
    if input_dims.len() < 3 {
        return Err(fail("needs N, C and spatial dims".to_string()));
    }
    let planes = input_dims[0] * input_dims[1];
    let size: usize = input_dims[2..].iter().product();
    if size > (i32::MAX / 255) as usize {
        return Err(fail(format!(
            "plane of {size} elements could overflow the i32 sum"
        )));
    }
    let mut lowering = NodeLowering {
        description: format!("int8 global average pool over {size} elements"),
        ..NodeLowering::default()
    };
    if planes > 0 {
        let kernel = QGlobalAvgPoolKernel::new(arch, size, zx, zy, multiplier);
        lowering.calls.push(KernelCall::new(
            Arc::new(kernel),
            vec![Arg::input(0), Arg::output(0), Arg::Size(planes)],
        )?);
    }
    Ok(lowering)
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
