//! The loops of the int8 depthwise kernels (`super::depthwise`, requantized output, and
//! `super::dynamic_depthwise`, float output), as [`DepthwisePlan`]. Per (image, channel) plane:
//!
//! - The plane is copied into a scratch plane padded with the input zero point `zx`, so
//!   padding taps contribute `zx·w`, which the compensated bias (`bias − zx·Σw`, see
//!   `super`) removes exactly as it removes `zx·w` from the real taps: every tap adds
//!   `(x − zx)·w`. The padding cells are the same for every plane: the whole scratch is
//!   filled with `zx` once per call and only the interior is rewritten per plane. With
//!   `sdot` every scratch byte, padding included, is stored flipped (`x − 128`, s8) and the
//!   bias compensates `zx − 128`: the same `(x − zx)·w` per tap.
//! - Outputs are computed four pixels of one row per i32x4 vector, as four-tap dot products
//!   (`vpdpbusd` where the target has VNNI): the taps of one kernel row are split into
//!   chunks of at most four ([`TapChunk`]), and one dot product with a chunk's four weights
//!   (zero-filled) splatted adds all its taps to four pixels. A 3×3 kernel is three dot
//!   products per four outputs. Lane `i` of the input operand must hold one pixel's bytes
//!   `x[p·s + j·d]`, `j <` chunk length ([`Gather`]):
//!   - [`Gather::Direct`] (dilation 1, stride 1, 2 or 4): a plain 16-byte load at byte `o`
//!     holds `x[o + 4i .. o + 4i + 4]` in lane `i`, the taps of pixel `(o + 4i) / s`. The
//!     vectors of a block load at `o = 0, s, 2s, ..` (up to 16 bytes, then the next 16), so
//!     they hold the block's pixels interleaved; one byte shuffle per 16 output bytes puts
//!     them in order after the requantization.
//!   - [`Gather::Shuffled`] (any other stride up to 5 or dilation): a 16-byte load at the
//!     vector's first pixel and a byte shuffle (`pshufb`) per vector and chunk. The chunk's
//!     bytes must lie in one load, `3·s + (len − 1)·d ≤ 15`.
//! - A block of vectors (adjacent outputs of one row) has its taps unrolled in
//!   straight-line code; the row's last, partial block stores only its valid bytes. Lanes
//!   past the row's end read the next row or the scratch's slack and are discarded.
//!
//! Integer sums are exact and wrap like the interpreter's i32 accumulator, so the order of
//! the taps is free and the result is bit-identical.

use cranelift_codegen::ir::{types, Immediate, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use super::microkernel::{flip_with, little, shuffle_mask, DotProduct, QMicroKernel};
use super::unsupported;
use crate::lower::kernel::{counted_loop, flags, KernelContext, KernelError};
use crate::lower::node::ConvGeometry;

/// Output pixels per i32x4 vector.
pub(super) const PIXELS: usize = 4;
/// Bytes of one vector load: a chunk's bytes must lie within one.
pub(super) const VECTOR_BYTES: usize = 16;
/// Scratch planes larger than this are refused (offsets are 32-bit immediates).
pub(super) const MAX_SCRATCH_BYTES: usize = 1 << 30;
/// Kernels with more tap chunks than this are refused (the taps are unrolled in the code).
pub(super) const MAX_CHUNKS: usize = 1024;
/// Most vectors per block (the accumulators must fit the 16 vector registers).
pub const MAX_BLOCK_VECTORS: usize = 16;
/// Bytes of one channel's weights per chunk (four s8, zero-filled).
pub(super) const CHUNK_BYTES: usize = 4;

/// Vectors per block (32 outputs), either dot product: enough accumulators to amortize the
/// requantization constants loaded per block, few enough to leave registers for the weights
/// and inputs (measured: 4 is ~10 % slower, 12 no better on the MobileNetV2 layers).
pub fn block_vectors(_dot: DotProduct) -> usize {
    8
}

/// How lane `i` of an input vector gets the bytes of one pixel (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gather {
    /// Plain loads, pixels interleaved across a block's vectors.
    Direct,
    /// A load and a byte shuffle per vector and chunk.
    Shuffled,
}

