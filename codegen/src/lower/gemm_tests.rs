//! The GEMM kernel, JIT-compiled for the host, against an f64 reference and the interpreter.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Activation, GemmAttrs, Op, Tensor};

use super::*;
use crate::emit::{FinalizedKernels, JitKernels, KernelFn};
use crate::lower::test_support::{native, Random};
use crate::lower::ParamKind;
use crate::target::Target;

type GemmFnBias = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    usize,
    usize,
    usize,
    usize,
    usize,
);
type GemmFnPlain =
    unsafe extern "C" fn(*const f32, *const f32, *mut f32, usize, usize, usize, usize, usize);

/// `FinalizedKernels::get` knows signatures of up to seven parameters; these wrappers add the
/// two GEMM signatures locally (local types, so they cannot clash with a later generic impl).
#[derive(Clone, Copy)]
struct BiasFn(GemmFnBias);
#[derive(Clone, Copy)]
struct PlainFn(GemmFnPlain);

fn gemm_kinds(bias: bool) -> Vec<ParamKind> {
    let mut kinds = vec![ParamKind::ConstPtr, ParamKind::ConstPtr];
    if bias {
        kinds.push(ParamKind::ConstPtr);
    }
    kinds.push(ParamKind::MutPtr);
    kinds.extend([ParamKind::Size; 5]);
    kinds
}

// SAFETY: the kinds listed are exactly the pointer-sized C parameters of the wrapped types.
unsafe impl KernelFn for BiasFn {
    fn params() -> Vec<ParamKind> {
        gemm_kinds(true)
    }
    unsafe fn from_code(code: *const u8) -> Self {
        BiasFn(unsafe { std::mem::transmute::<*const u8, GemmFnBias>(code) })
    }
}

// SAFETY: as above.
unsafe impl KernelFn for PlainFn {
    fn params() -> Vec<ParamKind> {
        gemm_kinds(false)
    }
    unsafe fn from_code(code: *const u8) -> Self {
        PlainFn(unsafe { std::mem::transmute::<*const u8, GemmFnPlain>(code) })
    }
}

/// A compiled kernel, callable on plain slices.
struct Compiled {
    kernels: FinalizedKernels,
    kernel: GemmKernel,
}

impl Compiled {
    fn new(tile: Tile, bias: bool, epilogue: Option<Activation>) -> Compiled {
        let kernel = GemmKernel::new(native().arch(), tile, bias, epilogue).expect("valid tile");
        Compiled::with_kernel(kernel)
    }

    fn with_kernel(kernel: GemmKernel) -> Compiled {
        let mut jit = JitKernels::new(&native()).expect("JIT module");
        jit.define(&kernel).expect("kernel compiles");
        let kernels = jit.finalize().expect("JIT finalizes");
        Compiled { kernels, kernel }
    }

    /// `C` of `m × n` with row stride `ldc`, from `a` (`m × k`, row stride `lda`).
    #[allow(clippy::too_many_arguments)]
    fn run(&self, a: &[f32], b: &[f32], bias: &[f32], c: &mut [f32], dims: [usize; 5]) {
        let [m, n, k, lda, ldc] = dims;
        assert!(m == 0 || a.len() >= (m - 1) * lda + k, "a too short");
        assert!(m == 0 || c.len() >= (m - 1) * ldc + n, "c too short");
        let packed = self.kernel.pack_b(b, k, n).expect("B packs");
        let name = &self.kernel.spec().name;
        // SAFETY: the asserts above bound every access the kernel makes; `kernels` is alive.
        unsafe {
            if self.kernel.has_bias() {
                assert_eq!(bias.len(), n);
                let f = self.kernels.get::<BiasFn>(name).expect("signature").0;
                let (pa, pb, pc) = (a.as_ptr(), packed.as_ptr(), c.as_mut_ptr());
                f(pa, pb, bias.as_ptr(), pc, m, n, k, lda, ldc);
            } else {
                let f = self.kernels.get::<PlainFn>(name).expect("signature").0;
                f(
                    a.as_ptr(),
                    packed.as_ptr(),
                    c.as_mut_ptr(),
                    m,
                    n,
                    k,
                    lda,
                    ldc,
                );
            }
        }
    }
}

