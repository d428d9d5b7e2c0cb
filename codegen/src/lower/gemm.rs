//! The f32 matrix-multiply micro-kernel, its operand packing, and the Gemm/MatMul lowering.
//!
//! One register-block generator ([`MicroKernel`]) computes `C = act(A · B + bias + R)` for one
//! column panel of `B`, `MR` rows of `A` at a time; the Gemm kernel ([`GemmKernel`]) and the
//! convolution kernel (`super::conv`) are loops around it. `B` is always a panel of `NR`
//! columns stored row after row ([`pack_b`], or packed at run time by the convolution):
//!
//! ```text
//! packed[p·k·NR + kk·NR + j] = B[kk, p·NR + j]   (0 where p·NR + j >= n)
//! ```
//!
//! so the inner loop reads `NR` consecutive floats per `kk`, and the last panel is
//! zero-padded to `NR` columns: every panel is computed as a full tile and only the store of
//! the last one is narrower. The packed length is `ceil(n / NR) · k · NR` ([`packed_len`]).
//! `A` is either a run-time row-major matrix (Gemm's A) or compile-time panels of `MR`
//! interleaved rows ([`pack_a`], convolution weights), which the inner loop reads as one
//! stream.
//!
//! ONNX Gemm's `alpha` and `beta` are folded at compile time (alpha into the packed `B`, beta
//! into the bias or the residual); `transB` is handled by [`pack_b_transposed`]; `transA` is
//! refused with a reason (no model we compile uses it).
//!
//! The register block is `MR` rows × `NR / 4` f32x4 accumulators (3 × 12 by default: nine
//! accumulators, three B vectors and one broadcast A value fit x86-64's sixteen xmm registers).
//! Rows left over when `m` is not a multiple of `MR` run one at a time with the same panel.
//! The `k` loop is unrolled [`DEFAULT_K_UNROLL`] times (one pointer update per unrolled step,
//! loads at immediate offsets); the sum of each element still runs in `k` order.

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
use super::node::{Arg, KernelCall, NodeLowering};
use super::vmath::FloatOps;
use crate::target::Arch;

/// f32 lanes per vector: Cranelift lowers 128-bit vectors only.
pub const LANES: u32 = 4;

/// The default register block: 3 rows × 12 columns (nine f32x4 accumulators).
pub const DEFAULT_TILE: Tile = Tile { rows: 3, cols: 12 };

/// How many `k` steps one iteration of the inner loop does.
pub const DEFAULT_K_UNROLL: u32 = 4;

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

/// Packs the row-major `a[m, k]` into row panels for [`ALayout::Panels`]: each full block of
/// `mr` rows starting at row `i` holds element `(i + r, kk)` at `i·k + kk·mr + r`; the
/// `m mod mr` rows left over stay row-major. Row block `i` therefore always starts at `i·k`
/// and the packed length is `m·k`.
pub fn pack_a(a: &[f32], m: usize, k: usize, mr: usize) -> Result<Vec<f32>, KernelError> {
    if mr == 0 || m.checked_mul(k) != Some(a.len()) {
        return Err(KernelError::Unsupported {
            kernel: "gemm A packing".to_string(),
            reason: format!(
                "A has {} elements, expected m·k = {m}·{k} (mr {mr})",
                a.len()
            ),
        });
    }
    let mut packed = a.to_vec();
    for block in (0..m / mr).map(|b| b * mr) {
        for kk in 0..k {
            for r in 0..mr {
                packed[block * k + kk * mr + r] = a[(block + r) * k + kk];
            }
        }
    }
    Ok(packed)
}

/// Where the bias of the epilogue is indexed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BiasKind {
    None,
    /// One value per row of C (a convolution's output channel).
    PerRow,
    /// One value per column of C (Gemm's `C[n]`).
    PerColumn,
}

/// What the register block does before its store: `act(acc + bias + residual)`, in that order
/// (the interpreter's FusedConv and Gemm order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileEpilogue {
    pub bias: BiasKind,
    /// A tensor of C's shape (same row stride) added after the bias.
    pub residual: bool,
    pub activation: Option<Activation>,
}

