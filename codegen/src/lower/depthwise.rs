//! fp32 NCHW depthwise convolution (one channel per group) with fused epilogues.
//!
//! One kernel, `void k(const float *x, const float *w_packed, [const float *residual,]
//! float *y, float *scratch, size_t batch, size_t channels)`, computes
//! `y = act(conv(x, w) + bias + residual)` for every (image, channel) plane. The spatial
//! geometry (input and output extents, kernel, strides, dilations, pads) is baked into the
//! code and spelled out in the symbol name; batch and channel count are run-time arguments,
//! so layers with the same spatial geometry share one kernel. `y` may be the residual's buffer
//! (each output vector's residual is read before that vector is stored) but must not overlap
//! `x`; the scratch is [`DepthwiseKernel::scratch_bytes`] (one padded plane, reused).
//!
//! Each plane is first copied into a zero-padded scratch plane, its columns split by the
//! horizontal stride `s` into `s` phases (phase `p` holds padded columns `p, p+s, p+2s, ..`).
//! Tap `(ky, kx)` of outputs `ox..ox+4` then reads four *consecutive* floats of phase
//! `(kx·dw) mod s` at `ox + (kx·dw) div s`, in padded row `oy·sh + ky·dh`: every tap of every
//! output is one unaligned f32x4 load at a compile-time offset from one row pointer, with no
//! bounds checks and no border code, for any stride, dilation or padding. The padding cells
//! of the scratch are the same for every plane, so the scratch is zeroed once per call and
//! only the interior is rewritten per plane. Phases are `out_w` rounded up to 4 (plus the
//! widest tap shift) long, so the last, partial vector of a row may be computed in full; only
//! its valid lanes are stored. The copy is f32x4 for stride 1, f32x4 loads split by `shufps`
//! into even and odd phases for stride 2, scalar for larger strides.
//!
//! The main loop computes [`block_vectors`] f32x4 accumulators (adjacent outputs of one row)
//! at a time, in a loop over kernel rows (kernel columns unrolled): per tap, one weight vector
//! (pre-splatted at compile time into the packed blob) and one fused multiply-add per
//! accumulator on an unaligned input load. Independent accumulators hide the FMA latency.
//!
//! Precision: taps are summed from +0 in the interpreter's order (row-major over the kernel),
//! then the bias, then the residual, then the activation, as `FusedConv` does. Without FMA
//! every step rounds like the interpreter and the result is bit-identical;
//! with FMA each tap skips one rounding, so the difference is bounded by
//! `taps · 2⁻²⁴ · Σ|w·x|` plus the activation's own error ([`super::vmath`]).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, Value,
};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::Activation;

use super::elementwise::{activation_name, apply_activation};
use super::kernel::{
    counted_loop, f32_constant, flags, Accumulator, Kernel, KernelContext, KernelError,
    KernelParam, KernelSpec, Tile,
};
use super::node::{Arg, ConvGeometry, Epilogue, KernelCall, NodeLowering};
use super::vmath::FloatOps;
use crate::target::Arch;

/// f32 lanes per vector: Cranelift lowers 128-bit vectors only.
const LANES: usize = 4;
/// Most f32x4 accumulators of the main loop (adjacent outputs of one row); see
/// [`block_vectors`].
pub const MAX_BLOCK_VECTORS: usize = 8;
/// Vector registers the main loop may keep live (x86-64 allocates xmm0-15; one spare).
const VECTOR_REGISTERS: usize = 15;

/// Accumulators per block for kernel width `kernel_w`: one kernel row keeps its `kernel_w`
/// weight vectors and up to `kernel_w` loaded inputs live next to the accumulators, and all
/// must fit the vector registers. At least one.
pub fn block_vectors(kernel_w: usize) -> usize {
    VECTOR_REGISTERS
        .saturating_sub(2 * kernel_w)
        .clamp(1, MAX_BLOCK_VECTORS)
}
/// Groups of input columns copied per iteration of the copy loop.
const COPY_UNROLL: usize = 4;
/// Kernels with more taps than this are refused (the taps are unrolled in the code).
const MAX_TAPS: usize = 1024;
/// Scratch planes larger than this are refused (offsets are 32-bit immediates).
const MAX_SCRATCH_BYTES: usize = 1 << 30;
const F32_BYTES: usize = 4;
const VECTOR_BYTES: usize = LANES * F32_BYTES;

