//! Data movement, fp32: strided copies (Concat slots, output copies, views that must copy) and
//! Transpose.
//!
//! Two kernels:
//! - [`StridedCopyKernel`]: `void k(const float *src, float *dst, size_t rows, size_t len,
//!   size_t src_stride, size_t dst_stride)` copies `rows` rows of `len` floats, row `r` from
//!   `src + r·src_stride` to `dst + r·dst_stride` (strides in elements). Nothing is baked: one
//!   symbol per ISA serves every copy and every Concat input.
//! - [`TransposeKernel`]: `void k(const float *x, float *y, size_t outer)`. The permutation is
//!   first simplified at compile time ([`TransposePlan`]): axes of extent 1 are dropped and
//!   axes that stay adjacent and in order are merged, so the innermost copy is as long as the
//!   shape allows (ShuffleNet's `[N, g, C/g, H, W]` by `[0, 2, 1, 3, 4]` becomes
//!   `[N, g, C/g, H·W]` by `[0, 2, 1, 3]`: rows of `H·W` floats). A leading axis that the
//!   permutation keeps in place (normally the batch) stays a run-time argument, `outer`;
//!   everything else is baked into the loop nest and spelled out in the symbol name.
//!
//! Contiguous runs are copied with f32x4 loads and stores (four vectors per step, then one,
//! then single floats). When the innermost output axis is not the innermost input axis, each
//! output vector is gathered from four strided loads. Copies move bits: bit-exact, NaN
//! payloads included.

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use super::elementwise::LANES;
use super::kernel::{
    arity_error, counted_loop, f32_address, flags, Kernel, KernelContext, KernelError, KernelParam,
    KernelSpec,
};
use super::node::{Arg, KernelCall, NodeLowering};
use crate::target::Arch;

/// Vectors moved per step of the main copy loop (independent loads before the stores).
const UNROLL: i64 = 4;

/// Copies `len` contiguous floats from `src` to `dst` (`len` a pointer-sized value).
fn emit_contiguous_copy(
    b: &mut FunctionBuilder,
    context: &KernelContext,
    src: Value,
    dst: Value,
    len: Value,
) {
    let lanes = i64::from(LANES);
    let vector_bytes = lanes * 4;
    let zero = b.ins().iconst(context.pointer, 0);
    let tail = counted_loop(b, context.pointer, zero, len, lanes * UNROLL, |b, i| {
        let from = f32_address(b, src, i);
        let to = f32_address(b, dst, i);
        let loaded: Vec<Value> = (0..UNROLL)
            .map(|k| {
                let offset = (k * vector_bytes) as i32;
                b.ins().load(types::F32X4, flags(), from, offset)
            })
            .collect();
        for (k, value) in loaded.into_iter().enumerate() {
            let offset = (k as i64 * vector_bytes) as i32;
            b.ins().store(flags(), value, to, offset);
        }
    });
    let tail = counted_loop(b, context.pointer, tail, len, lanes, |b, i| {
        let from = f32_address(b, src, i);
        let to = f32_address(b, dst, i);
        let value = b.ins().load(types::F32X4, flags(), from, 0);
        b.ins().store(flags(), value, to, 0);
    });
    counted_loop(b, context.pointer, tail, len, 1, |b, i| {
        let from = f32_address(b, src, i);
        let to = f32_address(b, dst, i);
        let value = b.ins().load(types::F32, flags(), from, 0);
        b.ins().store(flags(), value, to, 0);
    });
}

/// Copies `len` floats `src_stride_bytes` apart in the source to contiguous `dst`.
fn emit_gather_copy(
    b: &mut FunctionBuilder,
    context: &KernelContext,
    src: Value,
    dst: Value,
    len: usize,
    src_stride_bytes: i64,
) {
    let lanes = i64::from(LANES);
    let zero = b.ins().iconst(context.pointer, 0);
    let end = b.ins().iconst(context.pointer, len as i64);
    let tail = counted_loop(b, context.pointer, zero, end, lanes, |b, i| {
        let offset = b.ins().imul_imm_s(i, src_stride_bytes);
        let from = b.ins().iadd(src, offset);
        let first = b.ins().load(types::F32, flags(), from, 0);
        let mut vector = b.ins().splat(types::F32X4, first);
        for lane in 1..LANES {
            let at = b.ins().iadd_imm_s(from, i64::from(lane) * src_stride_bytes);
            let value = b.ins().load(types::F32, flags(), at, 0);
            vector = b.ins().insertlane(vector, value, lane as u8);
        }
        let to = f32_address(b, dst, i);
        b.ins().store(flags(), vector, to, 0);
    });
    counted_loop(b, context.pointer, tail, end, 1, |b, i| {
        let offset = b.ins().imul_imm_s(i, src_stride_bytes);
        let from = b.ins().iadd(src, offset);
        let value = b.ins().load(types::F32, flags(), from, 0);
        let to = f32_address(b, dst, i);
        b.ins().store(flags(), value, to, 0);
    });
}

