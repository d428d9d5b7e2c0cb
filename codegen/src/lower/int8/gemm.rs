//! The int8 matrix product `Y[m, n] = requant(A[m, k] · B[k, n] + bias')`: u8 activations A
//! read in place (row-major, any row stride), s8 weights B packed at compile time into
//! column panels in the dot-product layout, per-column requantization.
//!
//! The register block's rows broadcast four consecutive bytes of an A row (one i32 load:
//! A needs no packing), its columns are `NR` output features whose four weights per group of
//! four `k` sit together:
//!
//! ```text
//! packed[p·KG·4·NR + q·4·NR + 4j + t] = B[4q + t, p·NR + j]   (0 past k or n)
//! ```
//!
//! with `KG = ⌈k / 4⌉`. When `k mod 4 ≠ 0` the last group of each A row is assembled from its
//! remaining bytes, so no load reads past the row.
//!
//! With nonzero weight zero points the kernel first sums each row of A into scratch
//! (`super::rowsum`) and subtracts `zw[j]·Σ_k A[i, k]` in the epilogue (`super::residual`);
//! with the float epilogue the sums are centred on the run-time zero point first,
//! `Σ_k (A[i, k] − zx)` (`super::dynamic_epilogue`).

use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use std::sync::Arc;

use qcc_ir::requant::FixedPoint;

use super::dynamic_epilogue::FloatOperands;
use super::microkernel::{QMicroKernel, QPanelOperands, RowOperand, K_GROUP};
use super::requant::{requant_records, OutputQuant, OutputStage};
use super::residual::{
    epilogue_records, nonzero_weight_zero_points, weight_zero_point_bias, Extras,
    EXTRA_RECORD_BYTES,
};
use super::rowsum::emit_row_sums;
use super::{check_input_zero_point, compensated_bias, int8_spec, unsupported, Int8Choice};
use crate::lower::kernel::{
    counted_loop, flags, Kernel, KernelContext, KernelError, KernelParam, KernelSpec,
};
use crate::lower::node::{Arg, KernelCall, NodeLowering};
use crate::target::{Arch, Target};

/// `void k(const uint8_t *a, const int8_t *w_packed, const record *requant, uint8_t *y,
/// size_t m, size_t lda, size_t ldc)`: row `i` of A at `a + i·lda`, of Y at `y + i·ldc`
/// (bytes); `k` and `n` are baked in with the weights. With weight zero points:
/// `(a, w_packed, requant, const extra_record *extras, y, int32_t *scratch, m, lda, ldc)`,
/// scratch holding the `m` row sums. With the float epilogue (dynamic quantization,
/// `super::dynamic_epilogue`): `(a, const float *a_scale, const uint8_t *a_zero_point,
/// w_packed, const float_records *records, float *y, [int32_t *scratch,] m, lda, ldc)`,
/// scratch (the `m` centred row sums) with weight zero points.
#[derive(Clone, Debug)]
pub struct QGemmKernel {
    pub(crate) spec: KernelSpec,
    micro: QMicroKernel,
    k: usize,
    n: usize,
    /// Bytes of each float record array (the float epilogue).
    float_array_bytes: i64,
}

impl QGemmKernel {
    pub(crate) fn new(spec: KernelSpec, micro: QMicroKernel, k: usize, n: usize) -> QGemmKernel {
        QGemmKernel {
            spec,
            micro,
            k,
            n,
            float_array_bytes: 0,
        }
    }

    /// A kernel with the float epilogue, `float_array_bytes` the length of each record array.
    pub(crate) fn new_float(
        spec: KernelSpec,
        micro: QMicroKernel,
        k: usize,
        n: usize,
        float_array_bytes: usize,
    ) -> QGemmKernel {
        QGemmKernel {
            float_array_bytes: float_array_bytes as i64,
            ..QGemmKernel::new(spec, micro, k, n)
        }
    }

    pub fn micro_kernel(&self) -> &QMicroKernel {
        &self.micro
    }

