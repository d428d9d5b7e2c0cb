//! The int8 NCHW convolution kernel: implicit GEMM over u8 im2col panels and s8 weight
//! panels, per-channel requantization to u8 or i8.
//!
//! Per image and group, `Y[C_out/g, HW] = requant(W[C_out/g, K] · col[K, HW] + bias')`. The
//! reduction is ordered tap-major, channels innermost, each tap's channels padded to a
//! multiple of four: `kk = (kh·kW + kw)·Cg4 + c`, `Cg4 = ⌈(C_in/g) / 4⌉·4`. Integer sums are
//! exact, so the order is free; this one makes the four `k` of a dot-product lane four
//! consecutive channels at the same tap, which the packer reads from four planes at one
//! offset. Weights of the padding channels are zero ([`pack_qconv_weights`]).
//!
//! The panel packer writes `NR` pixels × 4 bytes per group of four `k` (the micro-kernel's
//! column layout). When the panel's pixels lie in one output row, the stride is 1, the tap's
//! window is inside the input and a 16-byte load from each of the four planes stays inside
//! the input tensor, the four rows are loaded as vectors and transposed with byte and word
//! unpacks (`punpck*`); otherwise each byte is loaded through a per-pixel offset, padding
//! taps reading the input zero point from the stack (so they contribute `(zx − zx)·w = 0`).
//!
//! With `sdot` the packer stores every byte flipped (`x − 128`, what the micro-kernel
//! multiplies): the transposed vectors as they are stored, a gathered group once it is
//! complete. Padding taps are flipped with the rest, so they still contribute
//! `(zx − zx)·w`: the lowerings compensate `zx − 128`. Flipping while packing costs one
//! `eor` per 16 bytes per panel, not per row block of the product.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::FunctionBuilder;

use super::dynamic_epilogue::{FloatOperands, FloatStage};
use super::microkernel::{
    flip_with, shuffle_mask, BlockEpilogue, QMicroKernel, QPanelOperands, K_GROUP,
};
use super::residual::EXTRA_RECORD_BYTES;
use super::rowsum::emit_panel_sums;
use crate::lower::conv::{panel_pixels, walk_panels};
use crate::lower::kernel::{counted_loop, flags, Kernel, KernelContext, KernelError, KernelSpec};
use crate::lower::node::ConvGeometry;

/// A whole int8 convolution: `void k(const uint8_t *x, const int8_t *w_packed,
/// const record *requant, [const extra_record *extras,] [const uint8_t *r,] uint8_t *y,
/// uint8_t *scratch)`, the geometry, input zero point and output stage baked in. `extras`
/// (`super::residual`) is there when the kernel has weight zero points or a residual, `r`
/// (the residual, the output's shape) with a residual. `scratch` holds one packed panel and,
/// with weight zero points, its `NR` pixel sums ([`QConvKernel::scratch_bytes`]).
///
/// With the float epilogue (dynamic quantization, `super::dynamic_epilogue`) the input's
/// quantization is read at run time and the output and residual are f32:
/// `void k(const uint8_t *x, const float *x_scale, const uint8_t *x_zero_point,
/// const int8_t *w_packed, const float_records *records, [const float *r,] float *y,
/// uint8_t *scratch)`; padding taps read the byte at `x_zero_point`. With weight zero points
/// its pixel sums are centred at run time, `Σ (x − zx)` over the packed reduction.
#[derive(Clone, Debug)]
pub struct QConvKernel {
    pub(crate) spec: KernelSpec,
    geometry: ConvGeometry,
    micro: QMicroKernel,
    /// `None`: read at run time (the float epilogue).
    input_zero_point: Option<u8>,
    /// Bytes of each float record array (the float epilogue).
    float_array_bytes: i64,
}

/// Per-image, per-group pointers.
#[derive(Clone, Copy)]
struct GroupPointers {
    x: Value,
    /// One past the input tensor's last byte: the vector path never reads beyond it.
    x_end: Value,
    w: Value,
    records: Value,
    y: Value,
    scratch: Value,
    /// The address of a byte holding the input zero point, read for padding taps.
    pad: Value,
    /// This group's epilogue records, residual (at the group's first output element)
    /// and the panel's pixel sums, when the kernel has them.
    extras: Option<Value>,
    residual: Option<Value>,
    sums: Option<Value>,
    /// `K4·zx` (i32) with the run-time `zx`, subtracted from the pixel sums of the float
    /// epilogue (`super::rowsum`).
    sums_centre: Option<Value>,
    /// The run-time input quantization of the float epilogue.
    float: Option<FloatOperands>,
}