/// `rows` rows of `len` floats from `src` (rows `src_stride` floats apart) to `dst` (rows
/// `dst_stride` apart). See the module docs.
#[derive(Clone, Debug)]
pub struct StridedCopyKernel {
    spec: KernelSpec,
}

impl StridedCopyKernel {
    pub fn new(arch: Arch) -> StridedCopyKernel {
        let spec = KernelSpec::f32x4_stream(
            arch,
            "copy_rows".to_string(),
            None,
            vec![
                KernelParam::input("src"),
                KernelParam::output("dst"),
                KernelParam::size("rows"),
                KernelParam::size("len"),
                KernelParam::size("src_stride"),
                KernelParam::size("dst_stride"),
            ],
        );
        StridedCopyKernel { spec }
    }
}

impl Kernel for StridedCopyKernel {
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
            let src_row = b.ins().imul(row, src_stride);
            let from = f32_address(b, src, src_row);
            let dst_row = b.ins().imul(row, dst_stride);
            let to = f32_address(b, dst, dst_row);
            emit_contiguous_copy(b, context, from, to, len);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// A strided copy as one call: merged into a single contiguous row when the rows touch.
fn copy_call(
    kernel: &std::sync::Arc<StridedCopyKernel>,
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

/// A transpose reduced to its essential axes (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransposePlan {
    /// Extent of the leading axis kept in place (1 if there is none).
    pub outer: usize,
    /// The remaining input dims after dropping extent-1 axes and merging.
    pub dims: Vec<usize>,
    /// The permutation of `dims` (output axis `k` is input axis `perm[k]`).
    pub perm: Vec<usize>,
}

impl TransposePlan {
    /// Simplifies `perm` applied to an input of `dims`. The caller checked that `perm` is a
    /// permutation of `0..dims.len()`.
    pub fn new(perm: &[usize], dims: &[usize]) -> TransposePlan {
        // Output axes, as input axes, without the extent-1 ones (they move no data).
        let kept: Vec<usize> = perm.iter().copied().filter(|&a| dims[a] != 1).collect();
        // Groups of input axes that are consecutive in the output and in the input.
        let mut groups: Vec<(usize, usize)> = Vec::new(); // (first input axis, last)
        for &axis in &kept {
            match groups.last_mut() {
                Some(group) if next_kept(dims, group.1) == Some(axis) => group.1 = axis,
                _ => groups.push((axis, axis)),
            }
        }
        let mut by_input: Vec<usize> = (0..groups.len()).collect();
        by_input.sort_by_key(|&g| groups[g].0);
        let merged_dims: Vec<usize> = by_input
            .iter()
            .map(|&g| dims[groups[g].0..=groups[g].1].iter().product())
            .collect();
        let mut merged_perm = vec![0; groups.len()];
        for (rank, &g) in by_input.iter().enumerate() {
            merged_perm[g] = rank;
        }
        if merged_perm.first() == Some(&0) {
            let outer = merged_dims[0];
            let perm = merged_perm[1..].iter().map(|&a| a - 1).collect();
            TransposePlan {
                outer,
                dims: merged_dims[1..].to_vec(),
                perm,
            }
        } else {
            TransposePlan {
                outer: 1,
                dims: merged_dims,
                perm: merged_perm,
            }
        }
    }

    /// Whether no data moves relative to a plain copy.
    pub fn is_copy(&self) -> bool {
        self.perm.iter().enumerate().all(|(k, &a)| k == a)
    }

    /// Elements per `outer` block.
    pub fn block(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The next input axis after `axis` whose extent is not 1.
fn next_kept(dims: &[usize], axis: usize) -> Option<usize> {
    (axis + 1..dims.len()).find(|&a| dims[a] != 1)
}

/// What a transpose moves: f32 (the float back end) or single bytes (8-bit tensors). Only
/// the innermost copies and the kernel's spec differ; the loop nest is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Element {
    F32,
    Byte,
}

impl Element {
    fn bytes(self) -> i64 {
        match self {
            Element::F32 => 4,
            Element::Byte => 1,
        }
    }