fn relu(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Checks `got` (row stride `ldc`) against an f64-accumulated reference, element by element:
/// |got − want| ≤ 1e-5 · (Σ|a·b| + |bias|), the relative bound that holds whatever the
/// summation order (cancellation makes a bound relative to |want| itself meaningless).
#[allow(clippy::too_many_arguments)]
fn check_f64(
    got: &[f32],
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    apply_relu: bool,
    dims: [usize; 5],
    what: &str,
) {
    let [m, n, k, lda, ldc] = dims;
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f64;
            let mut magnitude = 0.0f64;
            for kk in 0..k {
                let p = f64::from(a[i * lda + kk]) * f64::from(b[kk * n + j]);
                sum += p;
                magnitude += p.abs();
            }
            if let Some(bias) = bias {
                sum += f64::from(bias[j]);
                magnitude += f64::from(bias[j]).abs();
            }
            let want = if apply_relu { relu(sum) } else { sum };
            let g = f64::from(got[i * ldc + j]);
            assert!(
                (g - want).abs() <= 1e-5 * magnitude + f64::from(f32::MIN_POSITIVE),
                "{what}: C[{i},{j}] = {g:e}, reference {want:e} (Σ|ab| = {magnitude:e})"
            );
        }
    }
}

#[test]
fn pack_b_lays_out_zero_padded_panels() {
    // B is 2 × 5: b[kk][j] = 10·kk + j. Panels of width 4: columns 0..4, then 4 and padding.
    let b: Vec<f32> = (0..2)
        .flat_map(|kk| (0..5).map(move |j| (10 * kk + j) as f32))
        .collect();
    let packed = pack_b(&b, 2, 5, 4).expect("packs");
    let want = [
        0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, // panel 0
        4.0, 0.0, 0.0, 0.0, 14.0, 0.0, 0.0, 0.0, // panel 1, zero-padded
    ];
    assert_eq!(packed, want);
    assert_eq!(packed_len(2, 5, 4), want.len());
    let b_t: Vec<f32> = (0..5)
        .flat_map(|j| (0..2).map(move |kk| (10 * kk + j) as f32))
        .collect();
    assert_eq!(pack_b_transposed(&b_t, 2, 5, 4).expect("packs"), want);
    assert!(pack_b(&b, 2, 4, 4).is_err(), "wrong length is refused");
    assert!(
        pack_b(&b, 2, 5, 6).is_err(),
        "panel width must be a multiple of 4"
    );
}

#[test]
fn tiles_that_spill_or_are_not_vector_wide_are_refused() {
    let arch = native().arch();
    assert!(GemmKernel::new(arch, Tile { rows: 3, cols: 10 }, false, None).is_err());
    assert!(GemmKernel::new(arch, Tile { rows: 6, cols: 12 }, false, None).is_err());
    assert!(GemmKernel::new(arch, Tile { rows: 0, cols: 8 }, false, None).is_err());
    let kernel = GemmKernel::new(arch, DEFAULT_TILE, true, Some(Activation::Relu)).expect("ok");
    assert_eq!(kernel.spec().op, "gemm_3x12_u4_bias_relu");
    assert!(kernel
        .spec()
        .name
        .ends_with("_f32x4_gemm_3x12_u4_bias_relu"));
    let epilogue = TileEpilogue {
        bias: BiasKind::PerRow,
        residual: false,
        activation: None,
    };
    assert!(
        GemmKernel::with_epilogue(arch, DEFAULT_TILE, epilogue, 4).is_err(),
        "Gemm's bias is per column"
    );
    let epilogue = TileEpilogue {
        bias: BiasKind::None,
        ..epilogue
    };
    assert!(GemmKernel::with_epilogue(arch, DEFAULT_TILE, epilogue, 0).is_err());
    assert!(GemmKernel::with_epilogue(arch, DEFAULT_TILE, epilogue, 9).is_err());
}