    /// The operands of the panel whose first column is `column`. `terms`: the epilogue
    /// records (static kernels with weight zero points) and the row sums (any kernel with
    /// weight zero points).
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &self,
        b: &mut FunctionBuilder,
        params: [Value; 7],
        terms: (Option<Value>, Option<Value>),
        float: Option<FloatOperands>,
        column: Value,
        columns: Option<Value>,
    ) -> QPanelOperands {
        let [a, w, records, y, m, lda, ldc] = params;
        let (extras, sums) = terms;
        let extras = extras.map(|extras| {
            let offset = b.ins().imul_imm_s(column, EXTRA_RECORD_BYTES as i64);
            b.ins().iadd(extras, offset)
        });
        // Panel p = column / NR starts at p·KG·4·NR = column·KG·4 bytes.
        let kg = self.k.div_ceil(K_GROUP) as i64;
        let panel_offset = b.ins().imul_imm_s(column, kg * K_GROUP as i64);
        let record_stride = self.micro.output.record_stride() as i64;
        let record_offset = b.ins().imul_imm_s(column, record_stride);
        let element = self.micro.output.element_bytes() as i64;
        let c_offset = b.ins().imul_imm_s(column, element);
        QPanelOperands {
            a,
            lda,
            b: b.ins().iadd(w, panel_offset),
            groups: self.k / K_GROUP,
            m,
            c: b.ins().iadd(y, c_offset),
            ldc,
            records: b.ins().iadd(records, record_offset),
            columns,
            extras,
            sums,
            residual: None,
            float,
        }
    }
}

impl Kernel for QGemmKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let arity = || crate::lower::kernel::arity_error(&self.spec, params);
        let mut float = None;
        let zero_points = self.micro.extras.weight_zero_points;
        // (the seven common parameters, the epilogue records, the row sums' scratch)
        let (params, extras, sums): ([Value; 7], _, _) = if self.micro.output.run_time_input() {
            // a, a_scale, a_zero_point, w_packed, records, y, [scratch], m, lda, ldc
            if params.len() != 9 + zero_points as usize {
                return Err(arity());
            }
            float = Some(FloatOperands {
                scale: params[1],
                zero_point: params[2],
                array_bytes: self.float_array_bytes,
            });
            let [m, lda, ldc] =
                [params.len() - 3, params.len() - 2, params.len() - 1].map(|i| params[i]);
            let common = [params[0], params[3], params[4], params[5], m, lda, ldc];
            (common, None, zero_points.then(|| params[6]))
        } else if zero_points {
            let &[a, w, records, extras, y, scratch, m, lda, ldc] = params else {
                return Err(arity());
            };
            ([a, w, records, y, m, lda, ldc], Some(extras), Some(scratch))
        } else {
            (params.try_into().map_err(|_| arity())?, None, None)
        };
        let pointer = context.pointer;
        if let Some(sums) = sums {
            let [a, _, _, _, m, lda, _] = params;
            // The float epilogue's sums are centred on the run-time zero point: `k·zx`.
            let centre = float.map(|float| {
                let zero_point = b.ins().uload8(types::I32, flags(), float.zero_point, 0);
                b.ins().imul_imm_s(zero_point, self.k as i64)
            });
            emit_row_sums(&self.micro, b, pointer, a, lda, m, self.k, centre, sums);
        }
        let nr = self.micro.nr() as usize;
        let zero = b.ins().iconst(pointer, 0);
        let full_end = b.ins().iconst(pointer, (self.n / nr * nr) as i64);
        counted_loop(b, pointer, zero, full_end, nr as i64, |b, column| {
            let operands = self.panel(b, params, (extras, sums), float, column, None);
            self.micro.emit_rows(b, context, &operands);
        });
        let edge = self.n % nr;
        if edge > 0 {
            let column = b.ins().iconst(pointer, (self.n - edge) as i64);
            let columns = b.ins().iconst(pointer, edge as i64);
            let operands = self.panel(b, params, (extras, sums), float, column, Some(columns));
            self.micro.emit_rows(b, context, &operands);
        }
        b.ins().return_(&[]);
        Ok(())
    }
}

/// Packs s8 `B` (`[k, n]` row-major, or `[n, k]` when `transposed`) into column panels of
/// width `nr` (layout in the module docs).
pub fn pack_qgemm_weights(
    weight: &[i8],
    k: usize,
    n: usize,
    transposed: bool,
    nr: usize,
) -> Result<Vec<u8>, String> {
    if k.checked_mul(n) != Some(weight.len()) || nr == 0 {
        return Err(format!(
            "B has {} values, expected k·n = {k}·{n}",
            weight.len()
        ));
    }
    let kg = k.div_ceil(K_GROUP);
    let panel_bytes = kg * K_GROUP * nr;
    let mut packed = vec![0u8; n.div_ceil(nr) * panel_bytes];
    for column in 0..n {
        let (p, j) = (column / nr, column % nr);
        for kk in 0..k {
            let value = if transposed {
                weight[column * k + kk]
            } else {
                weight[kk * n + column]
            };
            let (q, t) = (kk / K_GROUP, kk % K_GROUP);
            packed[p * panel_bytes + q * K_GROUP * nr + K_GROUP * j + t] = value as u8;
        }
    }
    Ok(packed)
}

