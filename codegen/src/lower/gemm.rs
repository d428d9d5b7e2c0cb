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
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use qcc_ir::Activation;

use super::kernel::{
    counted_loop, f32_address, Accumulator, Kernel, KernelContext, KernelError, KernelParam,
    KernelSpec, Tile,
};
use super::node::{Arg, KernelCall, NodeLowering};
use crate::target::Arch;

pub(crate) use super::microkernel::PanelOperands;
pub use super::microkernel::{
    ALayout, BiasKind, MicroKernel, TileEpilogue, DEFAULT_K_UNROLL, DEFAULT_TILE, LANES,
};

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
