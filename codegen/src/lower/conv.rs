//! fp32 NCHW convolution (any window, stride, dilation, padding, groups, batch) as an
//! implicit GEMM with fused bias, residual and activation epilogues.
//!
//! Per image and group, `Y[C_out/g, HW] = W[C_out/g, K] · col[K, HW]` with
//! `K = C_in/g · kH · kW`. The weights are `A`, packed at compile time into row panels
//! ([`pack_a`]); `col` (the im2col matrix) is never materialised whole: the kernel packs one
//! panel of `NR` output pixels (`K × NR` floats, the node's scratch) and immediately runs every
//! row block of the weights against it, so the panel stays in L1 while the weights stream.
//!
//! The panel packer walks the taps `(kh, kw)` and, for each, the input channels. When the
//! panel's pixels lie in one output row, the stride is 1 and the tap's window is inside the
//! input, a channel's `NR` values are contiguous in the input and are copied as vectors;
//! otherwise each value is loaded through a per-pixel offset, with padding (and pixels past
//! the end of the last panel) read from a zero on the stack. A 1×1, stride-1, unpadded
//! convolution is packed as if the image were one row of `H·W` pixels, so every panel but the
//! last is a vector copy.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::FunctionBuilder;

use super::gemm::{
    pack_a, ALayout, BiasKind, MicroKernel, PanelOperands, TileEpilogue, DEFAULT_K_UNROLL,
    DEFAULT_TILE, LANES,
};
use super::kernel::{
    counted_loop, f32_constant, flags, Accumulator, Kernel, KernelContext, KernelError,
    KernelParam, KernelSpec, Tile,
};
use super::node::{Arg, ConvGeometry, Epilogue, KernelCall, NodeLowering};
use crate::target::Arch;

/// A whole convolution node: `void k(const float *x, const float *w_packed,
/// [const float *bias,] [const float *residual,] float *y, float *scratch)`, everything about
/// the geometry baked in. `scratch` holds one packed panel ([`ConvKernel::scratch_bytes`]).
#[derive(Clone, Debug)]
pub struct ConvKernel {
    spec: KernelSpec,
    /// The geometry the code walks (a pointwise convolution flattened to one row).
    geometry: ConvGeometry,
    micro: MicroKernel,
}

/// Per-image, per-group pointers.
#[derive(Clone, Copy)]
struct GroupPointers {
    x: Value,
    w: Value,
    bias: Option<Value>,
    residual: Option<Value>,
    y: Value,
    scratch: Value,
    /// The address of an f32 zero, read for padding taps.
    zero: Value,
}

impl ConvKernel {
    /// The kernel for `geometry` with register block `tile` and `epilogue`'s bias kind
    /// (none or per row), residual and activation.
    pub fn new(
        arch: Arch,
        geometry: &ConvGeometry,
        tile: Tile,
        epilogue: TileEpilogue,
        k_unroll: u32,
    ) -> Result<ConvKernel, KernelError> {
        let geometry = geometry.walked();
        let g = &geometry;
        let micro = MicroKernel::new(tile, ALayout::Panels, epilogue, k_unroll);
        let op = format!(
            "conv_n{}_c{}x{}x{}_o{}x{}x{}_{}_{}",
            g.batch,
            g.in_channels,
            g.in_h,
            g.in_w,
            g.out_channels,
            g.out_h,
            g.out_w,
            g.short_name().replace(',', "_"),
            micro
                .as_ref()
                .map_or_else(|_| "invalid".to_string(), MicroKernel::name)
        );
        let name = KernelSpec::symbol(arch, Accumulator::F32, LANES, &op);
        let unsupported = |reason: String| KernelError::Unsupported {
            kernel: name.clone(),
            reason,
        };
        let micro = micro.map_err(unsupported)?;
        if epilogue.bias == BiasKind::PerColumn {
            return Err(unsupported(
                "a convolution's bias is per output channel".into(),
            ));
        }
        if g.group == 0
            || !g.in_channels.is_multiple_of(g.group)
            || !g.out_channels.is_multiple_of(g.group)
        {
            return Err(unsupported(format!(
                "group {} does not divide {} input and {} output channels",
                g.group, g.in_channels, g.out_channels
            )));
        }
        if g.stride_h == 0 || g.stride_w == 0 || g.dilation_h == 0 || g.dilation_w == 0 {
            return Err(unsupported("zero stride or dilation".into()));
        }
        let mut params = vec![KernelParam::input("x"), KernelParam::input("w_packed")];
        if epilogue.bias == BiasKind::PerRow {
            params.push(KernelParam::input("bias"));
        }
        if epilogue.residual {
            params.push(KernelParam::input("residual"));
        }
        params.extend([KernelParam::output("y"), KernelParam::output("scratch")]);
        Ok(ConvKernel {
            spec: KernelSpec {
                name,
                arch,
                op,
                accumulator: Accumulator::F32,
                lanes: LANES,
                tile,
                epilogue: epilogue.activation,
                params,
            },
            geometry,
            micro,
        })
    }