/// `C_in/g` rounded up to whole dot-product groups.
pub fn padded_channels(geometry: &ConvGeometry) -> usize {
    (geometry.in_channels / geometry.group.max(1)).next_multiple_of(K_GROUP)
}

/// The reduction length as packed: taps × padded channels (a multiple of 4).
pub fn packed_reduction(geometry: &ConvGeometry) -> usize {
    geometry.kernel_h * geometry.kernel_w * padded_channels(geometry)
}

impl QConvKernel {
    /// `geometry` must already be the walk geometry (`ConvGeometry::walked`). A static
    /// (requantizing) kernel bakes `input_zero_point`.
    pub(crate) fn new(
        spec: KernelSpec,
        geometry: ConvGeometry,
        micro: QMicroKernel,
        input_zero_point: u8,
    ) -> QConvKernel {
        QConvKernel {
            spec,
            geometry,
            micro,
            input_zero_point: Some(input_zero_point),
            float_array_bytes: 0,
        }
    }

    /// A kernel with the float epilogue: the input zero point is read at run time,
    /// `float_array_bytes` is the length of each record array (`float_records`).
    pub(crate) fn new_float(
        spec: KernelSpec,
        geometry: ConvGeometry,
        micro: QMicroKernel,
        float_array_bytes: usize,
    ) -> QConvKernel {
        QConvKernel {
            spec,
            geometry,
            micro,
            input_zero_point: None,
            float_array_bytes: float_array_bytes as i64,
        }
    }

    /// Bytes of the packed panel, `K4 × NR`, then the panel's `NR` i32 pixel sums when the
    /// kernel has weight zero points.
    pub fn scratch_bytes(&self) -> usize {
        let sums = if self.micro.extras.weight_zero_points {
            4 * self.micro.nr() as usize
        } else {
            0
        };
        self.sums_offset() + sums
    }

    /// Where the pixel sums start in scratch (16-byte aligned; the panel is a multiple of 16).
    fn sums_offset(&self) -> usize {
        packed_reduction(&self.geometry) * self.micro.nr() as usize
    }

    /// Parameters of the kernel: `x, w_packed, requant, [extras], [r], y, scratch`, or
    /// `x, x_scale, x_zero_point, w_packed, records, [r], y, scratch` (float epilogue).
    pub(crate) fn param_count(&self) -> usize {
        if let Some(stage) = self.float_stage() {
            return 7 + stage.residual as usize;
        }
        5 + self.micro.extras.any() as usize + self.micro.extras.residual.is_some() as usize
    }

    fn float_stage(&self) -> Option<FloatStage> {
        match self.micro.output {
            BlockEpilogue::Float(stage) => Some(stage),
            BlockEpilogue::Requantize(_) => None,
        }
    }

    pub fn micro_kernel(&self) -> &QMicroKernel {
        &self.micro
    }

    fn out_plane(&self) -> usize {
        self.geometry.out_h * self.geometry.out_w
    }