impl Gather {
    /// `Direct` where it applies (dilation 1, stride 1, 2 or 4).
    pub fn for_geometry(g: &ConvGeometry) -> Gather {
        if g.dilation_w == 1 && matches!(g.stride_w, 1 | 2 | 4) {
            Gather::Direct
        } else {
            Gather::Shuffled
        }
    }

    fn name(self) -> &'static str {
        match self {
            Gather::Direct => "ld",
            Gather::Shuffled => "sh",
        }
    }
}

/// The vectors of one output row: full blocks of `vectors`, then a remainder block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowPlan {
    gather: Gather,
    stride: usize,
    vectors: usize,
    blocks: usize,
    /// Valid pixels and computed vectors of the last, partial block (0: none), and its
    /// gather: `Shuffled` unless its pixels are whole groups of the plain loads, which would
    /// otherwise compute up to 15 pixels in vain.
    remainder_pixels: usize,
    remainder_vectors: usize,
    remainder_gather: Gather,
}

impl RowPlan {
    /// `vectors` is rounded up to whole groups ([`Self::group_vectors`]).
    fn new(gather: Gather, stride: usize, out_w: usize, vectors: usize) -> RowPlan {
        let group = group_vectors(gather, stride);
        let vectors = vectors.next_multiple_of(group);
        let block_pixels = vectors * PIXELS;
        let remainder_pixels = out_w % block_pixels;
        let remainder_gather = if remainder_pixels.is_multiple_of(group * PIXELS) {
            gather
        } else {
            Gather::Shuffled
        };
        RowPlan {
            gather,
            stride,
            vectors,
            blocks: out_w / block_pixels,
            remainder_pixels,
            remainder_vectors: remainder_pixels.div_ceil(PIXELS),
            remainder_gather,
        }
    }

    fn block_pixels(&self) -> usize {
        self.vectors * PIXELS
    }

    fn uses(&self, gather: Gather) -> bool {
        (self.blocks > 0 && self.gather == gather)
            || (self.remainder_pixels > 0 && self.remainder_gather == gather)
    }

    /// Byte offset of vector `k`'s load from its block's first input byte (before the
    /// chunk's and the kernel row's offsets).
    fn vector_offset(&self, gather: Gather, k: usize) -> usize {
        match gather {
            Gather::Direct => {
                let group = group_vectors(gather, self.stride);
                k / group * VECTOR_BYTES + k % group * self.stride
            }
            Gather::Shuffled => k * PIXELS * self.stride,
        }
    }

    /// The pixel (from the block's first) in lane `i` of vector `k`.
    fn pixel(&self, gather: Gather, k: usize, i: usize) -> usize {
        match gather {
            Gather::Direct => {
                let group = group_vectors(gather, self.stride);
                k / group * group * PIXELS + group * i + k % group
            }
            Gather::Shuffled => k * PIXELS + i,
        }
    }

    /// The offset of the last load of a row from the row's first input byte.
    fn last_load(&self) -> usize {
        let (block, gather, vectors) = if self.remainder_vectors > 0 {
            (self.blocks, self.remainder_gather, self.remainder_vectors)
        } else {
            (self.blocks.saturating_sub(1), self.gather, self.vectors)
        };
        block * self.block_pixels() * self.stride + self.vector_offset(gather, vectors.max(1) - 1)
    }
}

/// Vectors that load one 16-byte run of input together: `4 / s` for `Direct`.
pub(super) fn group_vectors(gather: Gather, stride: usize) -> usize {
    match gather {
        Gather::Direct => VECTOR_BYTES / PIXELS / stride,
        Gather::Shuffled => 1,
    }
}

/// Consecutive taps `first..first + len` of one kernel row, summed by one dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapChunk {
    pub first: usize,
    pub len: usize,
}