/// Loads of memory that does not change while the loads' block runs: the packed weights,
/// and the scratch plane while its outputs are computed (it is rewritten per plane, but
/// every compute load's address depends on the output-row loop, which starts after the
/// copy, so no load can be moved across a write). Marking them movable lets Cranelift's
/// optimiser place each load at its use and fold it into the `vfmadd` memory operand;
/// otherwise loads keep source order ahead of the sunk arithmetic and the block spills.
fn invariant_flags() -> MemFlagsData {
    MemFlagsData::new()
        .with_notrap()
        .with_readonly()
        .with_can_move()
}

/// The padded, phase-split scratch plane (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScratchLayout {
    /// Floats per phase of one row.
    phase_len: usize,
    /// Phases per row (the horizontal stride).
    phases: usize,
    /// Padded rows.
    rows: usize,
    /// Begin padding of the columns.
    pad_left: usize,
}

impl ScratchLayout {
    fn new(g: &ConvGeometry) -> ScratchLayout {
        let s = g.stride_w;
        let padded_w = g.pad_left + g.in_w + g.pad_right;
        let widest_shift = (g.kernel_w - 1) * g.dilation_w / s;
        let computed = g.out_w.next_multiple_of(LANES) + widest_shift;
        ScratchLayout {
            phase_len: padded_w.div_ceil(s).max(computed).next_multiple_of(LANES),
            phases: s,
            rows: g.pad_top + g.in_h + g.pad_bottom,
            pad_left: g.pad_left,
        }
    }

    fn row_bytes(&self) -> usize {
        self.phase_len * self.phases * F32_BYTES
    }

    /// A multiple of 16 (phases are whole vectors).
    fn bytes(&self) -> usize {
        self.rows * self.row_bytes()
    }

    /// Byte offset within a scratch row of input column `g·s + j` minus that of column `g·s`
    /// advanced by `g` floats, i.e. where element `j` of a group of `s` input columns goes.
    fn column_slot_bytes(&self, j: usize) -> usize {
        let q = self.pad_left + j;
        ((q % self.phases) * self.phase_len + q / self.phases) * F32_BYTES
    }
}

/// Depthwise convolution of fixed spatial geometry (see the module docs).
#[derive(Clone, Debug)]
pub struct DepthwiseKernel {
    geometry: ConvGeometry,
    layout: ScratchLayout,
    bias: bool,
    residual: bool,
    spec: KernelSpec,
}

