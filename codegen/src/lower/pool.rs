//! Pooling kernels (max, average, global), fp32, NCHW.
//!
//! Two kernel kinds:
//! - [`WindowPoolKernel`]: MaxPool / AveragePool over two spatial axes,
//!   `void k(const float *x, float *y, size_t planes)` with `planes = N·C`. The window
//!   geometry (input and output extents, kernel, strides, dilations, begin pads) is baked into
//!   the code as constants, and spelled out in the symbol name so two configurations never
//!   share one. Baking lets every output axis be split at compile time into border outputs
//!   (whose windows overlap the padding, each emitted with exactly its valid taps) and one
//!   interior run (all taps valid, no bounds checks): the taps are unrolled, and the kernel
//!   needs no per-tap comparisons at run time. Batch and channels stay a run-time argument, so
//!   layers with the same spatial geometry share a kernel.
//! - [`GlobalPoolKernel`]: GlobalAveragePool / GlobalMaxPool,
//!   `void k(const float *x, float *y, size_t planes, size_t size)`, f32x4 over each plane
//!   with a scalar tail. Nothing is baked: one symbol per op and ISA.
//!
//! Semantics follow the interpreter (`qcc_ir::eval::pool`) exactly:
//! - Max keeps `v > m ? v : m` from `-inf`, taps in row-major window order: padding never
//!   wins (it acts as `-inf`), NaN inputs are skipped, an empty or all-NaN window gives
//!   `-inf`, and among equal values (`-0`/`+0`) the first tap wins.
//! - Average sums from `-0.0` (Rust's `f32::sum`) in the same tap order and divides by the
//!   valid-tap count, or by the full kernel size with `count_include_pad` (also for ceil_mode
//!   windows running past the end padding). Same operations in the same order: bit-exact.
//! - Global max reduces four lanes, then folds the lanes and the tail with the same rule; the
//!   result is unique except for a zero maximum, where the interpreter returns the first zero
//!   of the plane: the kernel then rescans for it (cheap: it stops at the first zero).
//! - Global average sums in f32x4 lanes, so its summation order differs from the
//!   interpreter's sequential sum: not bit-exact (the tests bound the difference).
//!
//! The vector main loops of the window kernels run across output width (four adjacent
//! outputs, one per lane; each lane reduces its own window in the scalar order): contiguous
//! loads for stride 1, four scalar loads into lanes otherwise.
//!
//! All index math of the memory layout is in [`PlaneLayout`]; a blocked or NHWC layout
//! later changes that type and the vector direction, not the window logic.

use std::ops::Range;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::infer::{pool_output_dims, resolve_pads};
use qcc_ir::{DType, Op, PoolAttrs, TensorType};

use super::elementwise::LANES;
use super::kernel::{
    arity_error, counted_loop, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use super::vmath::FloatOps;
use crate::target::Arch;

/// Above this many unrolled window taps a window kernel is refused rather than emitted
/// (huge kernels on small inputs make every output a border output).
const MAX_UNROLLED_TAPS: usize = 1 << 16;

/// The reduction of a window kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
}

impl PoolKind {
    fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "maxpool",
            PoolKind::Average {
                count_include_pad: true,
            } => "avgpool_incl",
            PoolKind::Average {
                count_include_pad: false,
            } => "avgpool_excl",
        }
    }
}

/// One spatial axis of a window, resolved for one input extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolAxis {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
}

/// A stretch of outputs along one axis.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// One border output and the kernel taps of its window that fall inside the input.
    Border { output: usize, taps: Vec<usize> },
    /// Outputs whose windows lie entirely inside the input.
    Interior(Range<usize>),
}

/// The spatial axes of a pooling window over an input of `input_dims` (`[N, C, *spatial]`),
/// resolved as shape inference resolves them: one [`PoolAxis`] per spatial dim. The one
/// geometry the fp32 and the u8 pooling kernels both use.
pub fn window_axes(
    attrs: &PoolAttrs,
    input_dims: &[usize],
    dtype: DType,
) -> Result<Vec<PoolAxis>, String> {
    let input = TensorType::new(dtype, input_dims.to_vec());
    let output_dims = pool_output_dims(attrs, &input)?;
    let spatial = input_dims.get(2..).unwrap_or(&[]);
    let (pads, _) = resolve_pads(
        &attrs.padding,
        spatial,
        &attrs.kernel,
        &attrs.strides,
        &attrs.dilations,
    )?;
    Ok((0..spatial.len())
        .map(|d| PoolAxis {
            input: spatial[d],
            output: output_dims[2 + d],
            kernel: attrs.kernel[d],
            stride: attrs.strides[d],
            dilation: attrs.dilations[d],
            pad_begin: pads[d],
        })
        .collect())
}