/// Every shape with m, n in 1..=14 and a few k, plus random shapes up to 37, for each tile
/// and k unroll (k = 1 and 5 exercise the unrolled loop's remainder).
#[test]
fn matches_f64_reference_on_edge_and_random_shapes() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for (tile, unroll) in [
        (DEFAULT_TILE, DEFAULT_K_UNROLL),
        (DEFAULT_TILE, 1),
        (Tile { rows: 4, cols: 8 }, 3),
        (Tile { rows: 1, cols: 4 }, 2),
    ] {
        for (bias, epilogue) in [(false, None), (true, Some(Activation::Relu))] {
            let tile_epilogue = TileEpilogue {
                bias: if bias {
                    BiasKind::PerColumn
                } else {
                    BiasKind::None
                },
                residual: false,
                activation: epilogue,
            };
            let kernel = GemmKernel::with_epilogue(native().arch(), tile, tile_epilogue, unroll)
                .expect("valid tile");
            let compiled = Compiled::with_kernel(kernel);
            let mut shapes = Vec::new();
            for m in 1..=14 {
                for n in 1..=14 {
                    shapes.push((m, n, [1, 5][(m + n) % 2]));
                }
            }
            for _ in 0..40 {
                shapes.push((
                    1 + random.below(37),
                    1 + random.below(37),
                    1 + random.below(37),
                ));
            }
            for (m, n, k) in shapes {
                // Row strides wider than the rows: the kernel must honour lda and ldc and
                // leave the padding of C alone.
                let (lda, ldc) = (k + m % 3, n + 2);
                let a = random.vec(m * lda);
                let b = random.vec(k * n);
                let bias_values = random.vec(n);
                let mut c = vec![f32::NAN; m * ldc];
                compiled.run(&a, &b, &bias_values, &mut c, [m, n, k, lda, ldc]);
                let what = format!("{} m={m} n={n} k={k}", compiled.kernel.spec().name);
                let bias_ref = bias.then_some(bias_values.as_slice());
                check_f64(
                    &c,
                    &a,
                    &b,
                    bias_ref,
                    epilogue.is_some(),
                    [m, n, k, lda, ldc],
                    &what,
                );
                for i in 0..m {
                    for j in n..ldc {
                        assert!(c[i * ldc + j].is_nan(), "{what}: wrote C[{i},{j}] past n");
                    }
                }
            }
        }
    }
}

/// Against the interpreter's `Gemm` with a bias `C[n]` and `FusedGemm` with Relu.
#[test]
fn matches_interpreter_gemm_and_fused_gemm() {
    let mut random = Random(0x0123_4567_89ab_cdef);
    let attrs = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
    };
    let plain = Compiled::new(DEFAULT_TILE, true, None);
    let fused = Compiled::new(DEFAULT_TILE, true, Some(Activation::Relu));
    let mut shapes = vec![(1, 1, 1), (37, 37, 37), (3, 12, 1), (4, 13, 7)];
    for _ in 0..30 {
        shapes.push((
            1 + random.below(37),
            1 + random.below(37),
            1 + random.below(37),
        ));
    }
    for (m, n, k) in shapes {
        let a = random.vec(m * k);
        let b = random.vec(k * n);
        let bias = random.vec(n);
        let inputs = [
            Tensor::from_f32(&[m, k], a.clone()),
            Tensor::from_f32(&[k, n], b.clone()),
            Tensor::from_f32(&[n], bias.clone()),
        ];
        let inputs: Vec<&Tensor> = inputs.iter().collect();
        for (compiled, op) in [
            (&plain, Op::Gemm(attrs)),
            (
                &fused,
                Op::FusedGemm {
                    gemm: attrs,
                    activation: Some(Activation::Relu),
                },
            ),
        ] {
            let mut outputs = eval_op(&op, &inputs).expect("interpreter evaluates");
            let want: Vec<f32> = outputs
                .remove(0)
                .as_f32()
                .expect("f32 output")
                .iter()
                .copied()
                .collect();
            let mut got = vec![f32::NAN; m * n];
            compiled.run(&a, &b, &bias, &mut got, [m, n, k, k, n]);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let magnitude: f32 = (0..k)
                    .map(|kk| (a[i / n * k + kk] * b[kk * n + i % n]).abs())
                    .sum::<f32>()
                    + bias[i % n].abs();
                assert!(
                    (g - w).abs() <= 1e-5 * magnitude + f32::MIN_POSITIVE,
                    "{} m={m} n={n} k={k}: element {i}: kernel {g:e}, interpreter {w:e}",
                    compiled.kernel.spec().name
                );
            }
        }
    }
}

#[test]
fn x86_64_kernel_uses_fma_instructions() {
    let target = Target::parse("x86_64-fp32+fma").expect("target parses");
    let isa = target.isa().expect("ISA builds");
    let context = crate::lower::KernelContext {
        pointer: isa.pointer_type(),
        fma: target.fma(),
    };
    let kernel = GemmKernel::new(target.arch(), DEFAULT_TILE, true, Some(Activation::Relu))
        .expect("valid tile");
    let code =
        crate::emit::disassemble_kernel(isa.as_ref(), &context, &kernel).expect("kernel compiles");
    assert!(code.contains("vfmadd"), "no vfmadd in\n{code}");
}

