//! The f32 register-block generator shared by the GEMM and convolution kernels.
//!
//! [`MicroKernel`] emits the code that computes one `MR × NR` tile of
//! `C = act(A · B_panel + bias + R)`: `B` is a packed panel of `NR` columns (see
//! [`super::gemm`] for the layout), `A` either run-time row-major rows or compile-time
//! panels of `MR` interleaved rows ([`super::gemm::pack_a`]). It is the replaceable unit a
//! target-specific micro-kernel (e.g. AVX-512, emitted as machine code) stands in for: its
//! name spells the tile, A layout, epilogue and `k` unroll.

use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use qcc_ir::Activation;

use super::elementwise::{activation_name, apply_activation};
use super::kernel::{counted_loop, f32_address, f32_constant, flags, KernelContext, Tile};
use super::vmath::FloatOps;

/// f32 lanes per vector: Cranelift lowers 128-bit vectors only.
pub const LANES: u32 = 4;

/// The default register block: 3 rows × 12 columns (nine f32x4 accumulators).
pub const DEFAULT_TILE: Tile = Tile { rows: 3, cols: 12 };

/// How many `k` steps one iteration of the inner loop does.
pub const DEFAULT_K_UNROLL: u32 = 4;

/// Accumulators plus B vectors plus the broadcast A value must fit the 16 vector registers
/// Cranelift allocates on x86-64, or the inner loop spills.
const MAX_VECTOR_REGISTERS: u32 = 16;

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