    /// Bytes of the packed panel: `K × NR` floats.
    pub fn scratch_bytes(&self) -> usize {
        self.geometry.reduction() * self.micro.nr() as usize * 4
    }

    pub fn micro_kernel(&self) -> &MicroKernel {
        &self.micro
    }

    fn out_plane(&self) -> usize {
        self.geometry.out_h * self.geometry.out_w
    }

    /// Packs the panel of output pixels `(oh[j], ow[j])`, `j < valid` (the rest are zeros),
    /// into `scratch` as `K × NR` floats, row `kk = (c·kH + kh)·kW + kw`.
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
        let taps = g.kernel_h * g.kernel_w;
        let cin_g = g.in_channels / g.group;
        let plane_bytes = (g.in_h * g.in_w * 4) as i64;
        let channel_row_bytes = (taps * nr * 4) as i64;
        // Window origins: ih0 = oh·sh − pad_top (wrapping: negative becomes huge unsigned).
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
        // Contiguous candidates: stride 1 and all NR pixels in one output row.
        let same_row = (g.stride_w == 1 && valid == nr)
            .then(|| b.ins().icmp(IntCC::Equal, pixels[0].0, pixels[nr - 1].0));
        let zero = b.ins().iconst(pointer, 0);
        let kernel_h = b.ins().iconst(pointer, g.kernel_h as i64);
        let kernel_w = b.ins().iconst(pointer, g.kernel_w as i64);
        let channels = b.ins().iconst(pointer, cin_g as i64);
        counted_loop(b, pointer, zero, kernel_h, 1, |b, kh| {
            counted_loop(b, pointer, zero, kernel_w, 1, |b, kw| {
                let dy = b.ins().imul_imm_s(kh, g.dilation_h as i64);
                let dx = b.ins().imul_imm_s(kw, g.dilation_w as i64);
                let tap = b.ins().imul_imm_s(kh, g.kernel_w as i64);
                let tap = b.ins().iadd(tap, kw);
                let tap_bytes = b.ins().imul_imm_s(tap, (nr * 4) as i64);
                let dst0 = b.ins().iadd(group.scratch, tap_bytes);
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
                        let index = b.ins().iadd(index, iw);
                        (ok, b.ins().ishl_imm_u(index, 2))
                    })
                    .collect();
                let slow = b.create_block();
                let done = b.create_block();
                if let Some(same_row) = same_row {
                    let fast = b.create_block();
                    let ends = b.ins().band(taps_at[0].0, taps_at[nr - 1].0);
                    let contiguous = b.ins().band(same_row, ends);
                    b.ins().brif(contiguous, fast, &[], slow, &[]);
                    b.switch_to_block(fast);
                    let src0 = b.ins().iadd(group.x, taps_at[0].1);
                    counted_loop(b, pointer, zero, channels, 1, |b, c| {
                        let src_offset = b.ins().imul_imm_s(c, plane_bytes);
                        let src = b.ins().iadd(src0, src_offset);
                        let dst_offset = b.ins().imul_imm_s(c, channel_row_bytes);
                        let dst = b.ins().iadd(dst0, dst_offset);
                        for v in 0..(nr / LANES as usize) as i32 {
                            let value = b.ins().load(types::F32X4, flags(), src, v * 16);
                            b.ins().store(flags(), value, dst, v * 16);
                        }
                    });
                    b.ins().jump(done, &[]);
                } else {
                    b.ins().jump(slow, &[]);
                }
                b.switch_to_block(slow);
                let zero_value = f32_constant(b, types::F32, 0.0);
                counted_loop(b, pointer, zero, channels, 1, |b, c| {
                    let src_offset = b.ins().imul_imm_s(c, plane_bytes);
                    let src = b.ins().iadd(group.x, src_offset);
                    let dst_offset = b.ins().imul_imm_s(c, channel_row_bytes);
                    let dst = b.ins().iadd(dst0, dst_offset);
                    for j in 0..nr {
                        let value = match taps_at.get(j) {
                            Some(&(ok, offset)) => {
                                let inside = b.ins().iadd(src, offset);
                                let address = b.ins().select(ok, inside, group.zero);
                                b.ins().load(types::F32, flags(), address, 0)
                            }
                            None => zero_value,
                        };
                        b.ins().store(flags(), value, dst, (j * 4) as i32);
                    }
                });
                b.ins().jump(done, &[]);
                b.switch_to_block(done);
            });
        });
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
        let pixels = panel_pixels(b, pointer, start, nr, g.out_w);
        let next = pixels[nr];
        self.pack_panel(b, context, group, &pixels[..nr], valid);
        let cout_g = g.out_channels / g.group;
        let k = b.ins().iconst(pointer, g.reduction() as i64);
        let offset = b.ins().ishl_imm_u(first_pixel, 2);
        let operands = PanelOperands {
            a: group.w,
            lda: k,
            b: group.scratch,
            k,
            m: b.ins().iconst(pointer, cout_g as i64),
            c: b.ins().iadd(group.y, offset),
            ldc: b.ins().iconst(pointer, self.out_plane() as i64),
            residual: group.residual.map(|r| b.ins().iadd(r, offset)),
            bias: group.bias,
            columns: (valid < nr).then(|| b.ins().iconst(pointer, valid as i64)),
        };
        self.micro.emit_rows(b, context, &operands);
        next
    }
}