#[test]
fn pack_a_interleaves_full_row_blocks_and_keeps_the_rest_row_major() {
    // a is 5 × 2: a[i][kk] = 10·i + kk. MR = 2: rows (0, 1) and (2, 3) interleaved, row 4 as is.
    let a: Vec<f32> = (0..5)
        .flat_map(|i| (0..2).map(move |kk| (10 * i + kk) as f32))
        .collect();
    let packed = pack_a(&a, 5, 2, 2).expect("packs");
    let want = [0.0, 10.0, 1.0, 11.0, 20.0, 30.0, 21.0, 31.0, 40.0, 41.0];
    assert_eq!(packed, want);
    assert!(pack_a(&a, 4, 2, 2).is_err(), "wrong length is refused");
    assert!(
        pack_a(&a, 5, 2, 0).is_err(),
        "zero rows per panel is refused"
    );
}

/// One Gemm/MatMul node for [`lower_gemm`]: A's dims, B (as stored, i.e. `[n, k]` when
/// `trans_b`), C's dims if any.
#[derive(Clone, Debug)]
struct GemmCase {
    a_dims: Vec<usize>,
    n: usize,
    attrs: GemmAttrs,
    c_dims: Option<Vec<usize>>,
    activation: Option<Activation>,
    matmul: bool,
    seed: u64,
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Lowers and runs `case` through `model::run_node` and compares with the interpreter:
/// `|got − want| ≤ 2e-5·√k·max|A|·max|B|·max(1, |alpha|) + 1e-6·(1 + |beta|·max|C|)`.
fn check_lowered(case: &GemmCase) {
    let target = native();
    let k = *case.a_dims.last().expect("A has dims");
    let m: usize = case.a_dims[..case.a_dims.len() - 1].iter().product();
    let n = case.n;
    let mut random = Random(case.seed | 1);
    let a = random.vec(m * k);
    let b = random.vec(k * n);
    let b_dims = if case.attrs.trans_b { [n, k] } else { [k, n] };
    let c = case
        .c_dims
        .as_ref()
        .map(|dims| random.vec(dims.iter().product()));
    let c_arg = c.as_deref().zip(case.c_dims.as_deref());
    let lowering = lower_gemm(
        target.arch(),
        &case.attrs,
        &case.a_dims,
        &b,
        &b_dims,
        c_arg,
        case.activation,
    )
    .expect("Gemm lowers");
    let got = crate::model::run_node(&target, &lowering, &[&a, &b], &[m * n])
        .expect("node runs")
        .remove(0);

    let mut tensors = vec![
        Tensor::from_f32(&case.a_dims, a.clone()),
        Tensor::from_f32(&b_dims, b.clone()),
    ];
    if let (Some(c), Some(dims)) = (&c, &case.c_dims) {
        tensors.push(Tensor::from_f32(dims, c.clone()));
    }
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let op = if case.matmul {
        Op::MatMul
    } else {
        Op::FusedGemm {
            gemm: case.attrs,
            activation: case.activation,
        }
    };
    let want = eval_op(&op, &refs)
        .expect("interpreter evaluates")
        .remove(0);
    let want: Vec<f32> = want.as_f32().expect("f32").iter().copied().collect();
    let c_term = c
        .as_deref()
        .map_or(0.0, |c| case.attrs.beta.abs() * max_abs(c));
    let tolerance =
        2e-5 * (k as f32).sqrt() * max_abs(&a) * max_abs(&b) * case.attrs.alpha.abs().max(1.0)
            + 1e-6 * (1.0 + c_term);
    assert_eq!(got.len(), want.len(), "{case:?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(!g.is_nan(), "{case:?}: element {i} not written (NaN)");
        assert!(
            (g - w).abs() <= tolerance,
            "{case:?}: element {i}: kernel {g:e}, interpreter {w:e}, bound {tolerance:e}"
        );
    }
}

const GEMM_ACTIVATIONS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Sigmoid),
    Some(Activation::Clip { min: 0.0, max: 6.0 }),
];