/// The chunks of a kernel row of `kernel_w` taps, dilation `d`, stride `s`: as long as the
/// bytes of four pixels fit one 16-byte load (`3·s + (len − 1)·d ≤ 15`), at most four.
/// `None` when not even one tap fits (stride above 5).
pub fn tap_chunks(kernel_w: usize, stride: usize, dilation: usize) -> Option<Vec<TapChunk>> {
    let span = |len: usize| (PIXELS - 1) * stride + (len - 1) * dilation;
    let longest = (1..=CHUNK_BYTES)
        .rev()
        .find(|&len| span(len) < VECTOR_BYTES)?;
    Some(
        (0..kernel_w)
            .step_by(longest)
            .map(|first| TapChunk {
                first,
                len: longest.min(kernel_w - first),
            })
            .collect(),
    )
}

/// The padded scratch plane: `rows × pitch` bytes, then slack for the loads of the last
/// row's vectors past its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ScratchPlane {
    pitch: usize,
    bytes: usize,
}

impl ScratchPlane {
    fn new(g: &ConvGeometry, chunks: &[TapChunk], row: &RowPlan) -> ScratchPlane {
        let pitch = g.pad_left + g.in_w + g.pad_right;
        let rows = g.pad_top + g.in_h + g.pad_bottom;
        let last_chunk = chunks.last().map_or(0, |c| c.first) * g.dilation_w;
        let last_row = ((g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h) * pitch;
        let read_end = last_row + row.last_load() + last_chunk + VECTOR_BYTES;
        ScratchPlane {
            pitch,
            bytes: (rows * pitch).max(read_end).next_multiple_of(VECTOR_BYTES),
        }
    }
}

/// What the static and the dynamic depthwise kernels share (`super::dynamic_depthwise`):
/// the padded scratch plane, the row plan, the tap chunks and their dot products, the loops
/// over planes, rows and blocks. They differ in their epilogue only.
#[derive(Clone, Debug)]
pub(super) struct DepthwisePlan {
    pub(super) geometry: ConvGeometry,
    chunks: Vec<TapChunk>,
    plane: ScratchPlane,
    /// The dot-product generator shared with the GEMM kernels (its tile is unused).
    pub(super) dot: QMicroKernel,
    row: RowPlan,
}

/// One block of a row: how it is gathered, how many vectors it computes, how many of its
/// pixels are stored.
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockShape {
    pub(super) gather: Gather,
    pub(super) vectors: usize,
    pub(super) valid: usize,
}

/// The byte shuffles of the `Shuffled` gather, per chunk length.
pub(super) struct ChunkMasks {
    by_len: [Option<Immediate>; CHUNK_BYTES + 1],
}

impl DepthwisePlan {
    /// Checks everything the loops need of `g` (depthwise, positive extents, a window that
    /// fits the padded input, strides whose four pixels fit one load, a scratch plane that
    /// 32-bit offsets address) and plans them: blocks of `vectors` (rounded up to whole load
    /// groups) gathered as `gather`.
    pub(super) fn new(
        kernel_name: &str,
        g: &ConvGeometry,
        dot: QMicroKernel,
        gather: Gather,
        vectors: usize,
    ) -> Result<DepthwisePlan, KernelError> {
        let g = *g;
        let fail = |reason: String| unsupported(kernel_name, reason);
        if !(g.group == g.in_channels && g.group == g.out_channels && g.group > 0) {
            return Err(fail(format!(
                "not depthwise: {} input channels, {} output channels, group {}",
                g.in_channels, g.out_channels, g.group
            )));
        }
        let extents = [g.kernel_h, g.kernel_w, g.stride_h, g.stride_w];
        if extents.contains(&0) || g.dilation_h == 0 || g.dilation_w == 0 {
            return Err(fail(format!(
                "kernel, strides and dilations must be positive: {}",
                g.short_name()
            )));
        }
        if g.batch == 0 || g.out_h == 0 || g.out_w == 0 {
            return Err(fail("empty output".into()));
        }
        if vectors == 0 || vectors > MAX_BLOCK_VECTORS {
            return Err(fail(format!(
                "{vectors} vectors per block is not in 1..={MAX_BLOCK_VECTORS}"
            )));
        }
        let span = |k: usize, d: usize| (k - 1) * d + 1;
        let rows_read = (g.out_h - 1) * g.stride_h + span(g.kernel_h, g.dilation_h);
        let columns_read = (g.out_w - 1) * g.stride_w + span(g.kernel_w, g.dilation_w);
        if rows_read > g.pad_top + g.in_h + g.pad_bottom
            || columns_read > g.pad_left + g.in_w + g.pad_right
        {
            return Err(fail(format!(
                "output {}x{} does not fit input {}x{} with {}",
                g.out_h,
                g.out_w,
                g.in_h,
                g.in_w,
                g.short_name()
            )));
        }
        let chunks = tap_chunks(g.kernel_w, g.stride_w, g.dilation_w).ok_or_else(|| {
            fail(format!(
                "horizontal stride {} puts four pixels beyond one 16-byte load",
                g.stride_w
            ))
        })?;
        let chunk_count = g.kernel_h * chunks.len();
        if chunk_count > MAX_CHUNKS {
            return Err(fail(format!(
                "{chunk_count} tap chunks exceed {MAX_CHUNKS}"
            )));
        }
        if gather == Gather::Direct && Gather::for_geometry(&g) != gather {
            let reason = "plain loads need dilation 1 and stride 1, 2 or 4";
            return Err(fail(format!("{reason}: {}", g.short_name())));
        }
        let row = RowPlan::new(gather, g.stride_w, g.out_w, vectors);
        let plane = ScratchPlane::new(&g, &chunks, &row);
        let in_plane = g.in_h * g.in_w;
        if plane.bytes > MAX_SCRATCH_BYTES || in_plane > MAX_SCRATCH_BYTES {
            return Err(fail(format!(
                "scratch plane of {} bytes exceeds {MAX_SCRATCH_BYTES}",
                plane.bytes
            )));
        }
        Ok(DepthwisePlan {
            geometry: g,
            chunks,
            plane,
            dot,
            row,
        })
    }