    /// How descriptions name the element type ("" for the float default).
    fn prefix(self) -> &'static str {
        match self {
            Element::F32 => "",
            Element::Byte => "u8 ",
        }
    }
}

/// Transpose of a [`TransposePlan`] with at least two axes left (see the module docs).
#[derive(Clone, Debug)]
pub struct TransposeKernel {
    plan: TransposePlan,
    element: Element,
    spec: KernelSpec,
}

impl TransposeKernel {
    pub fn new(arch: Arch, plan: TransposePlan, element: Element) -> TransposeKernel {
        let join = |v: &[usize]| {
            v.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        };
        let params = vec![
            KernelParam::input("x"),
            KernelParam::output("y"),
            KernelParam::size("outer"),
        ];
        let spec = match element {
            Element::F32 => {
                let op = format!("transpose_{}_p{}", join(&plan.dims), join(&plan.perm));
                KernelSpec::f32x4_stream(arch, op, None, params)
            }
            Element::Byte => {
                let op = format!("u8_transpose_{}_p{}", join(&plan.dims), join(&plan.perm));
                super::int8::bytes::byte_spec(arch, op, params)
            }
        };
        TransposeKernel {
            plan,
            element,
            spec,
        }
    }

    /// Byte stride in the input of each input axis.
    fn input_strides(&self) -> Vec<i64> {
        let dims = &self.plan.dims;
        let mut strides = vec![self.element.bytes(); dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * dims[d + 1] as i64;
        }
        strides
    }