impl DepthwiseKernel {
    /// The kernel for `geometry` (batch and channel count are ignored: run-time arguments).
    pub fn new(
        arch: Arch,
        geometry: &ConvGeometry,
        bias: bool,
        residual: bool,
        activation: Option<Activation>,
    ) -> Result<DepthwiseKernel, KernelError> {
        let g = geometry;
        let mut op = format!(
            "dwconv_i{}x{}_o{}x{}_k{}x{}_s{}x{}_d{}x{}_p{},{},{},{}",
            g.in_h,
            g.in_w,
            g.out_h,
            g.out_w,
            g.kernel_h,
            g.kernel_w,
            g.stride_h,
            g.stride_w,
            g.dilation_h,
            g.dilation_w,
            g.pad_top,
            g.pad_left,
            g.pad_bottom,
            g.pad_right
        );
        if bias {
            op.push_str("_bias");
        }
        if residual {
            op.push_str("_res");
        }
        if let Some(activation) = activation {
            op.push('_');
            op.push_str(&activation_name(activation));
        }
        let name = KernelSpec::symbol(arch, Accumulator::F32, LANES as u32, &op);
        let unsupported = |reason: String| KernelError::Unsupported {
            kernel: name.clone(),
            reason,
        };
        let extents = [g.kernel_h, g.kernel_w, g.stride_h, g.stride_w];
        if extents.contains(&0) || g.dilation_h == 0 || g.dilation_w == 0 {
            return Err(unsupported(format!(
                "kernel, strides and dilations must be positive: {}",
                g.short_name()
            )));
        }
        let taps = g.kernel_h * g.kernel_w;
        if taps > MAX_TAPS {
            return Err(unsupported(format!(
                "{taps} taps exceed the limit of {MAX_TAPS}"
            )));
        }
        // The window of the last output must end inside the padded input.
        let span = |k: usize, d: usize| (k - 1) * d + 1;
        let rows_read = (g.out_h.max(1) - 1) * g.stride_h + span(g.kernel_h, g.dilation_h);
        let columns_read = (g.out_w.max(1) - 1) * g.stride_w + span(g.kernel_w, g.dilation_w);
        if rows_read > g.pad_top + g.in_h + g.pad_bottom
            || columns_read > g.pad_left + g.in_w + g.pad_right
        {
            return Err(unsupported(format!(
                "output {}x{} does not fit input {}x{} with {}",
                g.out_h,
                g.out_w,
                g.in_h,
                g.in_w,
                g.short_name()
            )));
        }
        let layout = ScratchLayout::new(g);
        if layout.bytes() > MAX_SCRATCH_BYTES {
            return Err(unsupported(format!(
                "scratch plane of {} bytes exceeds {MAX_SCRATCH_BYTES}",
                layout.bytes()
            )));
        }
        let mut params = vec![KernelParam::input("x"), KernelParam::input("w_packed")];
        if residual {
            params.push(KernelParam::input("residual"));
        }
        params.extend([
            KernelParam::output("y"),
            KernelParam::output("scratch"),
            KernelParam::size("batch"),
            KernelParam::size("channels"),
        ]);
        let spec = KernelSpec {
            name,
            arch,
            op,
            accumulator: Accumulator::F32,
            lanes: LANES as u32,
            tile: Tile {
                rows: 1,
                cols: (block_vectors(g.kernel_w) * LANES) as u32,
            },
            epilogue: activation,
            params,
        };
        Ok(DepthwiseKernel {
            geometry: *geometry,
            layout,
            bias,
            residual,
            spec,
        })
    }

    /// Bytes of scratch the kernel needs (one padded plane).
    pub fn scratch_bytes(&self) -> usize {
        self.layout.bytes()
    }

    fn taps(&self) -> usize {
        self.geometry.kernel_h * self.geometry.kernel_w
    }

    /// Floats of packed constants per channel: the splatted taps, then the splatted bias.
    fn packed_floats_per_channel(taps: usize, bias: bool) -> usize {
        (taps + usize::from(bias)) * LANES
    }

    /// Byte offset, from a scratch row pointer at output column 0 of row `oy`, of tap
    /// `(ky, kx)`.
    fn tap_offset(&self, ky: usize, kx: usize) -> usize {
        let g = &self.geometry;
        let shift = kx * g.dilation_w;
        let (phase, index) = (shift % g.stride_w, shift / g.stride_w);
        ky * g.dilation_h * self.layout.row_bytes()
            + (phase * self.layout.phase_len + index) * F32_BYTES
    }