    /// Bytes of scratch the kernel needs (one padded plane).
    pub(super) fn scratch_bytes(&self) -> usize {
        self.plane.bytes
    }

    /// The block's gather and vectors of full blocks.
    pub(super) fn gather(&self) -> Gather {
        self.row.gather
    }

    pub(super) fn block_vectors(&self) -> usize {
        self.row.vectors
    }

    /// Outputs of a full block.
    pub(super) fn block_pixels(&self) -> usize {
        self.row.block_pixels()
    }

    /// The vectors that share one 16-byte load run: the pixels of `Direct` gathers are
    /// interleaved across each such group (lane `i` of vector `k` of a group holds pixel
    /// `group·i + k` of the group's `4·group`), `1` for `Shuffled`.
    pub(super) fn load_group(&self, gather: Gather) -> usize {
        group_vectors(gather, self.geometry.stride_w)
    }

    /// Bytes of one channel's packed weights.
    pub(super) fn channel_weight_bytes(&self) -> usize {
        self.geometry.kernel_h * self.chunks.len() * CHUNK_BYTES
    }

    /// Per channel, per kernel row, per chunk: `tap(c, ky, kx)` of the chunk's taps, then
    /// zeros (four s8).
    pub(super) fn pack_chunks(&self, tap: impl Fn(usize, usize, usize) -> i8) -> Vec<u8> {
        let g = &self.geometry;
        let mut packed = Vec::with_capacity(g.in_channels * self.channel_weight_bytes());
        for c in 0..g.in_channels {
            for ky in 0..g.kernel_h {
                for chunk in &self.chunks {
                    let mut bytes = [0u8; CHUNK_BYTES];
                    for (j, byte) in bytes.iter_mut().enumerate().take(chunk.len) {
                        *byte = tap(c, ky, chunk.first + j) as u8;
                    }
                    packed.extend(bytes);
                }
            }
        }
        packed
    }

    /// `4x3sh` style: the row plan's gather and vectors (kernel names).
    pub(super) fn name(&self) -> String {
        format!(
            "{}_{}{}",
            self.dot.dot.name(),
            self.row.gather.name(),
            self.row.vectors
        )
    }