    /// Packs the panel of output pixels `(oh[j], ow[j])`, `j < valid` (the rest hold the
    /// zero point), into `scratch`: group `q = tap·Cg4/4 + c/4` at `q·4·NR`, pixel `j` at
    /// `+4j`, channel `c mod 4` at `+c mod 4`.
    fn pack_panel(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        group: &GroupPointers,
        pixels: &[(Value, Value)],
        valid: usize,
    ) {
        let g = &self.geometry;
        let pointer = context.pointer;
        let nr = self.micro.nr() as usize;
        let cin_g = g.in_channels / g.group;
        let full_groups = cin_g / K_GROUP;
        let partial = cin_g % K_GROUP;
        let groups_per_tap = padded_channels(g) / K_GROUP;
        let plane = (g.in_h * g.in_w) as i64;
        let group_bytes = (K_GROUP * nr) as i64;
        let origins: Vec<(Value, Value)> = pixels[..valid]
            .iter()
            .map(|&(oh, ow)| {
                let ih = b.ins().imul_imm_s(oh, g.stride_h as i64);
                let ih = b.ins().iadd_imm_s(ih, -(g.pad_top as i64));
                let iw = b.ins().imul_imm_s(ow, g.stride_w as i64);
                let iw = b.ins().iadd_imm_s(iw, -(g.pad_left as i64));
                (ih, iw)
            })
            .collect();
        let same_row = (g.stride_w == 1 && valid == nr && full_groups > 0)
            .then(|| b.ins().icmp(IntCC::Equal, pixels[0].0, pixels[nr - 1].0));
        let zero = b.ins().iconst(pointer, 0);
        let kernel_h = b.ins().iconst(pointer, g.kernel_h as i64);
        let kernel_w = b.ins().iconst(pointer, g.kernel_w as i64);
        counted_loop(b, pointer, zero, kernel_h, 1, |b, kh| {
            counted_loop(b, pointer, zero, kernel_w, 1, |b, kw| {
                let dy = b.ins().imul_imm_s(kh, g.dilation_h as i64);
                let dx = b.ins().imul_imm_s(kw, g.dilation_w as i64);
                let tap = b.ins().imul_imm_s(kh, g.kernel_w as i64);
                let tap = b.ins().iadd(tap, kw);
                let tap_bytes = b.ins().imul_imm_s(tap, groups_per_tap as i64 * group_bytes);
                let dst_tap = b.ins().iadd(group.scratch, tap_bytes);
                // Per pixel: is the tap inside the input, and its byte offset in a plane.
                let taps_at: Vec<(Value, Value)> = origins
                    .iter()
                    .map(|&(ih0, iw0)| {
                        let ih = b.ins().iadd(ih0, dy);
                        let iw = b.ins().iadd(iw0, dx);
                        let row_ok = b
                            .ins()
                            .icmp_imm_s(IntCC::UnsignedLessThan, ih, g.in_h as i64);
                        let col_ok = b
                            .ins()
                            .icmp_imm_s(IntCC::UnsignedLessThan, iw, g.in_w as i64);
                        let ok = b.ins().band(row_ok, col_ok);
                        let index = b.ins().imul_imm_s(ih, g.in_w as i64);
                        (ok, b.ins().iadd(index, iw))
                    })
                    .collect();
                if full_groups > 0 {
                    let slow = b.create_block();
                    let done = b.create_block();
                    if let Some(same_row) = same_row {
                        let fast = b.create_block();
                        let ends = b.ins().band(taps_at[0].0, taps_at[nr - 1].0);
                        let contiguous = b.ins().band(same_row, ends);
                        // The last vector load: channel 4·full_groups − 1, bytes up to +16.
                        let last_load =
                            (4 * full_groups as i64 - 1) * plane + (nr as i64 - 1) / 16 * 16 + 16;
                        let last = b.ins().iadd(group.x, taps_at[0].1);
                        let last = b.ins().iadd_imm_s(last, last_load);
                        let inside =
                            b.ins()
                                .icmp(IntCC::UnsignedLessThanOrEqual, last, group.x_end);
                        let fast_ok = b.ins().band(contiguous, inside);
                        b.ins().brif(fast_ok, fast, &[], slow, &[]);
                        b.switch_to_block(fast);
                        let src0 = b.ins().iadd(group.x, taps_at[0].1);
                        let count = b.ins().iconst(pointer, full_groups as i64);
                        counted_loop(b, pointer, zero, count, 1, |b, cq| {
                            let src_offset = b.ins().imul_imm_s(cq, 4 * plane);
                            let src = b.ins().iadd(src0, src_offset);
                            let dst_offset = b.ins().imul_imm_s(cq, group_bytes);
                            let dst = b.ins().iadd(dst_tap, dst_offset);
                            self.transpose_rows(b, src, plane, dst);
                        });
                        b.ins().jump(done, &[]);
                    } else {
                        b.ins().jump(slow, &[]);
                    }
                    b.switch_to_block(slow);
                    let count = b.ins().iconst(pointer, full_groups as i64);
                    counted_loop(b, pointer, zero, count, 1, |b, cq| {
                        let src_offset = b.ins().imul_imm_s(cq, 4 * plane);
                        let src = b.ins().iadd(group.x, src_offset);
                        let dst_offset = b.ins().imul_imm_s(cq, group_bytes);
                        let dst = b.ins().iadd(dst_tap, dst_offset);
                        self.gather_group(b, group, &taps_at, src, plane, dst, K_GROUP);
                    });
                    b.ins().jump(done, &[]);
                    b.switch_to_block(done);
                }
                if partial > 0 {
                    let src = b.ins().iadd_imm_s(group.x, 4 * full_groups as i64 * plane);
                    let dst = b
                        .ins()
                        .iadd_imm_s(dst_tap, full_groups as i64 * group_bytes);
                    self.gather_group(b, group, &taps_at, src, plane, dst, partial);
                }
            });
        });
    }