    /// Copies one input plane into the interior of the scratch plane, phase-split.
    fn emit_copy_plane(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        x_plane: Value,
        scratch: Value,
    ) -> Result<(), KernelError> {
        let g = self.geometry;
        let layout = self.layout;
        let pointer = context.pointer;
        let zero = b.ins().iconst(pointer, 0);
        let rows = b.ins().iconst(pointer, g.in_h as i64);
        let first_row = imm(&self.spec, g.pad_top * layout.row_bytes())?;
        let slots: Vec<i32> = (0..g.stride_w)
            .map(|j| imm(&self.spec, layout.column_slot_bytes(j)))
            .collect::<Result<_, _>>()?;
        // Input columns grouped by the stride: group `k` starts at column `k·s` and lands at
        // float `k` of every phase.
        let s = g.stride_w;
        let (group_columns, groups_per_step) = match s {
            1 => (LANES, LANES),
            2 => (2 * LANES, LANES),
            _ => (s, 1),
        };
        let steps = g.in_w / group_columns;
        let tail_start = steps * group_columns;
        let tail: Vec<(i32, i32)> = (tail_start..g.in_w)
            .map(|i| {
                let q = g.pad_left + i;
                let slot = ((q % s) * layout.phase_len + q / s) * F32_BYTES;
                Ok((imm(&self.spec, i * F32_BYTES)?, imm(&self.spec, slot)?))
            })
            .collect::<Result<_, KernelError>>()?;
        let in_row_bytes = (g.in_w * F32_BYTES) as i64;
        let row_bytes = layout.row_bytes() as i64;
        // Groups per loop iteration: the row copy is short per element, so loop overhead
        // would otherwise cost as much as the copy itself.
        let unrolled_steps = steps / COPY_UNROLL * COPY_UNROLL;
        let unrolled_end = b.ins().iconst(pointer, unrolled_steps as i64);
        let evens = shuffle_mask(b, [0, 2, 4, 6]);
        let odds = shuffle_mask(b, [1, 3, 5, 7]);
        let src_group = (group_columns * F32_BYTES) as i32;
        let dst_group = (groups_per_step * F32_BYTES) as i32;
        // Copies group `k` of the row at `src` into the row at `dst` (`k` a constant).
        let copy_group = |b: &mut FunctionBuilder, src: Value, dst: Value, k: usize| {
            let (from, to) = (k as i32 * src_group, first_row + k as i32 * dst_group);
            match s {
                1 => {
                    let v = b.ins().load(types::F32X4, flags(), src, from);
                    b.ins().store(flags(), v, dst, to + slots[0]);
                }
                2 => {
                    let low = b.ins().load(types::F32X4, flags(), src, from);
                    let high = b
                        .ins()
                        .load(types::F32X4, flags(), src, from + VECTOR_BYTES as i32);
                    let even = shuffle_f32x4(b, low, high, evens);
                    let odd = shuffle_f32x4(b, low, high, odds);
                    b.ins().store(flags(), even, dst, to + slots[0]);
                    b.ins().store(flags(), odd, dst, to + slots[1]);
                }
                _ => {
                    for (j, &slot) in slots.iter().enumerate() {
                        let at = from + (j * F32_BYTES) as i32;
                        let v = b.ins().load(types::F32, flags(), src, at);
                        b.ins().store(flags(), v, dst, to + slot);
                    }
                }
            }
        };
        counted_loop(b, pointer, zero, rows, 1, |b, r| {
            let src_offset = b.ins().imul_imm_s(r, in_row_bytes);
            let src = b.ins().iadd(x_plane, src_offset);
            let dst_offset = b.ins().imul_imm_s(r, row_bytes);
            let dst = b.ins().iadd(scratch, dst_offset);
            let step = COPY_UNROLL as i64;
            counted_loop(b, pointer, zero, unrolled_end, step, |b, k| {
                let src_step = b.ins().imul_imm_s(k, i64::from(src_group));
                let src = b.ins().iadd(src, src_step);
                let dst_step = b.ins().imul_imm_s(k, i64::from(dst_group));
                let dst = b.ins().iadd(dst, dst_step);
                for u in 0..COPY_UNROLL {
                    copy_group(b, src, dst, u);
                }
            });
            for k in unrolled_steps..steps {
                copy_group(b, src, dst, k);
            }
            for &(from, to) in &tail {
                let v = b.ins().load(types::F32, flags(), src, from);
                b.ins().store(flags(), v, dst, first_row + to);
            }
        });
        Ok(())
    }