    /// The shuffles of the `Shuffled` blocks the row plan has.
    pub(super) fn chunk_masks(&self, b: &mut FunctionBuilder) -> ChunkMasks {
        let g = &self.geometry;
        let mut by_len = [None; CHUNK_BYTES + 1];
        if self.row.uses(Gather::Shuffled) {
            for chunk in &self.chunks {
                if by_len[chunk.len].is_some() {
                    continue;
                }
                // Lane `p`, byte `j` reads byte `p·s + j·d` of the load (`j ≥ len`: any byte
                // of the pixel, its weight is 0). Below 16: `tap_chunks` keeps every chunk's
                // span inside one load.
                let mut indices = [0u8; 16];
                for (n, index) in indices.iter_mut().enumerate() {
                    let (p, j) = (n / CHUNK_BYTES, n % CHUNK_BYTES);
                    let tap = if j < chunk.len { j * g.dilation_w } else { 0 };
                    *index = (p * g.stride_w + tap) as u8;
                }
                by_len[chunk.len] = Some(shuffle_mask(b, indices));
            }
        }
        ChunkMasks { by_len }
    }

    /// The byte shuffle that puts the 16 output bytes of four narrowed `Direct` vectors in
    /// pixel order (`None`: no `Direct` block, or stride 4, already in order).
    pub(super) fn byte_reorder(&self, b: &mut FunctionBuilder) -> Option<Immediate> {
        // Output byte `pixel(k, i)` of 16 comes from byte `4k + i` of the narrowed vectors.
        (self.row.uses(Gather::Direct) && self.geometry.stride_w != PIXELS).then(|| {
            let mut indices = [0u8; 16];
            for k in 0..PIXELS {
                for i in 0..PIXELS {
                    indices[self.row.pixel(Gather::Direct, k, i)] = (PIXELS * k + i) as u8;
                }
            }
            shuffle_mask(b, indices)
        })
    }

    pub(super) fn imm(&self, value: usize) -> Result<i32, KernelError> {
        i32::try_from(value).map_err(|_| KernelError::Unsupported {
            kernel: "int8 depthwise Conv".into(),
            reason: format!("offset {value} does not fit a 32-bit immediate"),
        })
    }

    /// Fills the whole scratch (padding cells and slack) with `zx`, an i8x16 splat already
    /// in the dot product's domain: the padding holds it for the whole call.
    pub(super) fn fill_scratch(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        scratch: Value,
        zx: Value,
    ) {
        let pointer = context.pointer;
        let zero = b.ins().iconst(pointer, 0);
        let fill_end = b.ins().iconst(pointer, self.plane.bytes as i64);
        counted_loop(b, pointer, zero, fill_end, VECTOR_BYTES as i64, |b, i| {
            let at = b.ins().iadd(scratch, i);
            b.ins().store(flags(), zx, at, 0);
        });
    }

    /// Copies input plane `x_plane` into the interior of the scratch plane.
    fn emit_copy_plane(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        x_plane: Value,
        scratch: Value,
    ) -> Result<(), KernelError> {
        let g = &self.geometry;
        let pointer = context.pointer;
        let first = self.imm(g.pad_top * self.plane.pitch + g.pad_left)?;
        let zero = b.ins().iconst(pointer, 0);
        let rows = b.ins().iconst(pointer, g.in_h as i64);
        counted_loop(b, pointer, zero, rows, 1, |b, r| {
            let src_offset = b.ins().imul_imm_s(r, g.in_w as i64);
            let src = b.ins().iadd(x_plane, src_offset);
            let dst_offset = b.ins().imul_imm_s(r, self.plane.pitch as i64);
            let dst = b.ins().iadd(scratch, dst_offset);
            let dst = b.ins().iadd_imm_s(dst, i64::from(first));
            copy_bytes(b, pointer, self.dot.dot, (src, dst), g.in_w);
        });
        Ok(())
    }