    /// The loops over output axes `level..`: `src` and `dst` address the first element.
    fn emit_level(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        level: usize,
        src: Value,
        dst: Value,
    ) {
        let plan = &self.plan;
        let strides = self.input_strides();
        let rank = plan.perm.len();
        let axis = plan.perm[level];
        let extent = plan.dims[axis];
        if level + 1 == rank {
            use super::int8::bytes;
            let contiguous = axis + 1 == rank;
            let len = b.ins().iconst(context.pointer, extent as i64);
            match (self.element, contiguous) {
                (Element::F32, true) => emit_contiguous_copy(b, context, src, dst, len),
                (Element::F32, false) => {
                    emit_gather_copy(b, context, src, dst, extent, strides[axis])
                }
                (Element::Byte, true) => bytes::emit_contiguous_copy(b, context, src, dst, len),
                (Element::Byte, false) => {
                    bytes::emit_gather_copy(b, context, src, dst, extent, strides[axis])
                }
            }
            return;
        }
        // Bytes of output per step of this axis: the product of the output extents after it.
        let out_stride: i64 = plan.perm[level + 1..]
            .iter()
            .map(|&a| plan.dims[a] as i64)
            .product::<i64>()
            * self.element.bytes();
        let zero = b.ins().iconst(context.pointer, 0);
        let end = b.ins().iconst(context.pointer, extent as i64);
        counted_loop(b, context.pointer, zero, end, 1, |b, i| {
            let src_offset = b.ins().imul_imm_s(i, strides[axis]);
            let from = b.ins().iadd(src, src_offset);
            let dst_offset = b.ins().imul_imm_s(i, out_stride);
            let to = b.ins().iadd(dst, dst_offset);
            self.emit_level(b, context, level + 1, from, to);
        });
    }
}

impl Kernel for TransposeKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let [x, y, outer] = params else {
            return Err(arity_error(&self.spec, params));
        };
        let (x, y) = (*x, *y);
        if self.plan.perm.is_empty() {
            return Err(KernelError::Unsupported {
                kernel: self.spec.name.clone(),
                reason: "a transpose without axes is a copy".to_string(),
            });
        }
        let block_bytes = self.plan.block() as i64 * self.element.bytes();
        let zero = b.ins().iconst(context.pointer, 0);
        counted_loop(b, context.pointer, zero, *outer, 1, |b, o| {
            let offset = b.ins().imul_imm_s(o, block_bytes);
            let from = b.ins().iadd(x, offset);
            let to = b.ins().iadd(y, offset);
            self.emit_level(b, context, 0, from, to);
        });
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Lowers Transpose of an f32 input of `dims` by `perm` (input 0 → output 0).
pub fn lower_transpose(
    arch: Arch,
    perm: &[usize],
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    lower_transpose_of(arch, perm, dims, Element::F32)
}

/// Lowers Transpose of an input of `dims` whose elements are `element`s by `perm`.
pub fn lower_transpose_of(
    arch: Arch,
    perm: &[usize],
    dims: &[usize],
    element: Element,
) -> Result<NodeLowering, KernelError> {
    let what = element.prefix();
    let mut seen = vec![false; dims.len()];
    let valid = perm.len() == dims.len()
        && perm
            .iter()
            .all(|&a| a < dims.len() && !std::mem::replace(&mut seen[a], true));
    if !valid {
        return Err(KernelError::Unsupported {
            kernel: format!("{what}Transpose"),
            reason: format!("perm {perm:?} is not a permutation of the axes of {dims:?}"),
        });
    }
    let numel: usize = dims.iter().product();
    let mut lowering = NodeLowering::default();
    if numel == 0 {
        lowering.description = format!("{what}transpose {dims:?} perm {perm:?}: empty");
        return Ok(lowering);
    }
    let plan = TransposePlan::new(perm, dims);
    if plan.is_copy() {
        let call = match element {
            Element::F32 => {
                let kernel = std::sync::Arc::new(StridedCopyKernel::new(arch));
                copy_call(&kernel, Arg::input(0), Arg::output(0), 1, numel, 0, 0)?
            }
            Element::Byte => super::int8::bytes::plain_copy_call(arch, numel)?,
        };
        lowering.calls.push(call);
        lowering.description = format!("{what}transpose {dims:?} perm {perm:?}: plain copy");
        return Ok(lowering);
    }
    lowering.description = format!(
        "{what}transpose {dims:?} perm {perm:?} as {} x {:?} perm {:?}",
        plan.outer, plan.dims, plan.perm
    );
    let outer = plan.outer;
    let kernel = std::sync::Arc::new(TransposeKernel::new(arch, plan, element));
    lowering.calls.push(KernelCall::new(
        kernel,
        vec![Arg::input(0), Arg::output(0), Arg::Size(outer)],
    )?);
    Ok(lowering)
}

/// Lowers Concat along `axis` of inputs with `input_dims` into output 0, copying only the
/// inputs `i` with `copy[i]` (the others were written in place by their producers).
pub fn lower_concat(
    arch: Arch,
    axis: usize,
    input_dims: &[Vec<usize>],
    copy: &[bool],
) -> Result<NodeLowering, KernelError> {
    let unsupported = |reason: String| KernelError::Unsupported {
        kernel: format!("Concat on {input_dims:?} along axis {axis}"),
        reason,
    };
    let first = input_dims
        .first()
        .ok_or_else(|| unsupported("no inputs".to_string()))?;
    if copy.len() != input_dims.len() {
        return Err(unsupported(format!(
            "{} copy flags for {} inputs",
            copy.len(),
            input_dims.len()
        )));
    }
    if axis >= first.len() {
        return Err(unsupported(format!(
            "axis out of range for rank {}",
            first.len()
        )));
    }
    for dims in input_dims {
        let compatible =
            dims.len() == first.len() && (0..dims.len()).all(|d| d == axis || dims[d] == first[d]);
        if !compatible {
            return Err(unsupported(format!(
                "input {dims:?} does not match {first:?} outside the axis"
            )));
        }
    }
    let outer: usize = first[..axis].iter().product();
    let inner = |dims: &[usize]| dims[axis..].iter().product::<usize>();
    let total_inner: usize = input_dims.iter().map(|d| inner(d)).sum();
    let kernel = std::sync::Arc::new(StridedCopyKernel::new(arch));
    let mut lowering = NodeLowering::default();
    let mut slot = 0;
    let mut copied = Vec::new();
    for (index, (dims, &needed)) in input_dims.iter().zip(copy).enumerate() {
        let len = inner(dims);
        if needed && len > 0 && outer > 0 {
            let dst = Arg::Output {
                index: 0,
                offset: slot * 4,
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
    lowering.description =
        format!("concat axis {axis}: {outer} rows of {total_inner}, copying inputs {copied:?}");
    Ok(lowering)
}

/// Lowers a plain copy of `bytes` bytes from input `input` to output `output` (a view that
/// cannot alias, or a graph output that is another value).
pub fn lower_copy(
    arch: Arch,
    input: usize,
    output: usize,
    bytes: usize,
) -> Result<NodeLowering, KernelError> {
    if !bytes.is_multiple_of(4) {
        return Err(KernelError::Unsupported {
            kernel: "copy".to_string(),
            reason: format!("{bytes} bytes is not a whole number of f32 elements"),
        });
    }
    let mut lowering = NodeLowering {
        description: format!("copy {bytes} bytes"),
        ..NodeLowering::default()
    };
    if bytes > 0 {
        let kernel = std::sync::Arc::new(StridedCopyKernel::new(arch));
        let (src, dst) = (Arg::input(input), Arg::output(output));
        let len = bytes / 4;
        lowering
            .calls
            .push(copy_call(&kernel, src, dst, 1, len, len, len)?);
    }
    Ok(lowering)
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