    /// One block of `vectors` f32x4 outputs of one row (the last holding `last_lanes` valid
    /// lanes): `input` is the scratch row of the block's first output, `output` and
    /// `residual` point at its first output element.
    #[allow(clippy::too_many_arguments)]
    fn emit_block(
        &self,
        b: &mut FunctionBuilder,
        ops: &FloatOps,
        weights: Value,
        input: Value,
        output: Value,
        residual: Option<Value>,
        vectors: usize,
        last_lanes: usize,
    ) -> Result<(), KernelError> {
        let g = self.geometry;
        let vector_offset = |j: usize| (j * VECTOR_BYTES) as i32;
        let pointer = b.func.dfg.value_type(input);
        // Loop over kernel rows, accumulators carried as block parameters. A loop, not
        // unrolled rows: in straight-line code Cranelift's optimiser sinks each whole FMA
        // chain down to its store, ahead of which all of the chain's input loads stay
        // (loads keep their order), and the block spills. A loop-carried value must be
        // computed within its iteration, so only one kernel row's loads are live at a time.
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_param(header, pointer);
        for _ in 0..vectors {
            b.append_block_param(header, types::F32X4);
            b.append_block_param(exit, types::F32X4);
        }
        // Start from +0 as the interpreter does (`0 + w·x` for the first tap).
        let zero_vector = f32_constant(b, types::F32X4, 0.0);
        let first_row = b.ins().iconst(pointer, 0);
        let mut initial: Vec<BlockArg> = vec![first_row.into()];
        initial.extend((0..vectors).map(|_| BlockArg::from(zero_vector)));
        b.ins().jump(header, &initial);

        b.switch_to_block(header);
        let ky = b.block_params(header)[0];
        let carried: Vec<Value> = b.block_params(header)[1..].to_vec();
        let rows = b.ins().iconst(pointer, g.kernel_h as i64);
        let more = b.ins().icmp(IntCC::UnsignedLessThan, ky, rows);
        let carried_args: Vec<BlockArg> = carried.iter().map(|&a| a.into()).collect();
        b.ins().brif(more, body, &[], exit, &carried_args);

        b.switch_to_block(body);
        let row_step = (g.dilation_h * self.layout.row_bytes()) as i64;
        let in_offset = b.ins().imul_imm_s(ky, row_step);
        let in_row = b.ins().iadd(input, in_offset);
        let w_offset = b.ins().imul_imm_s(ky, (g.kernel_w * VECTOR_BYTES) as i64);
        let w_row = b.ins().iadd(weights, w_offset);
        // Weight loads with side effects: once per kernel row, not hoisted into registers
        // for the whole plane (which would not fit for 5×5).
        let w: Vec<Value> = (0..g.kernel_w)
            .map(|kx| {
                let at = imm(&self.spec, kx * VECTOR_BYTES)?;
                Ok(b.ins().load(types::F32X4, flags(), w_row, at))
            })
            .collect::<Result<_, KernelError>>()?;
        let mut accumulators = carried;
        for (kx, &w) in w.iter().enumerate() {
            let offset = imm(&self.spec, self.tap_offset(0, kx))?;
            for (j, acc) in accumulators.iter_mut().enumerate() {
                let x = b.ins().load(
                    types::F32X4,
                    invariant_flags(),
                    in_row,
                    offset + vector_offset(j),
                );
                // `x · w` (the interpreter's `w · x`: products commute). The loaded input
                // first: x86 overwrites the first factor, which is dead after this FMA, so
                // the weight needs no copy.
                *acc = ops.mul_add(b, x, w, *acc);
            }
        }
        let next_row = b.ins().iadd_imm_s(ky, 1);
        let mut next: Vec<BlockArg> = vec![next_row.into()];
        next.extend(accumulators.iter().map(|&a| BlockArg::from(a)));
        b.ins().jump(header, &next);

        b.switch_to_block(exit);
        let mut accumulators = b.block_params(exit).to_vec();
        if self.bias {
            let at = imm(&self.spec, self.taps() * VECTOR_BYTES)?;
            let bias = b.ins().load(types::F32X4, invariant_flags(), weights, at);
            for acc in accumulators.iter_mut() {
                *acc = b.ins().fadd(*acc, bias);
            }
        }
        for (j, acc) in accumulators.iter_mut().enumerate() {
            let lanes = if j + 1 == vectors { last_lanes } else { LANES };
            if let Some(residual) = residual {
                let r = load_lanes(b, residual, vector_offset(j), lanes);
                *acc = b.ins().fadd(*acc, r);
            }
            if let Some(activation) = self.spec.epilogue {
                *acc = apply_activation(ops, b, activation, *acc);
            }
            store_lanes(b, *acc, output, vector_offset(j), lanes);
        }
        Ok(())
    }