impl TileEpilogue {
    /// The symbol-name fragment: `_brow_res_relu`, empty for a bare product.
    pub fn name(&self) -> String {
        let mut name = String::new();
        match self.bias {
            BiasKind::None => {}
            BiasKind::PerRow => name.push_str("_brow"),
            BiasKind::PerColumn => name.push_str("_bias"),
        }
        if self.residual {
            name.push_str("_res");
        }
        if let Some(activation) = self.activation {
            name.push('_');
            name.push_str(&activation_name(activation));
        }
        name
    }
}

/// How the register block reads A.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ALayout {
    /// Row `i` at `a + i·lda` elements: a run-time operand.
    RowMajor,
    /// Compile-time panels from [`pack_a`] with the tile's row count.
    Panels,
}

/// The register-block code generator: `tile` (MR × NR), the A layout, the epilogue and the
/// unroll of the `k` loop. Everything here is baked into the code, so [`MicroKernel::name`]
/// spells all of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicroKernel {
    pub tile: Tile,
    pub a_layout: ALayout,
    pub epilogue: TileEpilogue,
    pub k_unroll: u32,
}

/// The CLIF values of one panel product. Strides are in elements.
#[derive(Clone, Copy)]
pub(crate) struct PanelOperands {
    /// A's row 0 (or its packed panels).
    pub a: Value,
    /// A's row stride (read for [`ALayout::RowMajor`] only).
    pub lda: Value,
    /// The packed B panel: row `kk` at `b + kk·NR`.
    pub b: Value,
    pub k: Value,
    pub m: Value,
    /// `C[0, first column of the panel]`; row `i` at `c + i·ldc`.
    pub c: Value,
    pub ldc: Value,
    /// `R[0, first column]` with C's row stride.
    pub residual: Option<Value>,
    /// Per row: `bias[0]`; per column: the bias of the panel's first column.
    pub bias: Option<Value>,
    /// `None` for a full panel; `Some(n)` stores only the first `n < NR` columns.
    pub columns: Option<Value>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl MicroKernel {
    /// Checks the tile: `cols` a multiple of 4 and the block fitting the vector registers.
    pub fn new(
        tile: Tile,
        a_layout: ALayout,
        epilogue: TileEpilogue,
        k_unroll: u32,
    ) -> Result<MicroKernel, String> {
        let vectors = tile.cols / LANES;
        if tile.rows == 0 || vectors == 0 || !tile.cols.is_multiple_of(LANES) {
            return Err(format!(
                "tile {}x{} is not rows x (multiple of 4)",
                tile.rows, tile.cols
            ));
        }
        let registers = tile.rows * vectors + vectors + 1;
        if registers > MAX_VECTOR_REGISTERS {
            return Err(format!(
                "tile {}x{} needs {registers} vector registers, more than {}",
                tile.rows, tile.cols, MAX_VECTOR_REGISTERS
            ));
        }
        if k_unroll == 0 || k_unroll > 8 {
            return Err(format!("k unroll {k_unroll} is not in 1..=8"));
        }
        Ok(MicroKernel {
            tile,
            a_layout,
            epilogue,
            k_unroll,
        })
    }

    /// `3x12` (unroll 1, row-major A), `3x12_pa_u4` (packed A, unroll 4), then the epilogue.
    pub fn name(&self) -> String {
        let mut name = format!("{}x{}", self.tile.rows, self.tile.cols);
        if self.a_layout == ALayout::Panels {
            name.push_str("_pa");
        }
        if self.k_unroll != 1 {
            name.push_str(&format!("_u{}", self.k_unroll));
        }
        name.push_str(&self.epilogue.name());
        name
    }

    pub fn nr(&self) -> u32 {
        self.tile.cols
    }

    fn vectors(&self) -> usize {
        (self.tile.cols / LANES) as usize
    }

    /// All rows of C against one panel: `MR` rows at a time, then single rows.
    pub(crate) fn emit_rows(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &PanelOperands,
    ) {
        let zero = b.ins().iconst(context.pointer, 0);
        let rows = self.tile.rows;
        let tail = counted_loop(b, context.pointer, zero, ops.m, i64::from(rows), |b, i| {
            self.block(b, context, ops, i, rows)
        });
        if rows > 1 {
            counted_loop(b, context.pointer, tail, ops.m, 1, |b, i| {
                self.block(b, context, ops, i, 1)
            });
        }
    }

    /// Rows `row..row + rows` of C: the register block, then the epilogue and the store.
    fn block(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &PanelOperands,
        row: Value,
        rows: u32,
    ) {
        let pointer = context.pointer;
        // One cursor per A row (row-major) or one for the whole panel; bytes per k step.
        let (a_starts, a_step): (Vec<Value>, i64) = match self.a_layout {
            ALayout::RowMajor => {
                let starts = (0..rows)
                    .map(|r| {
                        let index = b.ins().iadd_imm_s(row, i64::from(r));
                        let start = b.ins().imul(index, ops.lda);
                        f32_address(b, ops.a, start)
                    })
                    .collect();
                (starts, 4)
            }
            ALayout::Panels => {
                let start = b.ins().imul(row, ops.k);
                (vec![f32_address(b, ops.a, start)], i64::from(rows) * 4)
            }
        };
        let a_cursors: Vec<Variable> = a_starts
            .iter()
            .map(|&start| {
                let var = b.declare_var(pointer);
                b.def_var(var, start);
                var
            })
            .collect();
        let b_cursor = b.declare_var(pointer);
        b.def_var(b_cursor, ops.b);
        let zero = f32_constant(b, types::F32X4, 0.0);
        let accumulators: Vec<Variable> = (0..rows as usize * self.vectors())
            .map(|_| {
                let var = b.declare_var(types::F32X4);
                b.def_var(var, zero);
                var
            })
            .collect();
        let cursors = Cursors {
            a: &a_cursors,
            a_step,
            b: b_cursor,
            rows,
        };
        let start = b.ins().iconst(pointer, 0);
        let unroll = i64::from(self.k_unroll);
        let tail = counted_loop(b, pointer, start, ops.k, unroll, |b, _| {
            self.k_steps(b, context, &cursors, &accumulators, self.k_unroll)
        });
        if unroll > 1 {
            counted_loop(b, pointer, tail, ops.k, 1, |b, _| {
                self.k_steps(b, context, &cursors, &accumulators, 1)
            });
        }
        let sums: Vec<Value> = accumulators.iter().map(|&var| b.use_var(var)).collect();
        match ops.columns {
            None => self.store_full(b, context, ops, row, &sums),
            Some(columns) => self.store_edge(b, context, ops, row, columns, &sums),
        }
    }

    /// `steps` consecutive k steps: B rows, then for each A row a broadcast and the FMAs;
    /// the cursors advance once at the end.
    fn k_steps(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        cursors: &Cursors,
        accumulators: &[Variable],
        steps: u32,
    ) {
        let vector = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let vectors = self.vectors();
        let nr_bytes = self.nr() as i32 * 4;
        let a_bases: Vec<Value> = cursors.a.iter().map(|&var| b.use_var(var)).collect();
        let b_base = b.use_var(cursors.b);
        for u in 0..steps as i32 {
            let b_vectors: Vec<Value> = (0..vectors as i32)
                .map(|v| {
                    let offset = u * nr_bytes + v * 16;
                    b.ins().load(types::F32X4, flags(), b_base, offset)
                })
                .collect();
            for r in 0..cursors.rows as usize {
                let (base, offset) = match self.a_layout {
                    ALayout::RowMajor => (a_bases[r], u * 4),
                    ALayout::Panels => (a_bases[0], (u * cursors.rows as i32 + r as i32) * 4),
                };
                let scalar = b.ins().load(types::F32, flags(), base, offset);
                let broadcast = b.ins().splat(types::F32X4, scalar);
                let last_row = r + 1 == cursors.rows as usize;
                for (v, &b_vector) in b_vectors.iter().enumerate() {
                    let var = accumulators[r * vectors + v];
                    let acc = b.use_var(var);
                    // x86's FMA overwrites its first operand: make that a value used for
                    // the last time (the B vectors in the last row) to save register copies.
                    let (x, y) = if last_row {
                        (b_vector, broadcast)
                    } else {
                        (broadcast, b_vector)
                    };
                    let sum = vector.mul_add(b, x, y, acc);
                    b.def_var(var, sum);
                }
            }
        }
        for (&var, &base) in cursors.a.iter().zip(&a_bases) {
            let next = b.ins().iadd_imm_s(base, cursors.a_step * i64::from(steps));
            b.def_var(var, next);
        }
        let next = b
            .ins()
            .iadd_imm_s(b_base, i64::from(nr_bytes) * i64::from(steps));
        b.def_var(cursors.b, next);
    }

    /// `x + bias + residual`, then the activation, on an f32 or f32x4 value.
    fn finish(
        &self,
        ops: &FloatOps,
        b: &mut FunctionBuilder,
        x: Value,
        bias: Option<Value>,
        residual: Option<Value>,
    ) -> Value {
        let x = match bias {
            Some(bias) => b.ins().fadd(x, bias),
            None => x,
        };
        let x = match residual {
            Some(residual) => b.ins().fadd(x, residual),
            None => x,
        };
        match self.epilogue.activation {
            Some(activation) => apply_activation(ops, b, activation, x),
            None => x,
        }
    }

    /// `base + (row + r)·stride` elements.
    fn row_address(
        b: &mut FunctionBuilder,
        base: Value,
        stride: Value,
        row: Value,
        r: usize,
    ) -> Value {
        let index = b.ins().iadd_imm_s(row, r as i64);
        let start = b.ins().imul(index, stride);
        f32_address(b, base, start)
    }

    /// The bias of row `row + r`, loaded as an f32.
    fn row_bias(b: &mut FunctionBuilder, bias: Value, row: Value, r: usize) -> Value {
        let index = b.ins().iadd_imm_s(row, r as i64);
        let address = f32_address(b, bias, index);
        b.ins().load(types::F32, flags(), address, 0)
    }

    /// A full tile: epilogue on vectors, vector stores.
    fn store_full(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &PanelOperands,
        row: Value,
        sums: &[Value],
    ) {
        let vector = FloatOps {
            ty: types::F32X4,
            fma: context.fma,
        };
        let vectors = self.vectors();
        let column_bias: Vec<Option<Value>> = (0..vectors)
            .map(|v| match (self.epilogue.bias, ops.bias) {
                (BiasKind::PerColumn, Some(bias)) => {
                    Some(b.ins().load(types::F32X4, flags(), bias, (v * 16) as i32))
                }
                _ => None,
            })
            .collect();
        for (r, chunk) in sums.chunks(vectors).enumerate() {
            let bias = match (self.epilogue.bias, ops.bias) {
                (BiasKind::PerRow, Some(bias)) => {
                    let scalar = Self::row_bias(b, bias, row, r);
                    vec![Some(b.ins().splat(types::F32X4, scalar)); vectors]
                }
                _ => column_bias.clone(),
            };
            let c_row = Self::row_address(b, ops.c, ops.ldc, row, r);
            let r_row = ops
                .residual
                .map(|residual| Self::row_address(b, residual, ops.ldc, row, r));
            for (v, &sum) in chunk.iter().enumerate() {
                let offset = (v * 16) as i32;
                let residual = r_row.map(|base| b.ins().load(types::F32X4, flags(), base, offset));
                let value = self.finish(&vector, b, sum, bias[v], residual);
                b.ins().store(flags(), value, c_row, offset);
            }
        }
    }

    /// A narrower panel: the tile goes through a stack buffer and its first `columns` columns
    /// are finished and stored one element at a time.
    fn store_edge(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &PanelOperands,
        row: Value,
        columns: Value,
        sums: &[Value],
    ) {
        let scalar = FloatOps {
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
        let zero = b.ins().iconst(context.pointer, 0);
        for r in 0..sums.len() / self.vectors() {
            let c_row = Self::row_address(b, ops.c, ops.ldc, row, r);
            let r_row = ops
                .residual
                .map(|residual| Self::row_address(b, residual, ops.ldc, row, r));
            let row_bias = match (self.epilogue.bias, ops.bias) {
                (BiasKind::PerRow, Some(bias)) => Some(Self::row_bias(b, bias, row, r)),
                _ => None,
            };
            let tile_row = b.ins().iadd_imm_s(tile, (r * nr * 4) as i64);
            counted_loop(b, context.pointer, zero, columns, 1, |b, j| {
                let source = f32_address(b, tile_row, j);
                let sum = b.ins().load(types::F32, flags(), source, 0);
                let bias = match (self.epilogue.bias, ops.bias) {
                    (BiasKind::PerColumn, Some(bias)) => {
                        let address = f32_address(b, bias, j);
                        Some(b.ins().load(types::F32, flags(), address, 0))
                    }
                    _ => row_bias,
                };
                let residual = r_row.map(|base| {
                    let address = f32_address(b, base, j);
                    b.ins().load(types::F32, flags(), address, 0)
                });
                let value = self.finish(&scalar, b, sum, bias, residual);
                let target = f32_address(b, c_row, j);
                b.ins().store(flags(), value, target, 0);
            });
        }
    }
}

/// The loop-carried pointers of one register block.
struct Cursors<'a> {
    a: &'a [Variable],
    /// Bytes each A cursor advances per k step.
    a_step: i64,
    b: Variable,
    rows: u32,
}

/// `C = act(A · B_packed + bias + R)` with C signature
/// `void k(const float *a, const float *b_packed, [const float *bias,] [const float *r,]
///         float *c, size_t m, size_t n, size_t k, size_t lda, size_t ldc)`:
/// `a` row `i` starts at `a + i·lda`, `c` row `i` at `c + i·ldc` (element strides, so a
/// kernel can read a row-strided view and write into a slice of a wider output such as a
/// Concat's); `bias` has `n` elements and `r` is `m × n` with row stride `ldc`, each present
/// only when the spec says so.
#[derive(Clone, Debug)]
pub struct GemmKernel {
    spec: KernelSpec,
    micro: MicroKernel,
}

/// The kernel's arguments as CLIF values.
#[derive(Clone, Copy)]
struct GemmArgs {
    a: Value,
    b: Value,
    bias: Option<Value>,
    residual: Option<Value>,
    c: Value,
    m: Value,
    n: Value,
    k: Value,
    lda: Value,
    ldc: Value,
}

impl GemmKernel {
    /// The kernel for `tile` (`rows` × `cols`, `cols` a multiple of 4), with or without a
    /// per-column bias and with an optional fused activation; `k` unrolled
    /// [`DEFAULT_K_UNROLL`] times.
    pub fn new(
        arch: Arch,
        tile: Tile,
        bias: bool,
        epilogue: Option<Activation>,
    ) -> Result<GemmKernel, KernelError> {
        let epilogue = TileEpilogue {
            bias: if bias {
                BiasKind::PerColumn
            } else {
                BiasKind::None
            },
            residual: false,
            activation: epilogue,
        };
        GemmKernel::with_epilogue(arch, tile, epilogue, DEFAULT_K_UNROLL)
    }