    /// One group of four channels, byte by byte: channel `ci < channels` of pixel `j` from
    /// its plane (or the zero point when the tap is padding), the rest the zero point.
    #[allow(clippy::too_many_arguments)]
    fn gather_group(
        &self,
        b: &mut FunctionBuilder,
        group: &GroupPointers,
        taps_at: &[(Value, Value)],
        src: Value,
        plane: i64,
        dst: Value,
        channels: usize,
    ) {
        let nr = self.micro.nr() as usize;
        let group_bytes = K_GROUP * nr;
        let pad_value = match self.input_zero_point {
            Some(zero_point) => b.ins().iconst(types::I8, i64::from(zero_point as i8)),
            None => b.ins().load(types::I8, flags(), group.pad, 0),
        };
        for ci in 0..K_GROUP {
            let channel = (ci < channels).then(|| b.ins().iadd_imm_s(src, ci as i64 * plane));
            for j in 0..nr {
                let value = match (channel, taps_at.get(j)) {
                    (Some(channel), Some(&(ok, offset))) => {
                        let inside = b.ins().iadd(channel, offset);
                        let address = b.ins().select(ok, inside, group.pad);
                        b.ins().load(types::I8, flags(), address, 0)
                    }
                    _ => pad_value,
                };
                b.ins().store(flags(), value, dst, (4 * j + ci) as i32);
            }
        }
        // The whole group at once (`NR` is a multiple of 4: whole vectors).
        if let Some(mask) = self.micro.dot.flip_mask(b, types::I8X16) {
            for at in (0..group_bytes).step_by(16) {
                let bytes = b.ins().load(types::I8X16, flags(), dst, at as i32);
                let bytes = flip_with(b, bytes, Some(mask));
                b.ins().store(flags(), bytes, dst, at as i32);
            }
        }
    }

    /// Four planes' `NR` contiguous bytes at `src + c·plane` → `NR` pixels × 4 channels at
    /// `dst`: byte unpacks pair channels (0, 1) and (2, 3), word unpacks join the pairs.
    fn transpose_rows(&self, b: &mut FunctionBuilder, src: Value, plane: i64, dst: Value) {
        let nr = self.micro.nr() as usize;
        let bytes_low = interleave_mask(b, 1, false);
        let bytes_high = interleave_mask(b, 1, true);
        let words_low = interleave_mask(b, 2, false);
        let words_high = interleave_mask(b, 2, true);
        let flip = self.micro.dot.flip_mask(b, types::I8X16);
        for start in (0..nr).step_by(16) {
            let rows: Vec<Value> = (0..K_GROUP as i64)
                .map(|c| {
                    // In range: the lowering refuses planes whose offsets overflow i32.
                    let offset = (c * plane + start as i64) as i32;
                    b.ins().load(types::I8X16, flags(), src, offset)
                })
                .collect();
            let outputs = ((nr - start) / 4).min(4);
            let mut pixel_vectors = Vec::with_capacity(4);
            for (half, mask) in [(0, bytes_low), (1, bytes_high)] {
                if outputs <= 2 * half {
                    break;
                }
                let pairs01 = b.ins().shuffle(rows[0], rows[1], mask);
                let pairs23 = b.ins().shuffle(rows[2], rows[3], mask);
                pixel_vectors.push(b.ins().shuffle(pairs01, pairs23, words_low));
                if outputs > 2 * half + 1 {
                    pixel_vectors.push(b.ins().shuffle(pairs01, pairs23, words_high));
                }
            }
            for (o, &vector) in pixel_vectors.iter().enumerate() {
                let vector = flip_with(b, vector, flip);
                b.ins()
                    .store(flags(), vector, dst, (4 * start + 16 * o) as i32);
            }
        }
    }