impl PoolAxis {
    /// The axis of extent 1 with a window of 1 (a 1-D pool seen as 2-D).
    pub fn unit() -> PoolAxis {
        PoolAxis {
            input: 1,
            output: 1,
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_begin: 0,
        }
    }

    /// Input positions from `−pad_begin` that the last output's window reaches, plus one.
    pub fn reach(&self) -> usize {
        self.output.saturating_sub(1) * self.stride + (self.kernel - 1) * self.dilation + 1
    }

    /// Input coordinate of the first tap of output `o` (negative inside the begin padding).
    fn origin(&self, o: usize) -> i64 {
        (o * self.stride) as i64 - self.pad_begin as i64
    }

    /// The kernel taps of output `o` that read the input, in order.
    fn taps(&self, o: usize) -> Vec<usize> {
        (0..self.kernel)
            .filter(|&k| {
                let q = self.origin(o) + (k * self.dilation) as i64;
                q >= 0 && q < self.input as i64
            })
            .collect()
    }

    /// The outputs in order: borders, then one interior run (if any), then borders.
    /// Windows move monotonically, so the complete ones are contiguous.
    fn segments(&self) -> Vec<Segment> {
        let complete: Vec<usize> = (0..self.output)
            .filter(|&o| self.taps(o).len() == self.kernel)
            .collect();
        let interior = match (complete.first(), complete.last()) {
            (Some(&lo), Some(&hi)) => lo..hi + 1,
            _ => self.output..self.output,
        };
        let border = |o: usize| Segment::Border {
            output: o,
            taps: self.taps(o),
        };
        let mut segments: Vec<Segment> = (0..interior.start.min(self.output)).map(border).collect();
        if !interior.is_empty() {
            segments.push(Segment::Interior(interior.clone()));
        }
        segments.extend((interior.end.max(interior.start)..self.output).map(border));
        segments
    }
}

/// NCHW planes: the one place the kernels' memory layout is spelled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlaneLayout {
    height: usize,
    width: usize,
}

impl PlaneLayout {
    /// Elements per (batch, channel) plane.
    fn plane_len(self) -> usize {
        self.height * self.width
    }
    /// Byte distance between vertically adjacent elements.
    fn row_bytes(self) -> i64 {
        (self.width * 4) as i64
    }
    /// Byte distance between horizontally adjacent elements.
    const fn column_bytes() -> i64 {
        4
    }
    /// `base` + the bytes of plane `plane`.
    fn plane_address(self, b: &mut FunctionBuilder, base: Value, plane: Value) -> Value {
        let offset = b.ins().imul_imm_s(plane, (self.plane_len() * 4) as i64);
        b.ins().iadd(base, offset)
    }
    /// `plane` + the bytes of row `row` (a signed element row index; only dereferenced
    /// where it is inside the plane).
    fn row_address(self, b: &mut FunctionBuilder, plane: Value, row: Value) -> Value {
        let offset = b.ins().imul_imm_s(row, self.row_bytes());
        b.ins().iadd(plane, offset)
    }
}

/// MaxPool or AveragePool over two spatial axes of an NCHW tensor (see the module docs).
#[derive(Clone, Debug)]
pub struct WindowPoolKernel {
    kind: PoolKind,
    rows: PoolAxis,
    columns: PoolAxis,
    output_dims: Vec<usize>,
    spec: KernelSpec,
}