    /// The kernel with any epilogue (a per-row bias is refused: Gemm's bias is per column).
    pub fn with_epilogue(
        arch: Arch,
        tile: Tile,
        epilogue: TileEpilogue,
        k_unroll: u32,
    ) -> Result<GemmKernel, KernelError> {
        let micro = MicroKernel::new(tile, ALayout::RowMajor, epilogue, k_unroll);
        let op = format!(
            "gemm_{}",
            micro
                .as_ref()
                .map_or_else(|_| "invalid".to_string(), MicroKernel::name)
        );
        let name = KernelSpec::symbol(arch, Accumulator::F32, LANES, &op);
        let micro = micro.map_err(|reason| KernelError::Unsupported {
            kernel: name.clone(),
            reason,
        })?;
        if epilogue.bias == BiasKind::PerRow {
            return Err(KernelError::Unsupported {
                kernel: name,
                reason: "the Gemm kernel takes a per-column bias".to_string(),
            });
        }
        let mut params = vec![KernelParam::input("a"), KernelParam::input("b_packed")];
        if epilogue.bias == BiasKind::PerColumn {
            params.push(KernelParam::input("bias"));
        }
        if epilogue.residual {
            params.push(KernelParam::input("residual"));
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
                epilogue: epilogue.activation,
                params,
            },
            micro,
        })
    }

    /// Packs row-major `b[k, n]` for this kernel's panel width.
    pub fn pack_b(&self, b: &[f32], k: usize, n: usize) -> Result<Vec<f32>, KernelError> {
        pack_b(b, k, n, self.micro.nr() as usize)
    }

    pub fn has_bias(&self) -> bool {
        self.micro.epilogue.bias != BiasKind::None
    }

    pub fn has_residual(&self) -> bool {
        self.micro.epilogue.residual
    }

    pub fn micro_kernel(&self) -> &MicroKernel {
        &self.micro
    }

    fn args(&self, params: &[Value]) -> Result<GemmArgs, KernelError> {
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
        let mut next = params.iter().copied();
        let mut take = || next.next().unwrap_or(params[0]);
        let (a, b) = (take(), take());
        let bias = self.has_bias().then(&mut take);
        let residual = self.has_residual().then(&mut take);
        Ok(GemmArgs {
            a,
            b,
            bias,
            residual,
            c: take(),
            m: take(),
            n: take(),
            k: take(),
            lda: take(),
            ldc: take(),
        })
    }

    /// The operands of the panel whose first column is `column`.
    fn panel(
        &self,
        b: &mut FunctionBuilder,
        args: &GemmArgs,
        column: Value,
        columns: Option<Value>,
    ) -> PanelOperands {
        // Panel data starts at b + column·k floats (column = p·NR).
        let offset = b.ins().imul(column, args.k);
        PanelOperands {
            a: args.a,
            lda: args.lda,
            b: f32_address(b, args.b, offset),
            k: args.k,
            m: args.m,
            c: f32_address(b, args.c, column),
            ldc: args.ldc,
            residual: args.residual.map(|r| f32_address(b, r, column)),
            bias: args.bias.map(|bias| f32_address(b, bias, column)),
            columns,
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
        let nr = i64::from(self.micro.nr());
        let edge_column = counted_loop(b, context.pointer, zero, args.n, nr, |b, column| {
            let operands = self.panel(b, &args, column, None);
            self.micro.emit_rows(b, context, &operands);
        });
        let edge = b.create_block();
        let done = b.create_block();
        let has_edge = b.ins().icmp(IntCC::UnsignedLessThan, edge_column, args.n);
        b.ins().brif(has_edge, edge, &[], done, &[]);

        b.switch_to_block(edge);
        let columns = b.ins().isub(args.n, edge_column);
        let operands = self.panel(b, &args, edge_column, Some(columns));
        self.micro.emit_rows(b, context, &operands);
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
/// Gemm; MatMul's leading dims are rows, a 1-D A is one row), output 0 is Y; `c` is Gemm's
/// constant C with its dims. `alpha` is folded into the packed B; `beta·C` becomes a
/// per-column bias when C is constant along rows (scalar, `[n]`, `[1, n]`), otherwise a
/// residual of the full `[m, n]` shape.
pub fn lower_gemm(
    arch: Arch,
    attrs: &qcc_ir::GemmAttrs,
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    c: Option<(&[f32], &[usize])>,
    activation: Option<Activation>,
) -> Result<NodeLowering, KernelError> {
    let unsupported = |reason: String| KernelError::Unsupported {
        kernel: "Gemm".to_string(),
        reason,
    };
    if attrs.trans_a {
        return Err(unsupported(
            "transA = 1 is not compiled (transpose A before the product)".to_string(),
        ));
    }
    let (k, m) = match a_dims.split_last() {
        Some((&k, rows)) => (k, rows.iter().product::<usize>()),
        None => return Err(unsupported("A is a scalar".to_string())),
    };
    let (b_k, n) = match (b_dims, attrs.trans_b) {
        (&[rows, cols], false) => (rows, cols),
        (&[rows, cols], true) => (cols, rows),
        _ => return Err(unsupported(format!("B {b_dims:?} is not 2-D"))),
    };
    if b_k != k || b.len() != k * n {
        return Err(unsupported(format!(
            "A {a_dims:?} and B {b_dims:?} (transB {}, {} values) do not multiply",
            attrs.trans_b,
            b.len()
        )));
    }
    let tile = DEFAULT_TILE;
    let nr = tile.cols as usize;
    let scaled: Vec<f32>;
    let b = if attrs.alpha == 1.0 {
        b
    } else {
        scaled = b.iter().map(|&v| attrs.alpha * v).collect();
        &scaled
    };
    let packed_b = if attrs.trans_b {
        pack_b_transposed(b, k, n, nr)?
    } else {
        pack_b(b, k, n, nr)?
    };
    let mut packed = vec![packed_b];
    let mut epilogue = TileEpilogue {
        bias: BiasKind::None,
        residual: false,
        activation,
    };
    if let Some((c, c_dims)) = c {
        let (bias, full) = broadcast_c(c, c_dims, m, n, attrs.beta).map_err(unsupported)?;
        if full {
            epilogue.residual = true;
        } else {
            epilogue.bias = BiasKind::PerColumn;
        }
        packed.push(bias);
    }
    let kernel = GemmKernel::with_epilogue(arch, tile, epilogue, DEFAULT_K_UNROLL)?;
    let mut args = vec![Arg::input(0), Arg::packed(0)];
    if packed.len() > 1 {
        args.push(Arg::packed(1));
    }
    args.extend([
        Arg::output(0),
        Arg::Size(m),
        Arg::Size(n),
        Arg::Size(k),
        Arg::Size(k),
        Arg::Size(n),
    ]);
    let description = format!("gemm {}x{}x{} {}", m, n, k, kernel.micro.name());
    Ok(NodeLowering {
        calls: vec![KernelCall::new(std::sync::Arc::new(kernel), args)?],
        packed,
        description,
        ..NodeLowering::default()
    })
}

/// `beta·C` for a product of `m × n`: `(values, false)` with `n` values when C is constant
/// along rows (a per-column bias), else `(values, true)` with the full `m × n` broadcast.
fn broadcast_c(
    c: &[f32],
    c_dims: &[usize],
    m: usize,
    n: usize,
    beta: f32,
) -> Result<(Vec<f32>, bool), String> {
    let (rows, cols) = match *c_dims {
        [] => (1, 1),
        [cols] => (1, cols),
        [rows, cols] => (rows, cols),
        _ => return Err(format!("C {c_dims:?} is not a matrix")),
    };
    if rows * cols != c.len() {
        return Err(format!("C {c_dims:?} has {} values", c.len()));
    }
    if !(rows == 1 || rows == m) || !(cols == 1 || cols == n) {
        return Err(format!("C {c_dims:?} does not broadcast to [{m}, {n}]"));
    }
    let value = |i: usize, j: usize| {
        let (i, j) = (if rows == 1 { 0 } else { i }, if cols == 1 { 0 } else { j });
        beta * c[i * cols + j]
    };
    if rows == 1 || m == 1 {
        Ok(((0..n).map(|j| value(0, j)).collect(), false))
    } else {
        let full = (0..m).flat_map(|i| (0..n).map(move |j| (i, j)));
        Ok((full.map(|(i, j)| value(i, j)).collect(), true))
    }
}