    /// One panel: the pixel coordinates from the running `(oh, ow)`, the packing, the
    /// product. Returns the coordinates of the pixel after the panel.
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        group: &GroupPointers,
        first_pixel: Value,
        start: (Value, Value),
        valid: usize,
    ) -> (Value, Value) {
        let g = &self.geometry;
        let nr = self.micro.nr() as usize;
        let pointer = context.pointer;
        let zero = b.ins().iconst(pointer, 0);
        let pixels = panel_pixels(b, pointer, start, nr, g.out_w);
        let next = pixels[nr];
        self.pack_panel(b, context, group, &pixels[..nr], valid);
        if let Some(sums) = group.sums {
            let groups = packed_reduction(g) / K_GROUP;
            let centre = group.sums_centre;
            emit_panel_sums(&self.micro, b, pointer, group.scratch, groups, centre, sums);
        }
        let cout_g = g.out_channels / g.group;
        let element = self.micro.output.element_bytes() as i64;
        let first_element = b.ins().imul_imm_s(first_pixel, element);
        let operands = QPanelOperands {
            a: group.w,
            lda: zero,
            b: group.scratch,
            groups: packed_reduction(g) / K_GROUP,
            m: b.ins().iconst(pointer, cout_g as i64),
            c: b.ins().iadd(group.y, first_element),
            ldc: b.ins().iconst(pointer, self.out_plane() as i64 * element),
            records: group.records,
            columns: (valid < nr).then(|| b.ins().iconst(pointer, valid as i64)),
            extras: group.extras,
            sums: group.sums,
            residual: group.residual.map(|r| b.ins().iadd(r, first_element)),
            float: group.float,
        };
        self.micro.emit_rows(b, context, &operands);
        next
    }
}

/// The byte mask of `punpckl*` / `punpckh*` on `unit`-byte elements (1: bytes, 2: words).
fn interleave_mask(
    b: &mut FunctionBuilder,
    unit: usize,
    high: bool,
) -> cranelift_codegen::ir::Immediate {
    let mut indices = [0u8; 16];
    let first = if high { 8 } else { 0 };
    for (i, index) in indices.iter_mut().enumerate() {
        let element = i / unit;
        let byte = i % unit;
        let source = element % 2;
        let position = first + (element / 2) * unit + byte;
        *index = (source * 16 + position) as u8;
    }
    shuffle_mask(b, indices)
}

