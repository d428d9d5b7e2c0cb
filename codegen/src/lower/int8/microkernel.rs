//! The int8 register block: `MR × NR` i32 accumulators of u8 × s8 dot products of four, then
//! the epilogue ([`BlockEpilogue`]): the fixed-point requantization and the u8/i8 store
//! (static int8), or the float scaling and the f32 store (dynamic quantization,
//! `super::dynamic_epilogue`). The dot-product loop is the same for both.
//!
//! One lane of an i32x4 accumulator sums the products of four consecutive `k` values: both
//! operands hold, per lane, four bytes of four consecutive `k` (the dot-product layout). Rows
//! broadcast one 4-byte group (a splatted i32) against `NR / 4` column vectors of a packed
//! panel (`NR` columns × 4 bytes per group of four `k`):
//!
//! - [`RowOperand::WeightPanels`] (convolution): rows are output channels, their s8 weights
//!   packed at compile time into row panels; columns are u8 im2col pixels. Requantization is
//!   per row and runs on vectors.
//! - [`RowOperand::ActivationRows`] (Gemm): rows are u8 activation rows read in place;
//!   columns are output features, their s8 weights packed at compile time into column
//!   panels. Requantization is per column and runs one element at a time.
//!
//! [`DotProduct::Vnni`] emits the widening tree Cranelift folds into one `vpdpbusd` (see
//! [`QMicroKernel::dot`] for the operand order the fold needs). [`DotProduct::Widening`] is
//! the fallback for x86 without VNNI: both operands widened to i16 and multiplied pairwise
//! into i32 (`pmaddwd`; each pair sums at most 2·128·255, never near 16 or 32 bits), then
//! the pairs added in i32. No 16-bit saturating sum (`pmaddubsw`) is ever used.
//!
//! [`DotProduct::Sdot`] (aarch64 with the dot-product extension, without i8mm): Cranelift
//! folds the tree into `sdot` only when both operands are signed, so every u8 activation
//! enters flipped to s8, `x' = x − 128` (`x ^ 0x80`), and the lowerings add `128·Σw` back
//! through the zero point they compensate (`zx − 128`, see
//! [`DotProduct::activation_offset`]). Activations a kernel packs itself (the convolution's
//! im2col panel, the depthwise scratch plane) are flipped once while packing
//! ([`DotProduct::flip`]); activation rows read in place (the matrix product) once per
//! broadcast, never per product. [`QMicroKernel::dot`] takes activations already flipped.

use cranelift_codegen::ir::{
    types, ConstantData, Endianness, Immediate, InstBuilder, MemFlagsData, StackSlotData,
    StackSlotKind, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::dynamic_epilogue::{FloatOperands, FloatStage};
use super::requant::{OutputStage, RECORD_BYTES};
use super::residual::{Extras, EXTRA_RECORD_BYTES};
use crate::lower::kernel::{counted_loop, flags, KernelContext, Tile};

/// i32 lanes per vector: Cranelift lowers 128-bit vectors only.
pub const LANES: u32 = 4;

/// `k` values one dot-product lane sums.
pub const K_GROUP: usize = 4;

/// Cranelift allocates xmm0-15 on x86-64; a block needing more spills in its inner loop.
const MAX_VECTOR_REGISTERS: u32 = 16;

/// aarch64 has 32 vector registers (v0-v31): the dot products only it folds may use more.
const MAX_VECTOR_REGISTERS_AARCH64: u32 = 32;

/// The byte that flips a u8 to the s8 of [`DotProduct::Sdot`]: `x ^ 0x80 = x − 128`.
const FLIP: i64 = 0x80;

/// How four u8 × s8 products are summed into an i32 lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DotProduct {
    /// The widening tree that folds into `vpdpbusd` on AVX-512 VNNI / AVX-VNNI.
    Vnni,
    /// The same tree with the unsigned operand first, which Cranelift folds into aarch64's
    /// `usdot` (Armv8.6 i8mm); elsewhere it computes the same sums without the fold.
    Usdot,
    /// Sign/zero extension to i16, `pmaddwd`-style pair products, i32 pair sums.
    Widening,
    /// The tree with both operands signed, which Cranelift folds into aarch64's `sdot`
    /// (Armv8.2 dot product): activations flipped to `x − 128` (see the module docs).
    Sdot,
}

