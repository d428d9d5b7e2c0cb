//! The f32 matrix-multiply micro-kernel and its weight packing.
//!
//! `C[m, n] = act(A[m, k] · B[k, n] + bias[n])`, where `B` is a weight known at compile time
//! and packed once by [`pack_b`] into column panels of the tile width `NR`:
//!
//! ```text
//! packed[p·k·NR + kk·NR + j] = B[kk, p·NR + j]   (0 where p·NR + j >= n)
//! ```
//!
//! Panel `p` holds columns `p·NR .. p·NR+NR` row after row, so the inner loop reads `NR`
//! consecutive floats per `kk`, and the last panel is zero-padded to `NR` columns: every panel
//! is computed as a full tile and only the store of the last one is narrower. The packed
//! length is `ceil(n / NR) · k · NR` ([`packed_len`]).
//!
//! ONNX Gemm's `alpha` and `beta` are folded at compile time (alpha into the packed `B`, beta
//! into `bias`); `transB` is handled by [`pack_b_transposed`]; `transA` and a full `[m, n]` C
//! are not this kernel's job (a transpose before it, a residual-add epilogue later).
//!
//! The register block is `MR` rows × `NR / 4` f32x4 accumulators (3 × 12 by default: nine
//! accumulators, three B vectors and one broadcast A value fit x86-64's sixteen xmm registers).
//! Rows left over when `m` is not a multiple of `MR` run one at a time with the same panel.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use qcc_ir::Activation;

use super::elementwise::{activation_name, apply_activation};
use super::kernel::{
    counted_loop, f32_address, f32_constant, Accumulator, Kernel, KernelContext, KernelError,
    KernelParam, KernelSpec, Tile,
};
use super::vmath::FloatOps;
use crate::target::Arch;

/// f32 lanes per vector: Cranelift lowers 128-bit vectors only.
pub const LANES: u32 = 4;

/// The default register block: 3 rows × 12 columns (nine f32x4 accumulators).
pub const DEFAULT_TILE: Tile = Tile { rows: 3, cols: 12 };

/// Accumulators plus B vectors plus the broadcast A value must fit the 16 vector registers
/// Cranelift allocates on x86-64, or the inner loop spills.
const MAX_VECTOR_REGISTERS: u32 = 16;

/// Floats in `B` packed for panels of width `nr`: `ceil(n / nr) · k · nr`.
pub fn packed_len(k: usize, n: usize, nr: usize) -> usize {
    n.div_ceil(nr.max(1)) * k * nr
}

/// Packs the row-major `b[k, n]` into column panels of width `nr` (layout in the module docs).
pub fn pack_b(b: &[f32], k: usize, n: usize, nr: usize) -> Result<Vec<f32>, KernelError> {
    check_pack(b.len(), k, n, nr, "B")?;
    Ok(pack_with(k, n, nr, |kk, j| b[kk * n + j]))
}

/// Packs `b_t[n, k]` (ONNX Gemm with `transB = 1`, i.e. `B = b_tᵀ`) into the same layout as
/// [`pack_b`].
pub fn pack_b_transposed(
    b_t: &[f32],
    k: usize,
    n: usize,
    nr: usize,
) -> Result<Vec<f32>, KernelError> {
    check_pack(b_t.len(), k, n, nr, "Bᵀ")?;
    Ok(pack_with(k, n, nr, |kk, j| b_t[j * k + kk]))
}

fn check_pack(len: usize, k: usize, n: usize, nr: usize, what: &str) -> Result<(), KernelError> {
    let unsupported = |reason: String| KernelError::Unsupported {
        kernel: "gemm B packing".to_string(),
        reason,
    };
    if nr == 0 || !nr.is_multiple_of(LANES as usize) {
        return Err(unsupported(format!(
            "panel width {nr} is not a positive multiple of {LANES}"
        )));
    }
    if k.checked_mul(n) != Some(len) {
        return Err(unsupported(format!(
            "{what} has {len} elements, expected k·n = {k}·{n}"
        )));
    }
    Ok(())
}

fn pack_with(k: usize, n: usize, nr: usize, element: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut packed = vec![0.0; packed_len(k, n, nr)];
    for (p, panel) in packed.chunks_exact_mut((k * nr).max(1)).enumerate() {
        let columns = (n - p * nr).min(nr);
        for kk in 0..k {
            for j in 0..columns {
                panel[kk * nr + j] = element(kk, p * nr + j);
            }
        }
    }
    packed
}