impl WindowPoolKernel {
    /// The kernel for `kind` with window `attrs` on an input of `input_dims` (`[N, C, H, W]`).
    pub fn new(
        arch: Arch,
        kind: PoolKind,
        attrs: &PoolAttrs,
        input_dims: &[usize],
    ) -> Result<WindowPoolKernel, KernelError> {
        let unsupported = |reason: String| KernelError::Unsupported {
            kernel: format!("{} on {input_dims:?}", kind.name()),
            reason,
        };
        if input_dims.len() != 4 {
            return Err(unsupported(format!(
                "only 2-D pooling (rank-4 input) is lowered, input has rank {}",
                input_dims.len()
            )));
        }
        let axes = window_axes(attrs, input_dims, DType::F32).map_err(&unsupported)?;
        let (rows, columns) = (axes[0], axes[1]);
        let output_dims = vec![input_dims[0], input_dims[1], rows.output, columns.output];
        let row_segments = rows.segments().len();
        let column_bodies = columns.segments().len() + 1;
        let taps = row_segments * column_bodies * rows.kernel * columns.kernel;
        if taps > MAX_UNROLLED_TAPS {
            return Err(unsupported(format!(
                "{taps} unrolled window taps exceed the limit of {MAX_UNROLLED_TAPS}"
            )));
        }
        let op = format!(
            "{}_i{}x{}_o{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}",
            kind.name(),
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
        let spec = KernelSpec::f32x4_stream(
            arch,
            op,
            None,
            vec![
                KernelParam::input("x"),
                KernelParam::output("y"),
                KernelParam::size("planes"),
            ],
        );
        Ok(WindowPoolKernel {
            kind,
            rows,
            columns,
            output_dims,
            spec,
        })
    }

    /// `[N, C, OH, OW]`.
    pub fn output_dims(&self) -> &[usize] {
        &self.output_dims
    }

    fn input_layout(&self) -> PlaneLayout {
        PlaneLayout {
            height: self.rows.input,
            width: self.columns.input,
        }
    }

    fn output_layout(&self) -> PlaneLayout {
        PlaneLayout {
            height: self.rows.output,
            width: self.columns.output,
        }
    }

    /// One output row. `row_origin` is the (signed) input row of kernel row 0; `kernel_rows`
    /// the kernel rows inside the input; `out_row` the address of the output row.
    fn emit_row(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        in_plane: Value,
        row_origin: Value,
        kernel_rows: &[usize],
        out_row: Value,
    ) {
        let layout = self.input_layout();
        let first_row = layout.row_address(b, in_plane, row_origin);
        let tap_rows: Vec<Value> = kernel_rows
            .iter()
            .map(|&k| {
                let step = (k * self.rows.dilation) as i64 * layout.row_bytes();
                b.ins().iadd_imm_s(first_row, step)
            })
            .collect();
        let columns = self.columns;
        let column_bytes = PlaneLayout::column_bytes();
        let all_columns: Vec<usize> = (0..columns.kernel).collect();
        for segment in columns.segments() {
            match segment {
                Segment::Border { output, taps } => {
                    let ops = scalar_ops(context);
                    let origin = columns.origin(output) * column_bytes;
                    let value =
                        self.emit_window(&ops, b, &tap_rows, origin, &taps, kernel_rows.len());
                    let address = b.ins().iadd_imm_s(out_row, output as i64 * column_bytes);
                    b.ins().store(flags(), value, address, 0);
                }
                Segment::Interior(range) => {
                    let start = b.ins().iconst(context.pointer, range.start as i64);
                    let end = b.ins().iconst(context.pointer, range.end as i64);
                    let vector = vector_ops(context);
                    let scalar = scalar_ops(context);
                    let column = |ops: &FloatOps, b: &mut FunctionBuilder, o: Value| {
                        // Byte offset of this output's first tap within an input row.
                        let scaled = b.ins().imul_imm_s(o, columns.stride as i64 * column_bytes);
                        let origin = b
                            .ins()
                            .iadd_imm_s(scaled, -(columns.pad_begin as i64) * column_bytes);
                        let rows: Vec<Value> =
                            tap_rows.iter().map(|&r| b.ins().iadd(r, origin)).collect();
                        let value =
                            self.emit_window(ops, b, &rows, 0, &all_columns, kernel_rows.len());
                        let out_offset = b.ins().imul_imm_s(o, column_bytes);
                        let address = b.ins().iadd(out_row, out_offset);
                        b.ins().store(flags(), value, address, 0);
                    };
                    let step = i64::from(LANES);
                    let tail = counted_loop(b, context.pointer, start, end, step, |b, o| {
                        column(&vector, b, o)
                    });
                    counted_loop(b, context.pointer, tail, end, 1, |b, o| {
                        column(&scalar, b, o)
                    });
                }
            }
        }
    }

    /// The reduction of one window (or, for vector `ops`, of four horizontally adjacent
    /// windows). `rows[i]` addresses kernel row `i`'s input row plus `origin` bytes at the
    /// window's first column; `kernel_columns` are the taps to read in that row.
    fn emit_window(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        rows: &[Value],
        origin: i64,
        kernel_columns: &[usize],
        valid_rows: usize,
    ) -> Value {
        let column_bytes = PlaneLayout::column_bytes();
        let lane_bytes = self.columns.stride as i64 * column_bytes;
        let mut accumulator = match self.kind {
            PoolKind::Max => ops.constant(b, f32::NEG_INFINITY),
            PoolKind::Average { .. } => ops.constant(b, -0.0),
        };
        for &row in rows {
            for &k in kernel_columns {
                let offset = origin + (k * self.columns.dilation) as i64 * column_bytes;
                let value = load_lanes(ops.ty, b, row, offset, lane_bytes);
                accumulator = match self.kind {
                    PoolKind::Max => ops.select_cmp(
                        b,
                        FloatCC::GreaterThan,
                        value,
                        accumulator,
                        value,
                        accumulator,
                    ),
                    PoolKind::Average { .. } => b.ins().fadd(accumulator, value),
                };
            }
        }
        match self.kind {
            PoolKind::Max => accumulator,
            PoolKind::Average { count_include_pad } => {
                let count = if count_include_pad {
                    self.rows.kernel * self.columns.kernel
                } else {
                    valid_rows * kernel_columns.len()
                };
                let divisor = ops.constant(b, count as f32);
                b.ins().fdiv(accumulator, divisor)
            }
        }
    }
}

/// Loads `ty` from `base + offset`: a scalar, or four lanes `lane_bytes` apart (one vector
/// load when they are adjacent).
fn load_lanes(
    ty: Type,
    b: &mut FunctionBuilder,
    base: Value,
    offset: i64,
    lane_bytes: i64,
) -> Value {
    let address = b.ins().iadd_imm_s(base, offset);
    if !ty.is_vector() {
        return b.ins().load(types::F32, flags(), address, 0);
    }
    if lane_bytes == 4 {
        return b.ins().load(ty, flags(), address, 0);
    }
    let first = b.ins().load(types::F32, flags(), address, 0);
    let mut vector = b.ins().splat(ty, first);
    for lane in 1..LANES {
        let at = b.ins().iadd_imm_s(address, i64::from(lane) * lane_bytes);
        let value = b.ins().load(types::F32, flags(), at, 0);
        vector = b.ins().insertlane(vector, value, lane as u8);
    }
    vector
}

fn vector_ops(context: &KernelContext) -> FloatOps {
    FloatOps {
        ty: types::F32X4,
        fma: context.fma,
    }
}

fn scalar_ops(context: &KernelContext) -> FloatOps {
    FloatOps {
        ty: types::F32,
        fma: context.fma,
    }
}

impl Kernel for WindowPoolKernel {
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
        let (input, output) = (self.input_layout(), self.output_layout());
        let rows = self.rows;
        let all_rows: Vec<usize> = (0..rows.kernel).collect();
        let zero = b.ins().iconst(context.pointer, 0);
        counted_loop(b, context.pointer, zero, planes, 1, |b, plane| {
            let in_plane = input.plane_address(b, x, plane);
            let out_plane = output.plane_address(b, y, plane);
            for segment in rows.segments() {
                match segment {
                    Segment::Border { output: o, taps } => {
                        let origin = b.ins().iconst(context.pointer, rows.origin(o));
                        let index = b.ins().iconst(context.pointer, o as i64);
                        let out_row = output.row_address(b, out_plane, index);
                        self.emit_row(b, context, in_plane, origin, &taps, out_row);
                    }
                    Segment::Interior(range) => {
                        let start = b.ins().iconst(context.pointer, range.start as i64);
                        let end = b.ins().iconst(context.pointer, range.end as i64);
                        counted_loop(b, context.pointer, start, end, 1, |b, o| {
                            let scaled = b.ins().imul_imm_s(o, rows.stride as i64);
                            let origin = b.ins().iadd_imm_s(scaled, -(rows.pad_begin as i64));
                            let out_row = output.row_address(b, out_plane, o);
                            self.emit_row(b, context, in_plane, origin, &all_rows, out_row);
                        });
                    }
                }
            }
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// GlobalAveragePool (`max == false`) or GlobalMaxPool over each of `planes` contiguous
/// planes of `size` elements (see the module docs).
#[derive(Clone, Debug)]
pub struct GlobalPoolKernel {
    max: bool,
    spec: KernelSpec,
}

impl GlobalPoolKernel {
    pub fn new(arch: Arch, max: bool) -> GlobalPoolKernel {
        let op = if max {
            "globalmaxpool"
        } else {
            "globalavgpool"
        }
        .to_string();
        GlobalPoolKernel {
            max,
            spec: KernelSpec::f32x4_stream(
                arch,
                op,
                None,
                vec![
                    KernelParam::input("x"),
                    KernelParam::output("y"),
                    KernelParam::size("planes"),
                    KernelParam::size("size"),
                ],
            ),
        }
    }

    /// `m = v > m ? v : m`, the interpreter's max step.
    fn max_step(ops: &FloatOps, b: &mut FunctionBuilder, m: Value, v: Value) -> Value {
        ops.select_cmp(b, FloatCC::GreaterThan, v, m, v, m)
    }

    /// The reduction of the plane at `base` with `size` elements.
    fn emit_plane(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        base: Value,
        size: Value,
    ) -> Value {
        let (vector, scalar) = (vector_ops(context), scalar_ops(context));
        let start = if self.max { f32::NEG_INFINITY } else { -0.0 };
        let lanes = b.declare_var(types::F32X4);
        let initial = vector.constant(b, start);
        b.def_var(lanes, initial);
        let zero = b.ins().iconst(context.pointer, 0);
        let address = |b: &mut FunctionBuilder, i: Value| {
            let offset = b.ins().ishl_imm_u(i, 2);
            b.ins().iadd(base, offset)
        };
        let tail = counted_loop(b, context.pointer, zero, size, i64::from(LANES), |b, i| {
            let at = address(b, i);
            let value = b.ins().load(types::F32X4, flags(), at, 0);
            let acc = b.use_var(lanes);
            let next = if self.max {
                Self::max_step(&vector, b, acc, value)
            } else {
                b.ins().fadd(acc, value)
            };
            b.def_var(lanes, next);
        });
        let folded = b.declare_var(types::F32);
        let acc = b.use_var(lanes);
        let mut total = b.ins().extractlane(acc, 0);
        for lane in 1..LANES as u8 {
            let value = b.ins().extractlane(acc, lane);
            total = if self.max {
                Self::max_step(&scalar, b, total, value)
            } else {
                b.ins().fadd(total, value)
            };
        }
        b.def_var(folded, total);
        counted_loop(b, context.pointer, tail, size, 1, |b, i| {
            let at = address(b, i);
            let value = b.ins().load(types::F32, flags(), at, 0);
            let acc = b.use_var(folded);
            let next = if self.max {
                Self::max_step(&scalar, b, acc, value)
            } else {
                b.ins().fadd(acc, value)
            };
            b.def_var(folded, next);
        });
        let total = b.use_var(folded);
        if self.max {
            self.emit_first_zero(b, context, base, size, folded, total);
            return b.use_var(folded);
        }
        let count = b.ins().fcvt_from_uint(types::F32, size);
        b.ins().fdiv(total, count)
    }

    /// A zero maximum keeps the sign of the plane's first zero (the interpreter's order):
    /// if `total` is ±0, rescan up to the first zero and store it in `result`.
    fn emit_first_zero(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        base: Value,
        size: Value,
        result: cranelift_frontend::Variable,
        total: Value,
    ) {
        let scan = b.create_block();
        let check = b.create_block();
        let found = b.create_block();
        let next = b.create_block();
        let done = b.create_block();
        b.append_block_param(check, context.pointer);
        let zero_f = b.ins().f32const(0.0);
        let is_zero = b.ins().fcmp(FloatCC::Equal, total, zero_f);
        b.ins().brif(is_zero, scan, &[], done, &[]);

        b.switch_to_block(scan);
        let start = b.ins().iconst(context.pointer, 0);
        b.ins().jump(check, &[start.into()]);

        // `check(i)`: i < size is guaranteed (a zero maximum came from some element).
        b.switch_to_block(check);
        let i = b.block_params(check)[0];
        let in_range = b.ins().icmp(IntCC::UnsignedLessThan, i, size);
        let offset = b.ins().ishl_imm_u(i, 2);
        let at = b.ins().iadd(base, offset);
        let body = b.create_block();
        b.ins().brif(in_range, body, &[], done, &[]);
        b.switch_to_block(body);
        let value = b.ins().load(types::F32, flags(), at, 0);
        let hit = b.ins().fcmp(FloatCC::Equal, value, zero_f);
        b.ins().brif(hit, found, &[], next, &[]);

        b.switch_to_block(next);
        let following = b.ins().iadd_imm_s(i, 1);
        b.ins().jump(check, &[following.into()]);

        b.switch_to_block(found);
        b.def_var(result, value);
        b.ins().jump(done, &[]);

        b.switch_to_block(done);
    }
}

impl Kernel for GlobalPoolKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, planes, size] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (x, y, planes, size) = (*x, *y, *planes, *size);
        let zero = b.ins().iconst(context.pointer, 0);
        counted_loop(b, context.pointer, zero, planes, 1, |b, plane| {
            let start = b.ins().imul(plane, size);
            let offset = b.ins().ishl_imm_u(start, 2);
            let base = b.ins().iadd(x, offset);
            let value = self.emit_plane(b, context, base, size);
            let out_offset = b.ins().ishl_imm_u(plane, 2);
            let out = b.ins().iadd(y, out_offset);
            b.ins().store(flags(), value, out, 0);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// A pooling node lowered to a kernel and the size arguments it is called with after the
/// `x` and `y` pointers.
pub struct PoolLowering {
    pub kernel: std::sync::Arc<dyn Kernel + Send + Sync>,
    pub sizes: Vec<usize>,
    pub output_dims: Vec<usize>,
}

/// Lowers MaxPool, AveragePool (2-D), GlobalAveragePool or GlobalMaxPool on an fp32 NCHW
/// input of `input_dims`.
pub fn lower_pool(arch: Arch, op: &Op, input_dims: &[usize]) -> Result<PoolLowering, KernelError> {
    let planes = input_dims.iter().take(2).product::<usize>();
    let window = |kind, attrs: &PoolAttrs| -> Result<PoolLowering, KernelError> {
        let kernel = WindowPoolKernel::new(arch, kind, attrs, input_dims)?;
        Ok(PoolLowering {
            output_dims: kernel.output_dims().to_vec(),
            kernel: std::sync::Arc::new(kernel),
            sizes: vec![planes],
        })
    };
    let global = |max| -> Result<PoolLowering, KernelError> {
        if input_dims.len() < 3 {
            return Err(KernelError::Unsupported {
                kernel: op.name().to_string(),
                reason: format!("needs N, C and spatial dims, input is {input_dims:?}"),
            });
        }
        let mut output_dims = input_dims[..2].to_vec();
        output_dims.resize(input_dims.len(), 1);
        Ok(PoolLowering {
            kernel: std::sync::Arc::new(GlobalPoolKernel::new(arch, max)),
            sizes: vec![planes, input_dims[2..].iter().product()],
            output_dims,
        })
    };
    match op {
        Op::MaxPool(attrs) => window(PoolKind::Max, attrs),
        Op::AveragePool {
            pool,
            count_include_pad,
        } => window(
            PoolKind::Average {
                count_include_pad: *count_include_pad,
            },
            pool,
        ),
        Op::GlobalAveragePool => global(false),
        Op::GlobalMaxPool => global(true),
        other => Err(KernelError::Unsupported {
            kernel: other.name().to_string(),
            reason: "not a pooling op".to_string(),
        }),
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