impl DotProduct {
    pub fn name(self) -> &'static str {
        match self {
            DotProduct::Vnni => "dp4",
            DotProduct::Usdot => "usdot",
            DotProduct::Widening => "wmadd",
            DotProduct::Sdot => "sdot",
        }
    }

    /// What the dot product subtracts from every u8 activation byte before multiplying
    /// (128 for [`DotProduct::Sdot`], 0 otherwise). A kernel's accumulator is then
    /// `Σ (x − offset)·w`, so the lowerings compensate the zero point `zx − offset` in
    /// place of `zx`: `Σ (x − zx)·w = acc − (zx − offset)·Σw`.
    pub fn activation_offset(self) -> i32 {
        match self {
            DotProduct::Sdot => 128,
            DotProduct::Vnni | DotProduct::Usdot | DotProduct::Widening => 0,
        }
    }

    /// u8 activation bytes (a scalar or a vector) into the dot product's domain: `x ^ 0x80`
    /// for [`DotProduct::Sdot`], unchanged otherwise.
    pub(super) fn flip(self, b: &mut FunctionBuilder, bytes: Value) -> Value {
        let ty = b.func.dfg.value_type(bytes);
        let mask = self.flip_mask(b, ty);
        flip_with(b, bytes, mask)
    }

    /// The `0x80` bytes of type `ty` that [`flip_with`] xors with, `None` where the dot
    /// product takes u8 as they are. Made once outside a loop: `opt_level=none` hoists
    /// nothing, so a constant made inside is rematerialized on every use.
    pub(super) fn flip_mask(self, b: &mut FunctionBuilder, ty: Type) -> Option<Value> {
        if self != DotProduct::Sdot {
            return None;
        }
        let lane = ty.lane_type();
        let pattern = (0..lane.bytes()).fold(0i64, |p, _| (p << 8) | FLIP);
        let mask = b.ins().iconst(lane, pattern);
        Some(if ty.is_vector() {
            b.ins().splat(ty, mask)
        } else {
            mask
        })
    }

    /// The register block that fits the vector registers: the tree needs no temporaries
    /// beyond the accumulators, the B vectors and the broadcast (4 × 12 = 12 + 3 + 1); the
    /// widening form keeps both i16 halves of each operand live.
    pub fn default_tile(self) -> Tile {
        match self {
            DotProduct::Vnni | DotProduct::Usdot | DotProduct::Sdot => Tile { rows: 4, cols: 12 },
            DotProduct::Widening => Tile { rows: 3, cols: 8 },
        }
    }

    /// Vector registers a `tile` needs in the inner loop (`sdot` also keeps the flip
    /// constant).
    fn registers(self, tile: Tile) -> u32 {
        let vectors = tile.cols / LANES;
        match self {
            DotProduct::Vnni | DotProduct::Usdot => tile.rows * vectors + vectors + 1,
            DotProduct::Sdot => tile.rows * vectors + vectors + 2,
            DotProduct::Widening => tile.rows * vectors + 2 * vectors + 2,
        }
    }

    /// The vector registers of the ISA whose fold the dot product is for.
    fn max_registers(self) -> u32 {
        match self {
            DotProduct::Usdot | DotProduct::Sdot => MAX_VECTOR_REGISTERS_AARCH64,
            DotProduct::Vnni | DotProduct::Widening => MAX_VECTOR_REGISTERS,
        }
    }
}

/// What the block does with its i32 accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockEpilogue {
    /// Fixed-point requantization to u8 or i8 (`super::requant`): static int8.
    Requantize(OutputStage),
    /// Scaling to f32 with the run-time input scale (`super::dynamic_epilogue`): dynamic
    /// quantization.
    Float(FloatStage),
}

impl From<OutputStage> for BlockEpilogue {
    fn from(stage: OutputStage) -> BlockEpilogue {
        BlockEpilogue::Requantize(stage)
    }
}

impl BlockEpilogue {
    pub fn name(&self) -> String {
        match self {
            BlockEpilogue::Requantize(stage) => stage.name(),
            BlockEpilogue::Float(stage) => stage.name(),
        }
    }

    /// Bytes of one output element.
    pub fn element_bytes(&self) -> usize {
        match self {
            BlockEpilogue::Requantize(_) => 1,
            BlockEpilogue::Float(_) => 4,
        }
    }

    /// Bytes from one output channel's (or column's) record to the next.
    pub fn record_stride(&self) -> usize {
        match self {
            BlockEpilogue::Requantize(_) => RECORD_BYTES,
            BlockEpilogue::Float(_) => FloatStage::RECORD_STRIDE,
        }
    }