/// `C = act(A · B_packed + bias)` with C signature
/// `void k(const float *a, const float *b_packed, [const float *bias,] float *c,
///         size_t m, size_t n, size_t k, size_t lda, size_t ldc)`:
/// `a` row `i` starts at `a + i·lda`, `c` row `i` at `c + i·ldc` (element strides, so a
/// kernel can read a row-strided view and write into a slice of a wider output such as a
/// Concat's); `bias` has `n` elements and is present only when the spec says so.
#[derive(Clone, Debug)]
pub struct GemmKernel {
    spec: KernelSpec,
    bias: bool,
}

impl GemmKernel {
    /// The kernel for `tile` (`rows` × `cols`, `cols` a multiple of 4), with or without a bias
    /// and with an optional fused activation.
    pub fn new(
        arch: Arch,
        tile: Tile,
        bias: bool,
        epilogue: Option<Activation>,
    ) -> Result<GemmKernel, KernelError> {
        let mut op = format!("gemm_{}x{}", tile.rows, tile.cols);
        if bias {
            op.push_str("_bias");
        }
        if let Some(activation) = epilogue {
            op.push('_');
            op.push_str(&activation_name(activation));
        }
        let name = KernelSpec::symbol(arch, Accumulator::F32, LANES, &op);
        let vectors = tile.cols / LANES;
        let registers = tile.rows * vectors + vectors + 1;
        if tile.rows == 0 || vectors == 0 || !tile.cols.is_multiple_of(LANES) {
            return Err(KernelError::Unsupported {
                kernel: name,
                reason: format!(
                    "tile {}x{} is not rows x (multiple of 4)",
                    tile.rows, tile.cols
                ),
            });
        }
        if registers > MAX_VECTOR_REGISTERS {
            return Err(KernelError::Unsupported {
                kernel: name,
                reason: format!(
                    "tile {}x{} needs {registers} vector registers, more than {}",
                    tile.rows, tile.cols, MAX_VECTOR_REGISTERS
                ),
            });
        }
        let mut params = vec![KernelParam::input("a"), KernelParam::input("b_packed")];
        if bias {
            params.push(KernelParam::input("bias"));
        }
        params.extend([
            KernelParam::output("c"),
            KernelParam::size("m"),
            KernelParam::size("n"),
            KernelParam::size("k"),
            KernelParam::size("lda"),
            KernelParam::size("ldc"),
        ]);
        Ok(GemmKernel {
            spec: KernelSpec {
                name,
                arch,
                op,
                accumulator: Accumulator::F32,
                lanes: LANES,
                tile,
                epilogue,
                params,
            },
            bias,
        })
    }

    /// Packs row-major `b[k, n]` for this kernel's panel width.
    pub fn pack_b(&self, b: &[f32], k: usize, n: usize) -> Result<Vec<f32>, KernelError> {
        pack_b(b, k, n, self.nr() as usize)
    }

    pub fn has_bias(&self) -> bool {
        self.bias
    }

    fn nr(&self) -> u32 {
        self.spec.tile.cols
    }

    fn vectors(&self) -> u32 {
        self.spec.tile.cols / LANES
    }
}

/// The kernel's arguments as CLIF values.
#[derive(Clone, Copy)]
struct Args {
    a: Value,
    b: Value,
    bias: Option<Value>,
    c: Value,
    m: Value,
    n: Value,
    k: Value,
    lda: Value,
    ldc: Value,
}