    /// All output rows of one plane.
    #[allow(clippy::too_many_arguments)]
    fn emit_plane(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        weights: Value,
        scratch: Value,
        y_plane: Value,
        residual_plane: Option<Value>,
    ) -> Result<(), KernelError> {
        let g = self.geometry;
        let pointer = context.pointer;
        let ops = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let block = block_vectors(g.kernel_w);
        let block_columns = block * LANES;
        let blocks = g.out_w / block_columns;
        let remainder = g.out_w % block_columns;
        let zero = b.ins().iconst(pointer, 0);
        let out_h = b.ins().iconst(pointer, g.out_h as i64);
        let blocks_value = b.ins().iconst(pointer, blocks as i64);
        let in_row_step = (g.stride_h * self.layout.row_bytes()) as i64;
        let out_row_bytes = (g.out_w * F32_BYTES) as i64;
        let block_bytes = (block_columns * F32_BYTES) as i64;
        let mut result = Ok(());
        counted_loop(b, pointer, zero, out_h, 1, |b, oy| {
            let in_offset = b.ins().imul_imm_s(oy, in_row_step);
            let in_row = b.ins().iadd(scratch, in_offset);
            let out_offset = b.ins().imul_imm_s(oy, out_row_bytes);
            let out_row = b.ins().iadd(y_plane, out_offset);
            let res_row = residual_plane.map(|r| b.ins().iadd(r, out_offset));
            counted_loop(b, pointer, zero, blocks_value, 1, |b, k| {
                let offset = b.ins().imul_imm_s(k, block_bytes);
                let input = b.ins().iadd(in_row, offset);
                let output = b.ins().iadd(out_row, offset);
                let residual = res_row.map(|r| b.ins().iadd(r, offset));
                let block =
                    self.emit_block(b, &ops, weights, input, output, residual, block, LANES);
                result = result.clone().and(block);
            });
            if remainder > 0 {
                let offset = blocks as i64 * block_bytes;
                let input = b.ins().iadd_imm_s(in_row, offset);
                let output = b.ins().iadd_imm_s(out_row, offset);
                let residual = res_row.map(|r| b.ins().iadd_imm_s(r, offset));
                let vectors = remainder.div_ceil(LANES);
                let last_lanes = remainder - (vectors - 1) * LANES;
                let block = self.emit_block(
                    b, &ops, weights, input, output, residual, vectors, last_lanes,
                );
                result = result.clone().and(block);
            }
        });
        result
    }
}

/// `value` as a 32-bit immediate offset (kernel geometry is bounded, see `MAX_SCRATCH_BYTES`).
fn imm(spec: &KernelSpec, value: usize) -> Result<i32, KernelError> {
    i32::try_from(value).map_err(|_| KernelError::Unsupported {
        kernel: spec.name.clone(),
        reason: format!("offset {value} does not fit a 32-bit immediate"),
    })
}