    /// The i32x4 sums of one block of `shape.vectors` (lane `i` of vector `k`: pixel
    /// `pixel(k, i)` of the block): `input` is the scratch row of the block's first output,
    /// `weights` the channel's packed chunks. `offsets`: the channel's second chunks, a
    /// second dot product per chunk into the same accumulators (`super::dynamic_depthwise`
    /// adds its weight zero points' part there).
    pub(super) fn accumulate(
        &self,
        b: &mut FunctionBuilder,
        masks: &ChunkMasks,
        (weights, offsets): (Value, Option<Value>),
        input: Value,
        shape: BlockShape,
    ) -> Result<Vec<Value>, KernelError> {
        let g = &self.geometry;
        let zero = b.ins().iconst(types::I32, 0);
        let zero = b.ins().splat(types::I32X4, zero);
        let mut accumulators = vec![zero; shape.vectors];
        let splat_chunk = |b: &mut FunctionBuilder, base: Value, at: i32| {
            // Loaded as an f32 and splatted: x64 folds that into `vbroadcastss m32`.
            let w = b.ins().load(types::F32, flags(), base, at);
            let w = b.ins().splat(types::F32X4, w);
            let w = b.ins().bitcast(types::I8X16, little(), w);
            self.dot.prepare(b, w, true)
        };
        for ky in 0..g.kernel_h {
            for (i, chunk) in self.chunks.iter().enumerate() {
                let at = self.imm((ky * self.chunks.len() + i) * CHUNK_BYTES)?;
                let w = splat_chunk(b, weights, at);
                let second = offsets.map(|offsets| splat_chunk(b, offsets, at));
                let mask = match shape.gather {
                    Gather::Shuffled => masks.by_len[chunk.len],
                    Gather::Direct => None,
                };
                let row = ky * g.dilation_h * self.plane.pitch + chunk.first * g.dilation_w;
                for (v, acc) in accumulators.iter_mut().enumerate() {
                    let at = self.imm(row + self.row.vector_offset(shape.gather, v))?;
                    let x = b.ins().load(types::I8X16, flags(), input, at);
                    let x = match mask {
                        Some(mask) => b.ins().shuffle(x, x, mask),
                        None => x,
                    };
                    // Flipped for `sdot` by the copy into scratch.
                    let x = self.dot.prepare(b, x, false);
                    *acc = self.dot.dot(b, w, x, *acc);
                    if let Some(second) = second {
                        *acc = self.dot.dot(b, second, x, *acc);
                    }
                }
            }
        }
        Ok(accumulators)
    }

    /// Every plane: fills nothing, copies input plane `(n, c)` into scratch, then `plane(b,
    /// index, c)` with `index = n·C + c` computes its outputs (through [`Self::emit_rows`]).
    pub(super) fn emit_planes(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        (x, scratch): (Value, Value),
        mut plane: impl FnMut(&mut FunctionBuilder, Value, Value) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let g = &self.geometry;
        let pointer = context.pointer;
        let in_plane = (g.in_h * g.in_w) as i64;
        let channels = g.in_channels as i64;
        let zero = b.ins().iconst(pointer, 0);
        let batch = b.ins().iconst(pointer, g.batch as i64);
        let channel_count = b.ins().iconst(pointer, channels);
        let mut result = Ok(());
        counted_loop(b, pointer, zero, batch, 1, |b, n| {
            let first_plane = b.ins().imul_imm_s(n, channels);
            counted_loop(b, pointer, zero, channel_count, 1, |b, c| {
                let index = b.ins().iadd(first_plane, c);
                let x_offset = b.ins().imul_imm_s(index, in_plane);
                let x_plane = b.ins().iadd(x, x_offset);
                let step = self
                    .emit_copy_plane(b, context, x_plane, scratch)
                    .and_then(|()| plane(b, index, c));
                result = result.clone().and(step);
            });
        });
        result
    }