/// One panel of B being multiplied: its first column and packed data.
#[derive(Clone, Copy)]
struct Panel {
    column: Value,
    data: Value,
    /// Whether all `NR` columns exist in C (otherwise the store is cut at `n`).
    full: bool,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl GemmKernel {
    fn args(&self, params: &[Value]) -> Result<Args, KernelError> {
        let arity = || KernelError::Unsupported {
            kernel: self.spec.name.clone(),
            reason: format!(
                "expected {} parameters, got {}",
                self.spec.params.len(),
                params.len()
            ),
        };
        let (bias, rest) = match (self.bias, params) {
            (true, [a, b, bias, rest @ ..]) => (Some(*bias), (*a, *b, rest)),
            (false, [a, b, rest @ ..]) => (None, (*a, *b, rest)),
            _ => return Err(arity()),
        };
        let (a, b, rest) = rest;
        let [c, m, n, k, lda, ldc] = rest else {
            return Err(arity());
        };
        Ok(Args {
            a,
            b,
            bias,
            c: *c,
            m: *m,
            n: *n,
            k: *k,
            lda: *lda,
            ldc: *ldc,
        })
    }

    /// All row blocks against one panel: `MR` rows at a time, then single rows.
    fn panel(&self, b: &mut FunctionBuilder, context: &KernelContext, args: &Args, panel: Panel) {
        let zero = b.ins().iconst(context.pointer, 0);
        let rows = i64::from(self.spec.tile.rows);
        let tail = counted_loop(b, context.pointer, zero, args.m, rows, |b, i| {
            self.block(b, context, args, panel, i, rows as u32)
        });
        if rows > 1 {
            counted_loop(b, context.pointer, tail, args.m, 1, |b, i| {
                self.block(b, context, args, panel, i, 1)
            });
        }
    }

    /// Rows `row..row + rows` of C against `panel`: the register block, then the epilogue.
    fn block(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        args: &Args,
        panel: Panel,
        row: Value,
        rows: u32,
    ) {
        let vector = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let vectors = self.vectors();
        let a_rows: Vec<Value> = (0..rows)
            .map(|r| {
                let index = b.ins().iadd_imm_s(row, i64::from(r));
                let start = b.ins().imul(index, args.lda);
                f32_address(b, args.a, start)
            })
            .collect();
        let zero = f32_constant(b, types::F32X4, 0.0);
        let accumulators: Vec<Variable> = (0..rows * vectors)
            .map(|_| {
                let var = b.declare_var(types::F32X4);
                b.def_var(var, zero);
                var
            })
            .collect();
        let b_cursor = b.declare_var(context.pointer);
        b.def_var(b_cursor, panel.data);
        let start = b.ins().iconst(context.pointer, 0);
        let panel_bytes = i64::from(self.nr() * 4);
        counted_loop(b, context.pointer, start, args.k, 1, |b, kk| {
            let b_row = b.use_var(b_cursor);
            let b_vectors: Vec<Value> = (0..vectors)
                .map(|v| b.ins().load(types::F32X4, flags(), b_row, (v * 16) as i32))
                .collect();
            let a_offset = b.ins().ishl_imm_u(kk, 2);
            for (r, &a_row) in a_rows.iter().enumerate() {
                let address = b.ins().iadd(a_row, a_offset);
                let scalar = b.ins().load(types::F32, flags(), address, 0);
                let broadcast = b.ins().splat(types::F32X4, scalar);
                for (v, &b_vector) in b_vectors.iter().enumerate() {
                    let var = accumulators[r * vectors as usize + v];
                    let acc = b.use_var(var);
                    let sum = vector.mul_add(b, broadcast, b_vector, acc);
                    b.def_var(var, sum);
                }
            }
            let next = b.ins().iadd_imm_s(b_row, panel_bytes);
            b.def_var(b_cursor, next);
        });
        let sums: Vec<Value> = accumulators.iter().map(|&var| b.use_var(var)).collect();
        if panel.full {
            self.store_full(b, context, args, panel, row, &sums);
        } else {
            self.store_edge(b, context, args, panel, row, &sums);
        }
    }

    /// `bias` then the activation, on an f32 or f32x4 value.
    fn epilogue(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        x: Value,
        bias: Option<Value>,
    ) -> Value {
        let x = match bias {
            Some(bias) => b.ins().fadd(x, bias),
            None => x,
        };
        match self.spec.epilogue {
            Some(activation) => apply_activation(ops, b, activation, x),
            None => x,
        }
    }

    fn c_row(&self, b: &mut FunctionBuilder, args: &Args, row: Value, r: usize) -> Value {
        let index = b.ins().iadd_imm_s(row, r as i64);
        let start = b.ins().imul(index, args.ldc);
        f32_address(b, args.c, start)
    }

    /// A full tile: vector bias, activation and stores.
    fn store_full(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        args: &Args,
        panel: Panel,
        row: Value,
        sums: &[Value],
    ) {
        let ops = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let vectors = self.vectors() as usize;
        let bias: Vec<Option<Value>> = (0..vectors)
            .map(|v| {
                args.bias.map(|bias| {
                    let base = f32_address(b, bias, panel.column);
                    b.ins().load(types::F32X4, flags(), base, (v * 16) as i32)
                })
            })
            .collect();
        for (r, chunk) in sums.chunks(vectors).enumerate() {
            let c_row = self.c_row(b, args, row, r);
            let base = f32_address(b, c_row, panel.column);
            for (v, &sum) in chunk.iter().enumerate() {
                let value = self.epilogue(&ops, b, sum, bias[v]);
                b.ins().store(flags(), value, base, (v * 16) as i32);
            }
        }
    }

    /// The last, narrower panel: the tile goes through a stack buffer and its first
    /// `n - column` columns are finished and stored one element at a time.
    fn store_edge(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        args: &Args,
        panel: Panel,
        row: Value,
        sums: &[Value],
    ) {
        let ops = FloatOps {
            ty: types::F32,
            fma: context.fma,
        };
        let nr = self.nr() as usize;
        let bytes = (sums.len() * 16) as u32;
        let slot =
            b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4));
        let tile = b.ins().stack_addr(context.pointer, slot, 0);
        for (i, &sum) in sums.iter().enumerate() {
            b.ins().store(flags(), sum, tile, (i * 16) as i32);
        }
        let columns = b.ins().isub(args.n, panel.column);
        let zero = b.ins().iconst(context.pointer, 0);
        for r in 0..sums.len() / self.vectors() as usize {
            let c_row = self.c_row(b, args, row, r);
            let c_start = f32_address(b, c_row, panel.column);
            let tile_row = b.ins().iadd_imm_s(tile, (r * nr * 4) as i64);
            counted_loop(b, context.pointer, zero, columns, 1, |b, j| {
                let source = f32_address(b, tile_row, j);
                let sum = b.ins().load(types::F32, flags(), source, 0);
                let bias = args.bias.map(|bias| {
                    let base = f32_address(b, bias, panel.column);
                    let address = f32_address(b, base, j);
                    b.ins().load(types::F32, flags(), address, 0)
                });
                let value = self.epilogue(&ops, b, sum, bias);
                let target = f32_address(b, c_start, j);
                b.ins().store(flags(), value, target, 0);
            });
        }
    }
}