    /// Whether the input's scale and zero point are read at run time (kernel parameters).
    pub fn run_time_input(&self) -> bool {
        matches!(self, BlockEpilogue::Float(_))
    }
}

/// What the rows of the block are (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowOperand {
    WeightPanels,
    /// `k_rem` (0-3) trailing `k` values after the last full group of four.
    ActivationRows {
        k_rem: u32,
    },
}

/// The register-block generator. Everything here is baked into the code; [`Self::name`]
/// spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QMicroKernel {
    pub tile: Tile,
    pub dot: DotProduct,
    pub rows: RowOperand,
    pub output: BlockEpilogue,
    pub k_unroll: u32,
    /// Weight-zero-point and residual terms of the epilogue (`super::residual`).
    pub extras: Extras,
}

/// The CLIF values of one panel product. Strides are in bytes.
#[derive(Clone, Copy)]
pub(crate) struct QPanelOperands {
    /// Weight panels of the first row block, or activation row 0.
    pub a: Value,
    /// Bytes between activation rows (read for [`RowOperand::ActivationRows`] only).
    pub lda: Value,
    /// The packed column panel: group `q` at `b + q·4·NR`.
    pub b: Value,
    /// Full groups of four `k` (baked in: the loop runs whole unrolled steps and the rest
    /// is straight-line code, so no second loop carries the accumulators).
    pub groups: usize,
    pub m: Value,
    /// Output row 0 at the panel's first column; row `i` at `c + i·ldc`.
    pub c: Value,
    pub ldc: Value,
    /// The requantization record of row 0 (per row) or of the panel's first column.
    pub records: Value,
    /// `None` for a full panel; `Some(n)` stores only the first `n < NR` columns.
    pub columns: Option<Value>,
    /// The epilogue record (`super::residual`) of row 0 (per row) or of the panel's first
    /// column; read when the kernel has [`Extras`].
    pub extras: Option<Value>,
    /// The input sums of the weight-zero-point correction: `NR` i32 of the panel's columns
    /// (per row) or one i32 per row, row 0 first (per column); centred (`Σ (x − zx)`) for
    /// the float epilogue, raw u8 sums otherwise (`super::rowsum`).
    pub sums: Option<Value>,
    /// The residual of row 0 at the panel's first column, row `i` at `residual + i·ldc`
    /// (per row only): bytes, or f32 with the float epilogue.
    pub residual: Option<Value>,
    /// The run-time input quantization and record layout of the float epilogue.
    pub float: Option<FloatOperands>,
}

/// An operand ready for [`QMicroKernel::dot`]: the raw bytes for the tree, the two i16
/// halves for the widening form (computed once, used by every product of the step).
#[derive(Clone, Copy)]
pub(super) enum Prepared {
    Bytes(Value),
    Halves(Value, Value),
}

/// A row's group of four `k`: loaded where it is splatted, or already assembled.
#[derive(Clone, Copy)]
enum Broadcast {
    Load(Value, i32),
    Value(Value),
}

/// The loop-carried pointers of one register block.
struct Cursors<'a> {
    a: &'a [Variable],
    /// Bytes each A cursor advances per group of four `k`.
    a_step: i64,
    b: Variable,
    rows: u32,
    /// The mask that flips activation rows for `sdot` ([`DotProduct::flip_mask`]).
    flip: Option<Value>,
}

impl QMicroKernel {
    /// Checks the tile: columns a multiple of 4, at most 16 (one transposed im2col load),
    /// and the block fitting the vector registers.
    pub fn new(
        tile: Tile,
        dot: DotProduct,
        rows: RowOperand,
        output: impl Into<BlockEpilogue>,
        k_unroll: u32,
    ) -> Result<QMicroKernel, String> {
        let output = output.into();
        if tile.rows == 0 || tile.cols == 0 || !tile.cols.is_multiple_of(LANES) || tile.cols > 16 {
            return Err(format!(
                "tile {}x{} is not rows x (4, 8, 12 or 16)",
                tile.rows, tile.cols
            ));
        }
        let registers = dot.registers(tile);
        if registers > dot.max_registers() {
            return Err(format!(
                "tile {}x{} needs {registers} vector registers with {}, more than {}",
                tile.rows,
                tile.cols,
                dot.name(),
                dot.max_registers()
            ));
        }
        if k_unroll == 0 || k_unroll > 8 {
            return Err(format!("k unroll {k_unroll} is not in 1..=8"));
        }
        if let RowOperand::ActivationRows { k_rem } = rows {
            if k_rem >= K_GROUP as u32 {
                return Err(format!("k remainder {k_rem} is not below 4"));
            }
        }
        Ok(QMicroKernel {
            tile,
            dot,
            rows,
            output,
            k_unroll,
            extras: Extras::default(),
        })
    }