impl Kernel for QConvKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        if params.len() != self.param_count() {
            return Err(crate::lower::kernel::arity_error(&self.spec, params));
        }
        let (y, scratch) = (params[params.len() - 2], params[params.len() - 1]);
        let (x, w, records, extras, residual, float) = match self.float_stage() {
            Some(stage) => {
                let float = FloatOperands {
                    scale: params[1],
                    zero_point: params[2],
                    array_bytes: self.float_array_bytes,
                };
                let residual = stage.residual.then(|| params[5]);
                (params[0], params[3], params[4], None, residual, Some(float))
            }
            None => {
                let extras = self.micro.extras.any().then(|| params[3]);
                let residual = self
                    .micro
                    .extras
                    .residual
                    .map(|_| params[3 + extras.is_some() as usize]);
                (params[0], params[1], params[2], extras, residual, None)
            }
        };
        let sums = self
            .micro
            .extras
            .weight_zero_points
            .then(|| b.ins().iadd_imm_s(scratch, self.sums_offset() as i64));
        let g = &self.geometry;
        let pointer = context.pointer;
        let nr = self.micro.nr() as usize;
        let (cin_g, cout_g) = (g.in_channels / g.group, g.out_channels / g.group);
        let in_plane = (g.in_h * g.in_w) as i64;
        let out_plane = self.out_plane();
        // Padding taps read the zero point through `pad`: the run-time input's byte itself,
        // or a stack byte holding the baked one.
        let pad = match (self.input_zero_point, float) {
            (Some(zero_point), _) => {
                let slot = b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    1,
                    0,
                ));
                let pad = b.ins().stack_addr(pointer, slot, 0);
                let pad_value = b.ins().iconst(types::I8, i64::from(zero_point as i8));
                b.ins().store(flags(), pad_value, pad, 0);
                pad
            }
            (None, Some(float)) => float.zero_point,
            (None, None) => {
                return Err(KernelError::Unsupported {
                    kernel: self.spec.name.clone(),
                    reason: "no input zero point, baked or at run time".into(),
                })
            }
        };
        let x_end = b
            .ins()
            .iadd_imm_s(x, (g.batch * g.in_channels) as i64 * in_plane);
        let k4 = packed_reduction(g) as i64;
        // The float epilogue's `zx` is known only now: its sums are centred here, `K4·zx`
        // (the packed panel's padding taps and channels hold `zx` too, so `K` is `K4`).
        let sums_centre = match (sums, float) {
            (Some(_), Some(float)) => {
                let zero_point = b.ins().uload8(types::I32, flags(), float.zero_point, 0);
                Some(b.ins().imul_imm_s(zero_point, k4))
            }
            _ => None,
        };

        let zero = b.ins().iconst(pointer, 0);
        let batch = b.ins().iconst(pointer, g.batch as i64);
        let groups = b.ins().iconst(pointer, g.group as i64);
        counted_loop(b, pointer, zero, batch, 1, |b, image| {
            counted_loop(b, pointer, zero, groups, 1, |b, group| {
                let x_channel = b.ins().imul_imm_s(image, g.in_channels as i64);
                let x_group = b.ins().imul_imm_s(group, cin_g as i64);
                let x_channel = b.ins().iadd(x_channel, x_group);
                let x_offset = b.ins().imul_imm_s(x_channel, in_plane);
                let y_channel = b.ins().imul_imm_s(image, g.out_channels as i64);
                let y_group = b.ins().imul_imm_s(group, cout_g as i64);
                let y_channel = b.ins().iadd(y_channel, y_group);
                let element = self.micro.output.element_bytes() as i64;
                let y_offset = b.ins().imul_imm_s(y_channel, out_plane as i64 * element);
                let w_offset = b.ins().imul_imm_s(group, cout_g as i64 * k4);
                let record_stride = self.micro.output.record_stride();
                let record_offset = b.ins().imul_imm_s(group, (cout_g * record_stride) as i64);
                let extras = extras.map(|extras| {
                    let offset = b
                        .ins()
                        .imul_imm_s(group, (cout_g * EXTRA_RECORD_BYTES) as i64);
                    b.ins().iadd(extras, offset)
                });
                let pointers = GroupPointers {
                    x: b.ins().iadd(x, x_offset),
                    x_end,
                    w: b.ins().iadd(w, w_offset),
                    records: b.ins().iadd(records, record_offset),
                    y: b.ins().iadd(y, y_offset),
                    scratch,
                    pad,
                    extras,
                    residual: residual.map(|r| b.ins().iadd(r, y_offset)),
                    sums,
                    sums_centre,
                    float,
                };
                walk_panels(b, pointer, out_plane, nr, |b, p0, start, width| {
                    self.panel(b, context, &pointers, p0, start, width)
                });
            });
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Packs ONNX s8 weights `[C_out, C_in/g, kH, kW]` for the micro-kernel's weight rows: per
/// group, `[C_out/g, K4]` in the tap-major order of the module docs (padding channels 0),
/// then full blocks of `mr` rows interleaved per group of four `k` (block `i`, group `q`, row
/// `r` at `i·K4 + q·4·mr + 4r`), rows left over row-major. Row `i` always starts at `i·K4`.
pub fn pack_qconv_weights(
    geometry: &ConvGeometry,
    weight: &[i8],
    mr: usize,
) -> Result<Vec<u8>, String> {
    let g = geometry;
    let cin_g = g.in_channels / g.group.max(1);
    let taps = g.kernel_h * g.kernel_w;
    if weight.len() != g.out_channels * cin_g * taps || mr == 0 {
        return Err(format!(
            "weight has {} values, expected C_out·C_in/g·kH·kW = {}·{}·{}",
            weight.len(),
            g.out_channels,
            cin_g,
            taps
        ));
    }
    let cg4 = padded_channels(g);
    let k4 = taps * cg4;
    // Rows in the packed k order.
    let mut rows = vec![0u8; g.out_channels * k4];
    for (c, row) in rows.chunks_exact_mut(k4.max(1)).enumerate() {
        for ci in 0..cin_g {
            for tap in 0..taps {
                row[tap * cg4 + ci] = weight[(c * cin_g + ci) * taps + tap] as u8;
            }
        }
    }
    let cout_g = g.out_channels / g.group.max(1);
    let groups = k4 / K_GROUP;
    let mut packed = rows.clone();
    for group_rows in 0..g.group {
        let base = group_rows * cout_g * k4;
        for block in (0..cout_g / mr).map(|i| i * mr) {
            for q in 0..groups {
                for r in 0..mr {
                    let from = base + (block + r) * k4 + q * K_GROUP;
                    let to = base + block * k4 + q * K_GROUP * mr + r * K_GROUP;
                    packed[to..to + K_GROUP].copy_from_slice(&rows[from..from + K_GROUP]);
                }
            }
        }
    }
    Ok(packed)
}