fn gemm_case_strategy() -> impl Strategy<Value = GemmCase> {
    let dims = (1usize..=29, 1usize..=29, 1usize..=29);
    let scalars = (
        prop::sample::select(vec![1.0f32, 0.5, -2.0]),
        prop::sample::select(vec![1.0f32, 0.0, 0.25]),
        any::<bool>(),
    );
    // C: none, scalar, [n], [1, n], [m, 1], [m, n], [1]; or a MatMul with 1-3 leading dims.
    let form = (0usize..9, 0usize..GEMM_ACTIVATIONS.len(), any::<u64>());
    (dims, scalars, form).prop_map(|((m, n, k), (alpha, beta, trans_b), (form, act, seed))| {
        let gemm = |c_dims: Option<Vec<usize>>| GemmCase {
            a_dims: vec![m, k],
            n,
            attrs: GemmAttrs {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            },
            c_dims,
            activation: GEMM_ACTIVATIONS[act],
            matmul: false,
            seed,
        };
        let matmul = |a_dims: Vec<usize>| GemmCase {
            a_dims,
            attrs: GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            activation: None,
            matmul: true,
            ..gemm(None)
        };
        match form {
            0 => gemm(None),
            1 => gemm(Some(vec![])),
            2 => gemm(Some(vec![n])),
            3 => gemm(Some(vec![1, n])),
            4 => gemm(Some(vec![m, 1])),
            5 => gemm(Some(vec![m, n])),
            6 => gemm(Some(vec![1])),
            7 => matmul(vec![2, m, k]),
            _ => matmul(vec![k]),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Gemm and FusedGemm (alpha, beta, transB, every C broadcast, activations) and MatMul
    /// with a constant 2-D B (batched and 1-D A), lowered and run, against the interpreter.
    #[test]
    fn lowered_gemm_matches_interpreter(case in gemm_case_strategy()) {
        check_lowered(&case);
    }
}

#[test]
fn lower_gemm_refuses_what_it_does_not_compile() {
    let arch = native().arch();
    let attrs = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: true,
        trans_b: false,
    };
    let b = vec![0.0; 6];
    let err = lower_gemm(arch, &attrs, &[2, 3], &b, &[3, 2], None, None);
    assert!(
        matches!(err, Err(KernelError::Unsupported { reason, .. }) if reason.contains("transA"))
    );
    let attrs = GemmAttrs {
        trans_a: false,
        ..attrs
    };
    assert!(
        lower_gemm(arch, &attrs, &[2, 4], &b, &[3, 2], None, None).is_err(),
        "k differs"
    );
    assert!(
        lower_gemm(arch, &attrs, &[2, 3], &b, &[6], None, None).is_err(),
        "1-D B"
    );
    let c = [1.0, 2.0, 3.0];
    let bad_c = Some((&c[..], &[3][..]));
    assert!(
        lower_gemm(arch, &attrs, &[2, 3], &b, &[3, 2], bad_c, None).is_err(),
        "C [3]"
    );
}

/// Not a timed assertion: prints GFLOP/s of the 256³ product with a bias (the benchmark's
/// shape) per tile and k unroll at `opt_level=none`. Run with
/// `cargo test --release -p qcc-codegen gemm_speed_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn gemm_speed_report() {
    use crate::target::{IsaOptions, OptLevel};
    let (m, n, k) = (256usize, 256usize, 256usize);
    let mut random = Random(3);
    let (a, b, bias) = (random.vec(m * k), random.vec(k * n), random.vec(n));
    let mut c = vec![0.0f32; m * n];
    for (opt_level, unroll) in [
        (OptLevel::None, 1),
        (OptLevel::None, 4),
        (OptLevel::Speed, 4),
    ] {
        let epilogue = TileEpilogue {
            bias: BiasKind::PerColumn,
            residual: false,
            activation: None,
        };
        let kernel = GemmKernel::with_epilogue(native().arch(), DEFAULT_TILE, epilogue, unroll)
            .expect("valid tile");
        let packed = kernel.pack_b(&b, k, n).expect("B packs");
        let options = IsaOptions {
            opt_level,
            ..IsaOptions::default()
        };
        let mut jit = JitKernels::with_options(&native(), &options).expect("JIT module");
        jit.define(&kernel).expect("kernel compiles");
        let kernels = jit.finalize().expect("JIT finalizes");
        let f = kernels
            .get::<BiasFn>(&kernel.spec().name)
            .expect("signature")
            .0;
        let mut best = f64::INFINITY;
        for _ in 0..50 {
            let start = std::time::Instant::now();
            // SAFETY: every buffer has the size the arguments describe.
            unsafe {
                f(
                    a.as_ptr(),
                    packed.as_ptr(),
                    bias.as_ptr(),
                    c.as_mut_ptr(),
                    m,
                    n,
                    k,
                    k,
                    n,
                )
            };
            best = best.min(start.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
        println!("gemm 256^3 {opt_level:?} unroll {unroll}: {gflops:.1} GFLOP/s");
    }
}