/// The byte mask of a two-operand f32x4 shuffle picking `lanes` (0-3 from the first operand,
/// 4-7 from the second). Masks taking two lanes from each operand lower to one `shufps`.
fn shuffle_mask(b: &mut FunctionBuilder, lanes: [u8; 4]) -> cranelift_codegen::ir::Immediate {
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&lane| (0..4).map(move |byte| lane * 4 + byte))
        .collect();
    b.func.dfg.immediates.push(ConstantData::from(bytes))
}

fn shuffle_f32x4(
    b: &mut FunctionBuilder,
    x: Value,
    y: Value,
    mask: cranelift_codegen::ir::Immediate,
) -> Value {
    // Changing the lane count needs an explicit byte order; both casts use the same one.
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let x = b.ins().bitcast(types::I8X16, little, x);
    let y = b.ins().bitcast(types::I8X16, little, y);
    let shuffled = b.ins().shuffle(x, y, mask);
    b.ins().bitcast(types::F32X4, little, shuffled)
}

/// Loads `lanes` floats from `base + offset` into a vector (remaining lanes 0) without
/// touching memory past them.
fn load_lanes(b: &mut FunctionBuilder, base: Value, offset: i32, lanes: usize) -> Value {
    if lanes == LANES {
        return b.ins().load(types::F32X4, flags(), base, offset);
    }
    let mut vector = f32_constant(b, types::F32X4, 0.0);
    for lane in 0..lanes {
        let at = offset + (lane * F32_BYTES) as i32;
        let value = b.ins().load(types::F32, flags(), base, at);
        vector = b.ins().insertlane(vector, value, lane as u8);
    }
    vector
}

/// Stores the first `lanes` lanes of `vector` at `base + offset`.
fn store_lanes(b: &mut FunctionBuilder, vector: Value, base: Value, offset: i32, lanes: usize) {
    if lanes == LANES {
        b.ins().store(flags(), vector, base, offset);
        return;
    }
    for lane in 0..lanes {
        let value = b.ins().extractlane(vector, lane as u8);
        let at = offset + (lane * F32_BYTES) as i32;
        b.ins().store(flags(), value, base, at);
    }
}

fn plane_address(b: &mut FunctionBuilder, base: Value, plane: Value, plane_bytes: usize) -> Value {
    let offset = b.ins().imul_imm_s(plane, plane_bytes as i64);
    b.ins().iadd(base, offset)
}

impl Kernel for DepthwiseKernel {
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
            return Err(KernelError::Unsupported {
                kernel: self.spec.name.clone(),
                reason: format!(
                    "expected {} parameters, got {}",
                    self.spec.params.len(),
                    params.len()
                ),
            });
        }
        let (x, w) = (params[0], params[1]);
        let residual = self.residual.then(|| params[2]);
        let rest = &params[2 + usize::from(self.residual)..];
        let (y, scratch, batch, channels) = (rest[0], rest[1], rest[2], rest[3]);
        let pointer = context.pointer;
        let g = self.geometry;

        // Zero the scratch once: its padding cells are never written afterwards.
        let zero = b.ins().iconst(pointer, 0);
        let vectors = b
            .ins()
            .iconst(pointer, (self.layout.bytes() / VECTOR_BYTES) as i64);
        let zeros = f32_constant(b, types::F32X4, 0.0);
        counted_loop(b, pointer, zero, vectors, 1, |b, i| {
            let offset = b.ins().imul_imm_s(i, VECTOR_BYTES as i64);
            let at = b.ins().iadd(scratch, offset);
            b.ins().store(flags(), zeros, at, 0);
        });

        let in_plane_bytes = g.in_h * g.in_w * F32_BYTES;
        let out_plane_bytes = g.out_h * g.out_w * F32_BYTES;
        let channel_bytes =
            DepthwiseKernel::packed_floats_per_channel(self.taps(), self.bias) * F32_BYTES;
        let mut result = Ok(());
        counted_loop(b, pointer, zero, batch, 1, |b, n| {
            let first_plane = b.ins().imul(n, channels);
            counted_loop(b, pointer, zero, channels, 1, |b, c| {
                let plane = b.ins().iadd(first_plane, c);
                let x_plane = plane_address(b, x, plane, in_plane_bytes);
                let y_plane = plane_address(b, y, plane, out_plane_bytes);
                let r_plane = residual.map(|r| plane_address(b, r, plane, out_plane_bytes));
                let weights = plane_address(b, w, c, channel_bytes);
                let step = self
                    .emit_copy_plane(b, context, x_plane, scratch)
                    .and_then(|()| self.emit_plane(b, context, weights, scratch, y_plane, r_plane));
                result = result.clone().and(step);
            });
        });
        result?;
        b.ins().return_(&[]);
        Ok(())
    }
}