impl Kernel for ConvKernel {
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
                reason: format!("expected {} parameters", self.spec.params.len()),
            });
        }
        let epilogue = self.micro.epilogue;
        let mut next = params.iter().copied();
        let mut take = || next.next().unwrap_or(params[0]);
        let (x, w) = (take(), take());
        let bias = (epilogue.bias == BiasKind::PerRow).then(&mut take);
        let residual = epilogue.residual.then(&mut take);
        let (y, scratch) = (take(), take());

        let g = &self.geometry;
        let pointer = context.pointer;
        let nr = self.micro.nr() as usize;
        let (cin_g, cout_g) = (g.in_channels / g.group, g.out_channels / g.group);
        let in_plane = (g.in_h * g.in_w) as i64;
        let out_plane = self.out_plane();
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 4, 2));
        let zero_address = b.ins().stack_addr(pointer, slot, 0);
        let zero_value = f32_constant(b, types::F32, 0.0);
        b.ins().store(flags(), zero_value, zero_address, 0);

        let zero = b.ins().iconst(pointer, 0);
        let batch = b.ins().iconst(pointer, g.batch as i64);
        let groups = b.ins().iconst(pointer, g.group as i64);
        counted_loop(b, pointer, zero, batch, 1, |b, image| {
            counted_loop(b, pointer, zero, groups, 1, |b, group| {
                // Element offsets of this (image, group) in X, W, bias and Y.
                let x_channel = b.ins().imul_imm_s(image, g.in_channels as i64);
                let x_group = b.ins().imul_imm_s(group, cin_g as i64);
                let x_channel = b.ins().iadd(x_channel, x_group);
                let x_offset = b.ins().imul_imm_s(x_channel, in_plane * 4);
                let y_channel = b.ins().imul_imm_s(image, g.out_channels as i64);
                let y_group = b.ins().imul_imm_s(group, cout_g as i64);
                let y_channel = b.ins().iadd(y_channel, y_group);
                let y_offset = b.ins().imul_imm_s(y_channel, out_plane as i64 * 4);
                let w_offset = b
                    .ins()
                    .imul_imm_s(group, (cout_g * g.reduction() * 4) as i64);
                let bias_offset = b.ins().imul_imm_s(group, cout_g as i64 * 4);
                let pointers = GroupPointers {
                    x: b.ins().iadd(x, x_offset),
                    w: b.ins().iadd(w, w_offset),
                    bias: bias.map(|bias| b.ins().iadd(bias, bias_offset)),
                    residual: residual.map(|r| b.ins().iadd(r, y_offset)),
                    y: b.ins().iadd(y, y_offset),
                    scratch,
                    zero: zero_address,
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

/// Packs ONNX weights `[C_out, C_in/g, kH, kW]` as `g` consecutive row-panel matrices
/// (`[C_out/g, K]` each, [`pack_a`] with `mr` rows).
pub fn pack_conv_weights(
    geometry: &ConvGeometry,
    weight: &[f32],
    mr: usize,
) -> Result<Vec<f32>, KernelError> {
    let k = geometry.reduction();
    let cout_g = geometry.out_channels / geometry.group.max(1);
    if weight.len() != geometry.out_channels * k {
        return Err(KernelError::Unsupported {
            kernel: "Conv".to_string(),
            reason: format!(
                "weight has {} values, expected C_out·C_in/g·kH·kW = {}·{k}",
                weight.len(),
                geometry.out_channels
            ),
        });
    }
    let mut packed = Vec::with_capacity(weight.len());
    for group in weight.chunks((cout_g * k).max(1)) {
        packed.extend(pack_a(group, cout_g, k, mr)?);
    }
    Ok(packed)
}

/// Lowers a convolution whose input 0 is X (NCHW), output 0 is Y; `weight` is the ONNX
/// weight `[C_out, C_in/group, kH, kW]` row-major, `bias` has `C_out` entries.
pub fn lower_conv(
    arch: Arch,
    geometry: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Result<NodeLowering, KernelError> {
    let tile = DEFAULT_TILE;
    let tile_epilogue = TileEpilogue {
        bias: if bias.is_some() {
            BiasKind::PerRow
        } else {
            BiasKind::None
        },
        residual: epilogue.residual_input.is_some(),
        activation: epilogue.activation,
    };
    let kernel = ConvKernel::new(arch, geometry, tile, tile_epilogue, DEFAULT_K_UNROLL)?;
    let mut packed = vec![pack_conv_weights(geometry, weight, tile.rows as usize)?];
    let mut args = vec![Arg::input(0), Arg::packed(0)];
    if let Some(bias) = bias {
        if bias.len() != geometry.out_channels {
            return Err(KernelError::Unsupported {
                kernel: kernel.spec.name.clone(),
                reason: format!(
                    "bias has {} values for {} output channels",
                    bias.len(),
                    geometry.out_channels
                ),
            });
        }
        packed.push(bias.to_vec());
        args.push(Arg::packed(1));
    }
    if let Some(index) = epilogue.residual_input {
        args.push(Arg::input(index));
    }
    args.extend([Arg::output(0), Arg::Scratch { offset: 0 }]);
    let scratch_bytes = kernel.scratch_bytes();
    let description = format!(
        "implicit gemm {} {}",
        geometry.short_name(),
        kernel.micro.name()
    );
    Ok(NodeLowering {
        calls: vec![KernelCall::new(std::sync::Arc::new(kernel), args)?],
        packed,
        scratch_bytes,
        description,
        ..NodeLowering::default()
    })
}

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;

/// Walks the `out_plane` output pixels of one image and group in panels of `nr`, then one
/// narrower edge panel: `panel(b, first_pixel, (oh, ow) of the first pixel, width)` emits a
/// panel and returns the `(oh, ow)` of the pixel after it. Shared by the fp32 and int8
/// convolutions.
pub(crate) fn walk_panels(
    b: &mut FunctionBuilder,
    pointer: cranelift_codegen::ir::Type,
    out_plane: usize,
    nr: usize,
    mut panel: impl FnMut(&mut FunctionBuilder, Value, (Value, Value), usize) -> (Value, Value),
) {
    let zero = b.ins().iconst(pointer, 0);
    let full_panels = out_plane / nr;
    let edge = out_plane % nr;
    let oh = b.declare_var(pointer);
    let ow = b.declare_var(pointer);
    b.def_var(oh, zero);
    b.def_var(ow, zero);
    let full_end = b.ins().iconst(pointer, (full_panels * nr) as i64);
    let edge_start = counted_loop(b, pointer, zero, full_end, nr as i64, |b, p0| {
        let start = (b.use_var(oh), b.use_var(ow));
        let (next_oh, next_ow) = panel(b, p0, start, nr);
        b.def_var(oh, next_oh);
        b.def_var(ow, next_ow);
    });
    if edge > 0 {
        let start = (b.use_var(oh), b.use_var(ow));
        panel(b, edge_start, start, edge);
    }
}

/// The `(oh, ow)` output coordinates of the `nr` pixels of a panel starting at `start`, plus
/// the pixel after it (`nr + 1` entries), stepping along rows of `out_w` pixels.
pub(crate) fn panel_pixels(
    b: &mut FunctionBuilder,
    pointer: cranelift_codegen::ir::Type,
    start: (Value, Value),
    nr: usize,
    out_w: usize,
) -> Vec<(Value, Value)> {
    let zero = b.ins().iconst(pointer, 0);
    let mut pixels = Vec::with_capacity(nr + 1);
    let (mut oh, mut ow) = start;
    for _ in 0..=nr {
        pixels.push((oh, ow));
        let next_ow = b.ins().iadd_imm_s(ow, 1);
        let wrap = b.ins().icmp_imm_s(IntCC::Equal, next_ow, out_w as i64);
        let next_oh = b.ins().iadd_imm_s(oh, 1);
        ow = b.ins().select(wrap, zero, next_ow);
        oh = b.ins().select(wrap, next_oh, oh);
    }
    pixels
}