    /// The same block with epilogue terms. A residual needs per-row (weight panel) rows.
    /// The float epilogue takes weight zero points (their records are its own,
    /// `super::dynamic_epilogue`) but no 8-bit residual (its f32 residual is its own).
    pub fn with_extras(self, extras: Extras) -> Result<QMicroKernel, String> {
        if extras.residual.is_some() && self.output.run_time_input() {
            return Err("the float epilogue takes no 8-bit residual".into());
        }
        if extras.residual.is_some() && self.rows != RowOperand::WeightPanels {
            return Err("a residual input needs the convolution's per-row epilogue".into());
        }
        Ok(QMicroKernel { extras, ..self })
    }

    /// `4x12_dp4_u4_u8z3_0_255` (tile, dot product, unroll, output stage, then the epilogue
    /// terms, e.g. `_zw_r128`).
    pub fn name(&self) -> String {
        format!(
            "{}x{}_{}_u{}_{}{}",
            self.tile.rows,
            self.tile.cols,
            self.dot.name(),
            self.k_unroll,
            self.output.name(),
            self.extras.name()
        )
    }

    pub fn nr(&self) -> u32 {
        self.tile.cols
    }

    pub(super) fn vectors(&self) -> usize {
        (self.tile.cols / LANES) as usize
    }