/// The packed constants: per channel, each tap splatted to four lanes, then the bias splatted
/// (when there is one).
fn pack_weights(taps: usize, weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let channels = weight.len() / taps.max(1);
    let per_channel = DepthwiseKernel::packed_floats_per_channel(taps, bias.is_some());
    let mut packed = Vec::with_capacity(channels * per_channel);
    for c in 0..channels {
        for &w in &weight[c * taps..(c + 1) * taps] {
            packed.extend([w; LANES]);
        }
        if let Some(bias) = bias {
            packed.extend([bias[c]; LANES]);
        }
    }
    packed
}

/// Lowers a depthwise convolution (`geometry.is_depthwise()`): input 0 is X, output 0 is Y;
/// `weight` is `[C, 1, kH, kW]`, `bias` has `C` entries.
pub fn lower_depthwise(
    arch: Arch,
    geometry: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Result<NodeLowering, KernelError> {
    let g = geometry;
    let unsupported = |reason: String| KernelError::Unsupported {
        kernel: format!("depthwise Conv {}", g.short_name()),
        reason,
    };
    if !g.is_depthwise() {
        return Err(unsupported(format!(
            "not depthwise: {} input channels, {} output channels, group {}",
            g.in_channels, g.out_channels, g.group
        )));
    }
    let channels = g.in_channels;
    let taps = g.kernel_h * g.kernel_w;
    if weight.len() != channels * taps {
        return Err(unsupported(format!(
            "weight has {} elements, expected {channels}·{}·{} = {}",
            weight.len(),
            g.kernel_h,
            g.kernel_w,
            channels * taps
        )));
    }
    if let Some(bias) = bias {
        if bias.len() != channels {
            return Err(unsupported(format!(
                "bias has {} elements, expected {channels}",
                bias.len()
            )));
        }
    }
    if epilogue.residual_input == Some(0) {
        return Err(unsupported(
            "the residual cannot be input 0 (the convolution's X)".to_string(),
        ));
    }
    let kernel = DepthwiseKernel::new(
        arch,
        g,
        bias.is_some(),
        epilogue.residual_input.is_some(),
        epilogue.activation,
    )?;
    let scratch_bytes = kernel.scratch_bytes();
    let mut args = vec![Arg::input(0), Arg::packed(0)];
    if let Some(index) = epilogue.residual_input {
        args.push(Arg::input(index));
    }
    args.extend([
        Arg::output(0),
        Arg::Scratch { offset: 0 },
        Arg::Size(g.batch),
        Arg::Size(channels),
    ]);
    let description = format!(
        "depthwise {}x{}/s{}x{} f32x4 ({} accumulators, padded scratch)",
        g.kernel_h,
        g.kernel_w,
        g.stride_h,
        g.stride_w,
        block_vectors(g.kernel_w)
    );
    let call = KernelCall::new(std::sync::Arc::new(kernel), args)?;
    Ok(NodeLowering {
        calls: vec![call],
        packed: vec![pack_weights(taps, weight, bias)],
        scratch_bytes,
        description,
        ..NodeLowering::default()
    })
}

#[cfg(test)]
#[path = "depthwise_tests.rs"]
mod tests;
