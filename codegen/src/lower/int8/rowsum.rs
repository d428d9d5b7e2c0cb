//! The run-time input sums the weight-zero-point correction needs (`super::residual`): per
//! output pixel of a convolution panel, per row of a matrix product's A.
//!
//! The static kernels fold the `K·zx` part of the correction into their compile-time bias.
//! The float epilogue (`super::dynamic_epilogue`) reads `zx` at run time, so its kernels pass
//! the run-time `K·zx` as `centre` and get the centred sums `Σ (x − zx)` instead: subtracted
//! once per panel (or row), not once per row block of the product.
//!
//! Both are dot products of the u8 bytes with a vector of s8 ones, through the same
//! [`QMicroKernel::dot`] as the main loop (`vpdpbusd` with VNNI, the exact widening form
//! without): a lane sums four bytes, at most `255·K` in all, far inside i32 for any
//! reduction the kernels accept. With `sdot` the dot product sums `x − 128`
//! ([`super::microkernel::DotProduct::activation_offset`]); the sums add the `128` of every
//! byte it summed back, so both are always the sums of the stored u8 bytes.
//!
//! - A convolution panel holds `NR` pixels × 4 bytes per group of four `k`
//!   (`super::conv`), so lane `i` of vector `v` summed over the groups is the sum of pixel
//!   `4v + i`: `NR / 4` accumulators, one pass over the panel just packed (a sixty-fourth of
//!   the main loop's work for 64 output channels), stored as `NR` i32 after the panel.
//! - A row of A is read 16 bytes at a time into one accumulator whose lanes are added at the
//!   end, the last `k mod 16` bytes one by one; all `m` row sums go to scratch once, before
//!   the first column panel.

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::microkernel::{flip_with, Prepared, QMicroKernel, K_GROUP};
use crate::lower::kernel::{counted_loop, flags};

/// Bytes of A one step of the row-sum loop reads.
const ROW_CHUNK: usize = 16;

/// Sixteen s8 ones, prepared as the signed operand of `micro`'s dot product.
fn ones(micro: &QMicroKernel, b: &mut FunctionBuilder) -> Prepared {
    let one = b.ins().iconst(types::I8, 1);
    let ones = b.ins().splat(types::I8X16, one);
    micro.prepare(b, ones, true)
}

/// The sums of the `NR` pixels of the packed panel at `panel` (`groups` groups of four `k`),
/// minus `centre` (an i32, wrapping) when given, stored as `NR` i32 at `sums`.
pub(crate) fn emit_panel_sums(
    micro: &QMicroKernel,
    b: &mut FunctionBuilder,
    pointer: Type,
    panel: Value,
    groups: usize,
    centre: Option<Value>,
    sums: Value,
) {
    let vectors = (micro.nr() / 4) as usize;
    let group_bytes = (K_GROUP * micro.nr() as usize) as i64;
    let ones = ones(micro, b);
    let zero = b.ins().iconst(types::I32, 0);
    let zero = b.ins().splat(types::I32X4, zero);
    let accumulators: Vec<Variable> = (0..vectors)
        .map(|_| {
            let var = b.declare_var(types::I32X4);
            b.def_var(var, zero);
            var
        })
        .collect();
    let start = b.ins().iconst(pointer, 0);
    let end = b.ins().iconst(pointer, groups as i64);
    counted_loop(b, pointer, start, end, 1, |b, q| {
        let offset = b.ins().imul_imm_s(q, group_bytes);
        let group = b.ins().iadd(panel, offset);
        for (v, &var) in accumulators.iter().enumerate() {
            let bytes = b.ins().load(types::I8X16, flags(), group, (16 * v) as i32);
            // The panel was flipped by its packer (`sdot`).
            let bytes = micro.prepare(b, bytes, false);
            let acc = b.use_var(var);
            let sum = micro.dot(b, ones, bytes, acc);
            b.def_var(var, sum);
        }
    });
    // Each lane summed the 4·groups bytes of its pixel (wrapping, like the accumulator).
    let offset = i64::from(micro.dot.activation_offset());
    let restore = (offset * (K_GROUP * groups) as i64) as i32;
    let restore = (restore != 0).then(|| {
        let restore = b.ins().iconst(types::I32, i64::from(restore as u32));
        b.ins().splat(types::I32X4, restore)
    });
    let centre = centre.map(|centre| b.ins().splat(types::I32X4, centre));
    for (v, &var) in accumulators.iter().enumerate() {
        let mut sum = b.use_var(var);
        if let Some(restore) = restore {
            sum = b.ins().iadd(sum, restore);
        }
        if let Some(centre) = centre {
            sum = b.ins().isub(sum, centre);
        }
        b.ins().store(flags(), sum, sums, (16 * v) as i32);
    }
}

/// The sums of the `k` bytes of each of the `m` rows of A (row `i` at `a + i·lda`), minus
/// `centre` (an i32, wrapping) when given, stored as `m` i32 at `sums`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_row_sums(
    micro: &QMicroKernel,
    b: &mut FunctionBuilder,
    pointer: Type,
    a: Value,
    lda: Value,
    m: Value,
    k: usize,
    centre: Option<Value>,
    sums: Value,
) {
    let ones = ones(micro, b);
    let flip = micro.dot.flip_mask(b, types::I8X16);
    let start = b.ins().iconst(pointer, 0);
    counted_loop(b, pointer, start, m, 1, |b, i| {
        let row_offset = b.ins().imul(i, lda);
        let row = b.ins().iadd(a, row_offset);
        let zero = b.ins().iconst(types::I32, 0);
        let zero = b.ins().splat(types::I32X4, zero);
        let acc = b.declare_var(types::I32X4);
        b.def_var(acc, zero);
        let chunks = k / ROW_CHUNK;
        if chunks > 0 {
            let first = b.ins().iconst(pointer, 0);
            let end = b.ins().iconst(pointer, (chunks * ROW_CHUNK) as i64);
            counted_loop(b, pointer, first, end, ROW_CHUNK as i64, |b, kk| {
                let source = b.ins().iadd(row, kk);
                let bytes = b.ins().load(types::I8X16, flags(), source, 0);
                let bytes = flip_with(b, bytes, flip);
                let bytes = micro.prepare(b, bytes, false);
                let sum = b.use_var(acc);
                let sum = micro.dot(b, ones, bytes, sum);
                b.def_var(acc, sum);
            });
        }
        let lanes = b.use_var(acc);
        let mut total = b.ins().extractlane(lanes, 0);
        for lane in 1..4u8 {
            let value = b.ins().extractlane(lanes, lane);
            total = b.ins().iadd(total, value);
        }
        // The vector part summed `x − offset` over chunks·16 bytes; the tail sums raw bytes.
        let offset = i64::from(micro.dot.activation_offset());
        let restore = (offset * (chunks * ROW_CHUNK) as i64) as i32;
        if restore != 0 {
            total = b.ins().iadd_imm_s(total, i64::from(restore));
        }
        for tail in chunks * ROW_CHUNK..k {
            let byte = b.ins().uload8(types::I32, flags(), row, tail as i32);
            total = b.ins().iadd(total, byte);
        }
        if let Some(centre) = centre {
            total = b.ins().isub(total, centre);
        }
        let offset = b.ins().ishl_imm_u(i, 2);
        let target = b.ins().iadd(sums, offset);
        b.ins().store(flags(), total, target, 0);
    });
}