impl Kernel for GemmKernel {
    fn spec(&self) -> &KernelSpec {
        &self.spec
    }

    fn build_body(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError> {
        let args = self.args(params)?;
        let zero = b.ins().iconst(context.pointer, 0);
        let nr = i64::from(self.nr());
        // Full panels: panel data starts at b + column·k floats (column = p·NR).
        let edge_column = counted_loop(b, context.pointer, zero, args.n, nr, |b, column| {
            let offset = b.ins().imul(column, args.k);
            let data = f32_address(b, args.b, offset);
            let panel = Panel {
                column,
                data,
                full: true,
            };
            self.panel(b, context, &args, panel);
        });
        let edge = b.create_block();
        let done = b.create_block();
        let has_edge = b.ins().icmp(IntCC::UnsignedLessThan, edge_column, args.n);
        b.ins().brif(has_edge, edge, &[], done, &[]);

        b.switch_to_block(edge);
        let offset = b.ins().imul(edge_column, args.k);
        let data = f32_address(b, args.b, offset);
        let panel = Panel {
            column: edge_column,
            data,
            full: false,
        };
        self.panel(b, context, &args, panel);
        b.ins().jump(done, &[]);

        b.switch_to_block(done);
        b.ins().return_(&[]);
        Ok(())
    }
}

#[cfg(test)]
#[path = "gemm_tests.rs"]
mod tests;

/// Lowers Gemm, FusedGemm or MatMul whose B is a constant: input 0 is A (`a_dims`, rank 2 for
/// Gemm; MatMul's leading dims are rows), output 0 is Y; `c` is Gemm's constant C with its
/// dims. STUB: being written.
pub fn lower_gemm(
    arch: Arch,
    attrs: &qcc_ir::GemmAttrs,
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    c: Option<(&[f32], &[usize])>,
    activation: Option<Activation>,
) -> Result<super::node::NodeLowering, KernelError> {
    let _ = (arch, attrs, a_dims, b, b_dims, c, activation);
    Err(KernelError::Unsupported {
        kernel: "Gemm".to_string(),
        reason: "not implemented yet".to_string(),
    })
}