    /// All rows against one panel: `MR` rows at a time, then single rows.
    pub(crate) fn emit_rows(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &QPanelOperands,
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

    /// Rows `row..row + rows`: the dot-product loop, the requantization and the store.
    fn block(
        &self,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &QPanelOperands,
        row: Value,
        rows: u32,
    ) {
        let pointer = context.pointer;
        let (a_starts, a_step): (Vec<Value>, i64) = match self.rows {
            RowOperand::WeightPanels => {
                // Row block `row` starts at row·K bytes, K = groups·4, whatever its height.
                let start = b.ins().imul_imm_s(row, ops.groups as i64 * 4);
                (vec![b.ins().iadd(ops.a, start)], i64::from(rows) * 4)
            }
            RowOperand::ActivationRows { .. } => {
                let starts = (0..rows)
                    .map(|r| {
                        let index = b.ins().iadd_imm_s(row, i64::from(r));
                        let start = b.ins().imul(index, ops.lda);
                        b.ins().iadd(ops.a, start)
                    })
                    .collect();
                (starts, 4)
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
        let zero = b.ins().iconst(types::I32, 0);
        let zero = b.ins().splat(types::I32X4, zero);
        let accumulators: Vec<Variable> = (0..rows as usize * self.vectors())
            .map(|_| {
                let var = b.declare_var(types::I32X4);
                b.def_var(var, zero);
                var
            })
            .collect();
        let flip = match self.rows {
            RowOperand::ActivationRows { .. } => self.dot.flip_mask(b, types::I8X16),
            RowOperand::WeightPanels => None,
        };
        let cursors = Cursors {
            a: &a_cursors,
            a_step,
            b: b_cursor,
            rows,
            flip,
        };
        let start = b.ins().iconst(pointer, 0);
        let unroll = self.k_unroll as usize;
        let main_steps = ops.groups / unroll * unroll;
        if main_steps > 0 {
            let end = b.ins().iconst(pointer, main_steps as i64);
            counted_loop(b, pointer, start, end, unroll as i64, |b, _| {
                self.k_steps(b, &cursors, &accumulators, self.k_unroll)
            });
        }
        let rest = (ops.groups - main_steps) as u32;
        if rest > 0 {
            self.k_steps(b, &cursors, &accumulators, rest);
        }
        if let RowOperand::ActivationRows { k_rem } = self.rows {
            if k_rem > 0 {
                self.k_remainder(b, &cursors, &accumulators, k_rem);
            }
        }
        // The tile goes to the stack right after the loop: the accumulators' live ranges end
        // here, so the epilogue's temporaries cannot make the register allocator spill them
        // inside the loop (it places spills at the definition, i.e. in the loop body).
        let bytes = (accumulators.len() * 16) as u32;
        let slot =
            b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4));
        let tile = b.ins().stack_addr(pointer, slot, 0);
        for (i, &var) in accumulators.iter().enumerate() {
            let sum = b.use_var(var);
            b.ins().store(flags(), sum, tile, (i * 16) as i32);
        }
        match (self.output, self.rows) {
            (BlockEpilogue::Requantize(stage), RowOperand::WeightPanels) => {
                self.store_per_row(&stage, b, context, ops, row, rows, tile)
            }
            (BlockEpilogue::Requantize(stage), RowOperand::ActivationRows { .. }) => {
                self.store_per_column(&stage, b, context, ops, row, rows, tile)
            }
            (BlockEpilogue::Float(stage), orientation) => {
                let per_row = orientation == RowOperand::WeightPanels;
                stage.store(self, b, context, ops, (row, rows), tile, per_row)
            }
        }
    }

    /// `steps` groups of four `k`: the column vectors, then per row a broadcast and the
    /// dot products; the cursors advance once at the end.
    fn k_steps(
        &self,
        b: &mut FunctionBuilder,
        cursors: &Cursors,
        accumulators: &[Variable],
        steps: u32,
    ) {
        let nr_bytes = self.nr() as i32 * 4;
        let a_bases: Vec<Value> = cursors.a.iter().map(|&var| b.use_var(var)).collect();
        let b_base = b.use_var(cursors.b);
        for u in 0..steps as i32 {
            let columns: Vec<Value> = (0..self.vectors() as i32)
                .map(|v| {
                    b.ins()
                        .load(types::I8X16, flags(), b_base, u * nr_bytes + v * 16)
                })
                .collect();
            let broadcasts: Vec<Broadcast> = (0..cursors.rows as i32)
                .map(|r| match self.rows {
                    RowOperand::WeightPanels => {
                        Broadcast::Load(a_bases[0], (u * cursors.rows as i32 + r) * 4)
                    }
                    RowOperand::ActivationRows { .. } => {
                        Broadcast::Load(a_bases[r as usize], u * 4)
                    }
                })
                .collect();
            self.multiply(b, accumulators, &columns, &broadcasts, cursors.flip);
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

    /// The last, partial group of activation rows: `k_rem` bytes per row assembled into the
    /// low bytes of an i32 (the weights of the missing `k` are zero in the panel).
    fn k_remainder(
        &self,
        b: &mut FunctionBuilder,
        cursors: &Cursors,
        accumulators: &[Variable],
        k_rem: u32,
    ) {
        let b_base = b.use_var(cursors.b);
        let columns: Vec<Value> = (0..self.vectors() as i32)
            .map(|v| b.ins().load(types::I8X16, flags(), b_base, v * 16))
            .collect();
        let broadcasts: Vec<Broadcast> = cursors
            .a
            .iter()
            .map(|&var| {
                let base = b.use_var(var);
                let mut group = b.ins().iconst(types::I32, 0);
                for i in 0..k_rem as i32 {
                    let byte = b.ins().uload8(types::I32, flags(), base, i);
                    let byte = b.ins().ishl_imm_u(byte, i64::from(8 * i));
                    group = b.ins().bor(group, byte);
                }
                Broadcast::Value(group)
            })
            .collect();
        self.multiply(b, accumulators, &columns, &broadcasts, cursors.flip);
    }

    /// `acc[r][v] += dot(broadcast r, column v)` with the operands in their signed/unsigned
    /// roles for this orientation.
    fn multiply(
        &self,
        b: &mut FunctionBuilder,
        accumulators: &[Variable],
        columns: &[Value],
        broadcasts: &[Broadcast],
        flip: Option<Value>,
    ) {
        let weights_in_rows = self.rows == RowOperand::WeightPanels;
        let columns: Vec<Prepared> = columns
            .iter()
            .map(|&v| self.prepare(b, v, !weights_in_rows))
            .collect();
        for (r, &group) in broadcasts.iter().enumerate() {
            // Loaded as an f32 right before the splat: x64 folds that load into
            // `vbroadcastss m32` (an i32 splat is a GPR load, `vmovd` and `vpbroadcastd`).
            let bytes = match group {
                Broadcast::Load(base, offset) => {
                    let group = b.ins().load(types::F32, flags(), base, offset);
                    let splat = b.ins().splat(types::F32X4, group);
                    b.ins().bitcast(types::I8X16, little(), splat)
                }
                Broadcast::Value(value) => {
                    let splat = b.ins().splat(types::I32X4, value);
                    b.ins().bitcast(types::I8X16, little(), splat)
                }
            };
            // Activation rows are read in place: flipped here, once per broadcast. (The
            // convolution's im2col columns were flipped by its packer.)
            let bytes = if weights_in_rows {
                bytes
            } else {
                flip_with(b, bytes, flip)
            };
            let row = self.prepare(b, bytes, weights_in_rows);
            for (v, &column) in columns.iter().enumerate() {
                let var = accumulators[r * columns.len() + v];
                let acc = b.use_var(var);
                let (signed, unsigned) = if weights_in_rows {
                    (row, column)
                } else {
                    (column, row)
                };
                let sum = self.dot(b, signed, unsigned, acc);
                b.def_var(var, sum);
            }
        }
    }

    /// An operand of [`Self::dot`] from its bytes: the signed one (weights), or the
    /// activations, already flipped ([`DotProduct::flip`]) for `sdot`.
    pub(super) fn prepare(&self, b: &mut FunctionBuilder, bytes: Value, signed: bool) -> Prepared {
        match self.dot {
            DotProduct::Vnni | DotProduct::Usdot | DotProduct::Sdot => Prepared::Bytes(bytes),
            DotProduct::Widening if signed => {
                Prepared::Halves(b.ins().swiden_low(bytes), b.ins().swiden_high(bytes))
            }
            DotProduct::Widening => {
                Prepared::Halves(b.ins().uwiden_low(bytes), b.ins().uwiden_high(bytes))
            }
        }
    }

    /// `acc + Σ_{j<4} s[4i+j]·u[4i+j]` per lane `i`, `s` signed and `u` unsigned bytes
    /// (for [`DotProduct::Sdot`], `u` is signed too: the activations after the flip).
    ///
    /// The tree form is exactly what Cranelift 0.135 folds into `vpdpbusd acc, u, s`: the
    /// product `imul(swiden(s), uwiden(u))` with the signed operand first, computed once per
    /// half and shared by both of its widenings, and the accumulator as the *second* operand
    /// of the final `iadd`. Any other arrangement computes the same value without the fold.
    /// aarch64 folds the same shape into `usdot` with `uwiden(u)` first, and into `sdot`
    /// with both operands `swiden` (s8 × s8 products are at most 2^14: exact in i16).
    pub(super) fn dot(
        &self,
        b: &mut FunctionBuilder,
        s: Prepared,
        u: Prepared,
        acc: Value,
    ) -> Value {
        let products = match (s, u) {
            (Prepared::Bytes(s), Prepared::Bytes(u)) => {
                // vpdpbusd wants the signed operand first, usdot the unsigned one.
                let unsigned_first = self.dot == DotProduct::Usdot;
                let signed_u = self.dot == DotProduct::Sdot;
                let product = |b: &mut FunctionBuilder, s: Value, u: Value| {
                    if unsigned_first {
                        b.ins().imul(u, s)
                    } else {
                        b.ins().imul(s, u)
                    }
                };
                let s_low = b.ins().swiden_low(s);
                let u_low = if signed_u {
                    b.ins().swiden_low(u)
                } else {
                    b.ins().uwiden_low(u)
                };
                let low = product(b, s_low, u_low);
                let s_high = b.ins().swiden_high(s);
                let u_high = if signed_u {
                    b.ins().swiden_high(u)
                } else {
                    b.ins().uwiden_high(u)
                };
                let high = product(b, s_high, u_high);
                let low_pairs = Self::pair_sums_i16(b, low);
                let high_pairs = Self::pair_sums_i16(b, high);
                b.ins().iadd_pairwise(low_pairs, high_pairs)
            }
            (Prepared::Halves(s_low, s_high), Prepared::Halves(u_low, u_high)) => {
                let low = Self::multiply_add_pairs(b, s_low, u_low);
                let high = Self::multiply_add_pairs(b, s_high, u_high);
                b.ins().iadd_pairwise(low, high)
            }
            // `prepare` makes both operands with the same `self.dot`.
            _ => unreachable!("operands prepared for different dot products"),
        };
        b.ins().iadd(products, acc)
    }

    /// i16x8 → i32x4 sums of adjacent lanes, widened before adding.
    fn pair_sums_i16(b: &mut FunctionBuilder, x: Value) -> Value {
        let low = b.ins().swiden_low(x);
        let high = b.ins().swiden_high(x);
        b.ins().iadd_pairwise(low, high)
    }

    /// `[x0·y0 + x1·y1, …]` in i32 from i16x8 operands: the shape x86 lowers to `pmaddwd`.
    fn multiply_add_pairs(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
        let (x_low, y_low) = (b.ins().swiden_low(x), b.ins().swiden_low(y));
        let low = b.ins().imul(x_low, y_low);
        let (x_high, y_high) = (b.ins().swiden_high(x), b.ins().swiden_high(y));
        let high = b.ins().imul(x_high, y_high);
        b.ins().iadd_pairwise(low, high)
    }

    /// Per-row requantization on vectors of the tile on the stack, then the byte store
    /// (through a stack buffer for a narrower edge panel).
    #[allow(clippy::too_many_arguments)]
    fn store_per_row(
        &self,
        output: &OutputStage,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &QPanelOperands,
        row: Value,
        rows: u32,
        tile: Value,
    ) {
        let vectors = self.vectors();
        let nr = self.nr() as usize;
        let stack_buffer = |b: &mut FunctionBuilder| {
            let slot =
                b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 4));
            b.ins().stack_addr(context.pointer, slot, 0)
        };
        let edge = ops.columns.map(|columns| (columns, stack_buffer(b)));
        // An edge panel's residual bytes are copied to a buffer first: loading whole
        // vectors in place could read past the end of the residual tensor.
        let residual_buffer = match (edge, ops.residual) {
            (Some(_), Some(_)) => Some(stack_buffer(b)),
            _ => None,
        };
        let zero = b.ins().iconst(context.pointer, 0);
        for r in 0..rows as usize {
            let index = b.ins().iadd_imm_s(row, r as i64);
            let record_offset = b.ins().imul_imm_s(index, RECORD_BYTES as i64);
            let record = b.ins().iadd(ops.records, record_offset);
            let requant = output.load_row(b, record);
            let c_offset = b.ins().imul(index, ops.ldc);
            let extras = match (self.extras.any(), ops.extras) {
                (true, Some(extras)) => {
                    let offset = b.ins().imul_imm_s(index, EXTRA_RECORD_BYTES as i64);
                    let record = b.ins().iadd(extras, offset);
                    Some(self.extras.load_row(b, record))
                }
                _ => None,
            };
            let residual = ops.residual.map(|residual| {
                let source = b.ins().iadd(residual, c_offset);
                match (edge, residual_buffer) {
                    (Some((columns, _)), Some(buffer)) => {
                        counted_loop(b, context.pointer, zero, columns, 1, |b, j| {
                            let from = b.ins().iadd(source, j);
                            let byte = b.ins().load(types::I8, flags(), from, 0);
                            let to = b.ins().iadd(buffer, j);
                            b.ins().store(flags(), byte, to, 0);
                        });
                        buffer
                    }
                    _ => source,
                }
            });
            let values: Vec<Value> = (0..vectors)
                .map(|v| {
                    let offset = ((r * vectors + v) * 16) as i32;
                    let sum = b.ins().load(types::I32X4, flags(), tile, offset);
                    let mut x = output.add_bias(b, &requant, sum);
                    if let Some(extras) = &extras {
                        if let Some(sums) = ops.sums {
                            let sums = b.ins().load(types::I32X4, flags(), sums, (16 * v) as i32);
                            x = extras.subtract_sums(b, x, sums);
                        }
                        if let Some(residual) = residual {
                            x = extras.add_residual(b, x, residual, (4 * v) as i32);
                        }
                    }
                    output.requantize_vector(b, &requant, x)
                })
                .collect();
            let c_row = b.ins().iadd(ops.c, c_offset);
            match edge {
                None => Self::store_bytes(output.signed, b, &values, c_row),
                Some((columns, buffer)) => {
                    Self::store_bytes(output.signed, b, &values, buffer);
                    let zero = b.ins().iconst(context.pointer, 0);
                    counted_loop(b, context.pointer, zero, columns, 1, |b, j| {
                        let source = b.ins().iadd(buffer, j);
                        let byte = b.ins().load(types::I8, flags(), source, 0);
                        let target = b.ins().iadd(c_row, j);
                        b.ins().store(flags(), byte, target, 0);
                    });
                }
            }
        }
        debug_assert!(nr <= 16, "the edge buffer holds one vector of bytes");
    }

    /// Clamped i32 vectors → bytes, stored at `target` (4 bytes per vector).
    fn store_bytes(signed: bool, b: &mut FunctionBuilder, values: &[Value], target: Value) {
        for (chunk_index, chunk) in values.chunks(4).enumerate() {
            let first = chunk[0];
            let at = |i: usize| chunk.get(i).copied().unwrap_or(first);
            let words_low = b.ins().snarrow(at(0), at(1));
            let words_high = b.ins().snarrow(at(2), at(3));
            let bytes = if signed {
                b.ins().snarrow(words_low, words_high)
            } else {
                b.ins().unarrow(words_low, words_high)
            };
            let base = chunk_index as i32 * 16;
            if chunk.len() == 4 {
                b.ins().store(flags(), bytes, target, base);
            } else {
                let words = b.ins().bitcast(types::I32X4, little(), bytes);
                for lane in 0..chunk.len() {
                    let word = b.ins().extractlane(words, lane as u8);
                    b.ins().store(flags(), word, target, base + 4 * lane as i32);
                }
            }
        }
    }

    /// Per-column requantization of the tile on the stack: every element with its column's
    /// record (scalar 64-bit arithmetic).
    #[allow(clippy::too_many_arguments)]
    fn store_per_column(
        &self,
        output: &OutputStage,
        b: &mut FunctionBuilder,
        context: &KernelContext,
        ops: &QPanelOperands,
        row: Value,
        rows: u32,
        tile: Value,
    ) {
        let pointer = context.pointer;
        let nr = self.nr() as usize;
        let columns = ops
            .columns
            .unwrap_or_else(|| b.ins().iconst(pointer, nr as i64));
        let zero = b.ins().iconst(pointer, 0);
        let zero_point_terms = match (self.extras.weight_zero_points, ops.extras, ops.sums) {
            (true, Some(extras), Some(sums)) => Some((extras, sums)),
            _ => None,
        };
        for r in 0..rows as usize {
            let index = b.ins().iadd_imm_s(row, r as i64);
            let c_offset = b.ins().imul(index, ops.ldc);
            let c_row = b.ins().iadd(ops.c, c_offset);
            let tile_row = b.ins().iadd_imm_s(tile, (r * nr * 4) as i64);
            // This row's input sum, for `acc − zw[j]·Σ_k a[row, k]`.
            let row_sum = zero_point_terms.map(|(_, sums)| {
                let offset = b.ins().ishl_imm_u(index, 2);
                let address = b.ins().iadd(sums, offset);
                b.ins().load(types::I32, flags(), address, 0)
            });
            counted_loop(b, pointer, zero, columns, 1, |b, j| {
                let offset = b.ins().ishl_imm_u(j, 2);
                let source = b.ins().iadd(tile_row, offset);
                let mut sum = b.ins().load(types::I32, flags(), source, 0);
                if let (Some((extras, _)), Some(row_sum)) = (zero_point_terms, row_sum) {
                    let extra_offset = b.ins().imul_imm_s(j, EXTRA_RECORD_BYTES as i64);
                    let extra = b.ins().iadd(extras, extra_offset);
                    let zw = b.ins().load(types::I32, flags(), extra, 0);
                    let correction = b.ins().imul(zw, row_sum);
                    sum = b.ins().isub(sum, correction);
                }
                let record_offset = b.ins().imul_imm_s(j, RECORD_BYTES as i64);
                let record = b.ins().iadd(ops.records, record_offset);
                let value = output.requantize_scalar(b, record, sum);
                let target = b.ins().iadd(c_row, j);
                b.ins().istore8(flags(), value, target, 0);
            });
        }
    }
}

/// `bytes ^ mask` ([`DotProduct::flip_mask`]), or `bytes` without a mask.
pub(super) fn flip_with(b: &mut FunctionBuilder, bytes: Value, mask: Option<Value>) -> Value {
    match mask {
        Some(mask) => b.ins().bxor(bytes, mask),
        None => bytes,
    }
}

/// Lane-count-changing bitcasts need an explicit byte order.
pub(crate) fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// A two-operand byte shuffle (`indices` 0-15 from the first operand, 16-31 the second).
pub(crate) fn shuffle_mask(b: &mut FunctionBuilder, indices: [u8; 16]) -> Immediate {
    b.func.dfg.immediates.push(ConstantData::from(&indices[..]))
}