    /// All output rows of one plane: `block(b, input, pixel, shape)` per block, `input` the
    /// scratch address of its first output's window, `pixel` the index of that output in the
    /// output plane (`oy·out_w + ox`).
    pub(super) fn emit_rows(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        scratch: Value,
        mut block: impl FnMut(&mut FunctionBuilder, Value, Value, BlockShape) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let g = &self.geometry;
        let pointer = context.pointer;
        let row = &self.row;
        let block_pixels = row.block_pixels();
        let blocks = row.blocks;
        let zero = b.ins().iconst(pointer, 0);
        let out_h = b.ins().iconst(pointer, g.out_h as i64);
        let blocks_value = b.ins().iconst(pointer, blocks as i64);
        let in_row_step = (g.stride_h * self.plane.pitch) as i64;
        let in_block_step = (block_pixels * g.stride_w) as i64;
        let mut result = Ok(());
        counted_loop(b, pointer, zero, out_h, 1, |b, oy| {
            let in_offset = b.ins().imul_imm_s(oy, in_row_step);
            let in_row = b.ins().iadd(scratch, in_offset);
            let out_row = b.ins().imul_imm_s(oy, g.out_w as i64);
            counted_loop(b, pointer, zero, blocks_value, 1, |b, k| {
                let in_offset = b.ins().imul_imm_s(k, in_block_step);
                let input = b.ins().iadd(in_row, in_offset);
                let out_offset = b.ins().imul_imm_s(k, block_pixels as i64);
                let pixel = b.ins().iadd(out_row, out_offset);
                let shape = BlockShape {
                    gather: row.gather,
                    vectors: row.vectors,
                    valid: block_pixels,
                };
                result = result.clone().and(block(b, input, pixel, shape));
            });
            if row.remainder_pixels > 0 {
                let input = b.ins().iadd_imm_s(in_row, blocks as i64 * in_block_step);
                let pixel = b.ins().iadd_imm_s(out_row, (blocks * block_pixels) as i64);
                let shape = BlockShape {
                    gather: row.remainder_gather,
                    vectors: row.remainder_vectors,
                    valid: row.remainder_pixels,
                };
                result = result.clone().and(block(b, input, pixel, shape));
            }
        });
        result
    }
}

/// Copies `len` bytes (a compile-time count) from `src` to `dst` through `dot`'s
/// [`DotProduct::flip`]: 16-byte vectors, the last one overlapping the previous when `len`
/// is not a multiple of 16 (flipping a source byte again, never a copied one); shorter rows
/// in 8-, 4-, 2- and 1-byte pieces. Never touches a byte outside either range.
pub(super) fn copy_bytes(
    b: &mut FunctionBuilder,
    pointer: types::Type,
    dot: DotProduct,
    (src, dst): (Value, Value),
    len: usize,
) {
    // Rows up to this many vectors are unrolled; longer ones loop.
    const UNROLLED_VECTORS: usize = 8;
    if len < VECTOR_BYTES {
        let mut at = 0;
        for (size, ty) in [
            (8, types::I64),
            (4, types::I32),
            (2, types::I16),
            (1, types::I8),
        ] {
            if len - at >= size {
                let v = b.ins().load(ty, flags(), src, at as i32);
                let v = dot.flip(b, v);
                b.ins().store(flags(), v, dst, at as i32);
                at += size;
            }
        }
        return;
    }
    let mask = dot.flip_mask(b, types::I8X16);
    let copy_vector = |b: &mut FunctionBuilder, src: Value, dst: Value, at: i32| {
        let v = b.ins().load(types::I8X16, flags(), src, at);
        let v = flip_with(b, v, mask);
        b.ins().store(flags(), v, dst, at);
    };
    let vectors = len / VECTOR_BYTES;
    if vectors <= UNROLLED_VECTORS {
        for i in 0..vectors {
            copy_vector(b, src, dst, (i * VECTOR_BYTES) as i32);
        }
    } else {
        let zero = b.ins().iconst(pointer, 0);
        let end = b.ins().iconst(pointer, len as i64);
        counted_loop(b, pointer, zero, end, VECTOR_BYTES as i64, |b, i| {
            let from = b.ins().iadd(src, i);
            let to = b.ins().iadd(dst, i);
            copy_vector(b, from, to, 0);
        });
    }
    if !len.is_multiple_of(VECTOR_BYTES) {
        // Rows are far below 2 GiB: the lowering bounds the plane.
        copy_vector(b, src, dst, (len - VECTOR_BYTES) as i32);
    }
}