/// An int8 matrix product `Y[m, n] = A[m, k] · B[k, n]`: everything [`lower_qgemm`] needs.
#[derive(Clone, Copy, Debug)]
pub struct QGemmParams<'a> {
    /// Rows of A (u8, row-major, `k` bytes per row) and of Y.
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// s8 B, `[k, n]` row-major, or `[n, k]` when `trans_b` (ONNX Gemm's `transB`).
    pub weight: &'a [i8],
    pub trans_b: bool,
    /// i32 bias per column, `n` values.
    pub bias: Option<&'a [i32]>,
    /// Per column (`n` values) or one for all.
    pub requant: &'a [FixedPoint],
    pub input_zero_point: i32,
    /// Weight zero points per column (`n` values) or one for all, in −128..=127; `None` or all
    /// zero is the plain kernel.
    pub weight_zero_points: Option<&'a [i32]>,
    pub output: OutputQuant,
}

/// Lowers an int8 matrix product for `target` with its default kernel choice.
pub fn lower_qgemm(target: &Target, params: &QGemmParams) -> Result<NodeLowering, KernelError> {
    lower_qgemm_with(target.arch(), Int8Choice::for_target(target), params)
}

/// Lowers an int8 matrix product with an explicit kernel choice.
pub fn lower_qgemm_with(
    arch: Arch,
    choice: Int8Choice,
    params: &QGemmParams,
) -> Result<NodeLowering, KernelError> {
    let kernel_name = "int8 Gemm";
    let fail = |reason: String| unsupported(kernel_name, reason);
    let (m, k, n) = (params.m, params.k, params.n);
    if k == 0 || n == 0 {
        return Err(fail(format!("empty product: k = {k}, n = {n}")));
    }
    let zx = check_input_zero_point(kernel_name, params.input_zero_point)?;
    let stage = OutputStage::new(&params.output, params.requant).map_err(fail)?;
    let rows = RowOperand::ActivationRows {
        k_rem: (k % K_GROUP) as u32,
    };
    let weight_zero_points =
        nonzero_weight_zero_points(params.weight_zero_points, n).map_err(fail)?;
    let micro = QMicroKernel::new(choice.tile, choice.dot, rows, stage, choice.k_unroll)
        .and_then(|micro| {
            micro.with_extras(Extras {
                weight_zero_points: weight_zero_points.is_some(),
                residual: None,
            })
        })
        .map_err(fail)?;
    let weight = params.weight;
    let trans_b = params.trans_b;
    let mut bias = compensated_bias(
        weight,
        n,
        k,
        params.bias,
        params.input_zero_point - choice.dot.activation_offset(),
        |j, kk| {
            if trans_b {
                weight[j * k + kk]
            } else {
                weight[kk * n + j]
            }
        },
    )
    .map_err(fail)?;
    if let Some(zw) = weight_zero_points {
        // The row sums run over the `k` bytes of A themselves (no padding).
        weight_zero_point_bias(&mut bias, zw, k, zx);
    }
    let records = requant_records(&bias, params.requant).map_err(fail)?;
    let packed = pack_qgemm_weights(weight, k, n, trans_b, micro.nr() as usize).map_err(fail)?;
    let op = format!("qgemm_k{k}_n{n}_{}", micro.name());
    let bytes_arg = |index| Arg::Bytes { index, offset: 0 };
    let mut kernel_params = vec![
        KernelParam::input("a"),
        KernelParam::input("w_packed"),
        KernelParam::input("requant"),
    ];
    let mut args = vec![Arg::input(0), bytes_arg(0), bytes_arg(1)];
    let mut bytes = vec![packed, records];
    let mut scratch_bytes = 0;
    if let Some(zw) = weight_zero_points {
        kernel_params.push(KernelParam::input("extras"));
        args.push(bytes_arg(2));
        bytes.push(epilogue_records(n, Some(zw), None).map_err(fail)?);
    }
    kernel_params.push(KernelParam::output("y"));
    args.push(Arg::output(0));
    if weight_zero_points.is_some() {
        kernel_params.push(KernelParam::output("row_sums"));
        args.push(Arg::Scratch { offset: 0 });
        scratch_bytes = 4 * m;
    }
    kernel_params.extend([
        KernelParam::size("m"),
        KernelParam::size("lda"),
        KernelParam::size("ldc"),
    ]);
    args.extend([Arg::Size(m), Arg::Size(k), Arg::Size(n)]);
    let spec = int8_spec(arch, op, choice.tile, kernel_params);
    let kernel = QGemmKernel::new(spec, micro, k, n);
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args)?],
        bytes,
        scratch_bytes,
        description: format!("int8 gemm {m}x{n}x{k} {} (zx {zx})", micro.name()),
        ..NodeLowering::default()
    })
}
