//! Kernel micro-benchmarks, one core (`taskset -c 0 cargo bench --bench kernels`; a filter
//! picks groups, e.g. `-- conv_f32`):
//! - `gemm_f32_256`: the f32 GEMM micro-kernel (256×256×256, bias, tile 3×12) at both
//!   Cranelift optimisation levels; GFLOP/s = 2·256³ / time.
//! - `f32x4_fma_ceiling`: the machine's f32x4 FMA throughput (12 independent accumulator
//!   chains, Rust intrinsics), the ceiling the f32x4 kernels are measured against
//!   (`scripts/bench_vs_ort.py --layers` reads it from criterion's output).
//! - `conv_f32`, `depthwise_f32`, `softmax_f32`, `lrn_f32`, `transpose_f32`: one node lowered
//!   by its kernel family (`qcc_codegen::lower::*::lower_*`), JIT-compiled once as a program
//!   with `model::compile_node` and timed through `JitProgram::run`, on ResNet-50 and
//!   MobileNetV2 layer shapes. Throughput: convolutions count 2·MACs elements (criterion
//!   prints GFLOP/s as Gelem/s); softmax and LRN count tensor elements; transposes count the
//!   bytes read and written. A family whose lowering fails (e.g. "not implemented yet") is
//!   skipped with a note on stderr.
//!
//! The node groups use short measurement times (the CI never runs benches; people do).

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use qcc_codegen::emit::JitKernels;
use qcc_codegen::lower::gemm::{GemmKernel, DEFAULT_TILE};
use qcc_codegen::lower::{
    conv, depthwise, layout, lrn, softmax, ConvGeometry, Epilogue, Kernel, KernelError,
    NodeLowering,
};
use qcc_codegen::model::{compile_node, AlignedBuffer};
use qcc_codegen::{IsaOptions, OptLevel, Target};
use qcc_ir::{Activation, ConvAttrs, LrnAttrs, Padding};

type GemmBias = unsafe extern "C" fn(
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

/// Deterministic values in [-0.5, 0.5): no denormals, no NaNs, nothing data-dependent.
fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 13) as f32 / 13.0 - 0.5)
        .collect()
}

fn native() -> Target {
    Target::parse("native-fp32").expect("native-fp32 names this machine")
}

fn gemm(c: &mut Criterion) {
    let (m, n, k) = (256usize, 256usize, 256usize);
    let (a, b, bias) = (fill(m * k, 1), fill(k * n, 2), fill(n, 3));
    let target = native();
    let mut group = c.benchmark_group("gemm_f32_256");
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let kernel = GemmKernel::new(target.arch(), DEFAULT_TILE, true, None).expect("tile");
        let packed = kernel.pack_b(&b, k, n).expect("pack");
        let mut jit = JitKernels::with_options(
            &target,
            &IsaOptions {
                opt_level,
                ..IsaOptions::default()
            },
        )
        .expect("jit");
        jit.define(&kernel).expect("compile");
        let kernels = jit.finalize().expect("finalize");
        let f: GemmBias = kernels.get(&kernel.spec().name).expect("kernel");
        let mut out = vec![0.0f32; m * n];
        group.bench_function(format!("{}_{opt_level:?}", kernel.spec().name), |bench| {
            // SAFETY: every buffer has the size the arguments describe.
            bench.iter(|| unsafe {
                f(
                    a.as_ptr(),
                    packed.as_ptr(),
                    bias.as_ptr(),
                    out.as_mut_ptr(),
                    m,
                    n,
                    k,
                    k,
                    n,
                )
            })
        });
    }
    group.finish();
}

/// Independent FMA chains: enough to cover the FMA latency (4 cycles) on two ports.
const CEILING_CHAINS: usize = 12;
/// FMA steps per chain per call: long enough that the call overhead vanishes.
const CEILING_STEPS: usize = 4096;

/// `CEILING_CHAINS` chains of `CEILING_STEPS` f32x4 FMAs; returns a lane sum so nothing is
/// dead code. `None` when the CPU has no f32x4 FMA.
fn fma_chains(a: f32, b: f32) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "fma")]
        unsafe fn chains(a: f32, b: f32) -> f32 {
            let (va, vb) = (_mm_set1_ps(a), _mm_set1_ps(b));
            let mut acc = [_mm_setzero_ps(); CEILING_CHAINS];
            for _ in 0..CEILING_STEPS {
                for x in acc.iter_mut() {
                    *x = _mm_fmadd_ps(*x, va, vb);
                }
            }
            let mut sum = _mm_setzero_ps();
            for x in acc {
                sum = _mm_add_ps(sum, x);
            }
            let mut lanes = [0.0f32; 4];
            _mm_storeu_ps(lanes.as_mut_ptr(), sum);
            lanes.iter().sum()
        }
        if !std::arch::is_x86_feature_detected!("fma") {
            return None;
        }
        // SAFETY: the CPU has FMA (checked above).
        Some(unsafe { chains(a, b) })
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY: NEON is part of every aarch64 target Rust supports.
        unsafe {
            let (va, vb) = (vdupq_n_f32(a), vdupq_n_f32(b));
            let mut acc = [vdupq_n_f32(0.0); CEILING_CHAINS];
            for _ in 0..CEILING_STEPS {
                for x in acc.iter_mut() {
                    *x = vfmaq_f32(*x, va, vb);
                }
            }
            Some(acc.iter().map(|&x| vaddvq_f32(x)).sum())
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (a, b);
        None
    }
}

fn fma_ceiling(c: &mut Criterion) {
    if fma_chains(0.5, 0.25).is_none() {
        eprintln!("f32x4_fma_ceiling: skipped, this CPU has no f32x4 FMA");
        return;
    }
    let mut group = c.benchmark_group("f32x4_fma_ceiling");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(
            (CEILING_CHAINS * CEILING_STEPS * 4 * 2) as u64,
        ));
    group.bench_function(format!("{CEILING_CHAINS}_chains"), |bench| {
        // 0.5·acc + 0.25 converges to 0.5: no overflow, no denormals.
        bench.iter(|| fma_chains(std::hint::black_box(0.5), std::hint::black_box(0.25)))
    });
    group.finish();
}

/// One node to time: its lowering (or why there is none), the f32 element counts of its
/// inputs and outputs, and the work one run does.
struct NodeCase {
    id: String,
    lowering: Result<NodeLowering, KernelError>,
    input_lens: Vec<usize>,
    output_lens: Vec<usize>,
    throughput: Throughput,
}

/// Short runs: a few seconds per case on a shared 2-core machine. Flat sampling (the same
/// iteration count in every sample) keeps a slow kernel's run to about 20 calls plus warm-up
/// instead of criterion's default 210.
fn short<M: criterion::measurement::Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Compiles each case once with `compile_node` and times `JitProgram::run`. A case whose
/// lowering, compilation or first run fails is skipped with a note, so one unfinished kernel
/// family does not hide the others' numbers.
fn bench_nodes(c: &mut Criterion, group_name: &str, cases: Vec<NodeCase>) {
    let target = native();
    let mut group = c.benchmark_group(group_name);
    short(&mut group);
    for case in cases {
        let skip = |why: String| eprintln!("{group_name}/{}: skipped: {why}", case.id);
        let lowering = match case.lowering {
            Ok(lowering) => lowering,
            Err(e) => {
                skip(e.to_string());
                continue;
            }
        };
        let program = match compile_node(
            &target,
            &lowering,
            case.input_lens.len(),
            case.output_lens.len(),
        ) {
            Ok(program) => program,
            Err(e) => {
                skip(format!("does not compile: {e}"));
                continue;
            }
        };
        let inputs: Vec<AlignedBuffer> = case
            .input_lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut buffer = AlignedBuffer::new(len * 4);
                buffer.write_f32(&fill(len, i + 1));
                buffer
            })
            .collect();
        let mut outputs: Vec<AlignedBuffer> = case
            .output_lens
            .iter()
            .map(|&len| AlignedBuffer::new(len * 4))
            .collect();
        let mut workspace = AlignedBuffer::new(program.workspace_bytes());
        let input_refs: Vec<&AlignedBuffer> = inputs.iter().collect();
        let mut output_refs: Vec<&mut AlignedBuffer> = outputs.iter_mut().collect();
        if let Err(e) = program.run(&input_refs, &mut output_refs, &mut workspace) {
            skip(format!("does not run: {e}"));
            continue;
        }
        group.throughput(case.throughput);
        group.bench_function(&case.id, |bench| {
            bench.iter(|| program.run(&input_refs, &mut output_refs, &mut workspace))
        });
    }
    group.finish();
}

/// A square NCHW convolution at batch 1 with bias and a fused activation, lowered by
/// `lower_conv` (or `lower_depthwise` when `group == cin == cout`). Work: 2·MACs.
#[allow(clippy::too_many_arguments)]
fn conv_case(
    id: &str,
    cin: usize,
    cout: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    group: usize,
    activation: Activation,
) -> NodeCase {
    let attrs = ConvAttrs {
        kernel: vec![kernel, kernel],
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![pad; 4]),
        group,
    };
    let input_dims = [1, cin, size, size];
    let weight_dims = [cout, cin / group, kernel, kernel];
    let geometry =
        ConvGeometry::new(&attrs, &input_dims, &weight_dims).expect("a valid layer shape");
    let weight = fill(weight_dims.iter().product(), 5);
    let bias = fill(cout, 6);
    let epilogue = Epilogue {
        residual_input: None,
        activation: Some(activation),
    };
    let arch = native().arch();
    let lowering = if geometry.is_depthwise() {
        depthwise::lower_depthwise(arch, &geometry, &weight, Some(&bias), epilogue)
    } else {
        conv::lower_conv(arch, &geometry, &weight, Some(&bias), epilogue)
    };
    NodeCase {
        id: id.to_string(),
        lowering,
        input_lens: vec![input_dims.iter().product()],
        output_lens: vec![cout * geometry.out_h * geometry.out_w],
        throughput: Throughput::Elements(2 * geometry.macs() as u64),
    }
}

/// ResNet-50 convolutions: layer1's 3×3 and 1×1 reduction, and the 7×7/2 stem.
fn conv_layers(c: &mut Criterion) {
    let cases = vec![
        conv_case("3x3_64to64_56x56", 64, 64, 56, 3, 1, 1, 1, Activation::Relu),
        conv_case(
            "1x1_256to64_56x56",
            256,
            64,
            56,
            1,
            1,
            0,
            1,
            Activation::Relu,
        ),
        conv_case(
            "7x7s2_3to64_224x224",
            3,
            64,
            224,
            7,
            2,
            3,
            1,
            Activation::Relu,
        ),
    ];
    bench_nodes(c, "conv_f32", cases);
}

/// MobileNetV2's expanded 144-channel depthwise 3×3 at 56×56, stride 1 and 2, with ReLU6.
fn depthwise_layers(c: &mut Criterion) {
    let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
    let cases = vec![
        conv_case("3x3_144ch_56x56_s1", 144, 144, 56, 3, 1, 1, 144, relu6),
        conv_case("3x3_144ch_56x56_s2", 144, 144, 56, 3, 2, 1, 144, relu6),
    ];
    bench_nodes(c, "depthwise_f32", cases);
}

/// One input, one output of the same element count.
fn same_size_case(
    id: &str,
    dims: &[usize],
    lowering: Result<NodeLowering, KernelError>,
) -> NodeCase {
    let numel: usize = dims.iter().product();
    NodeCase {
        id: id.to_string(),
        lowering,
        input_lens: vec![numel],
        output_lens: vec![numel],
        throughput: Throughput::Elements(numel as u64),
    }
}

/// A classifier's softmax over 1000 classes, and attention-like rows (8 heads of 128×128).
fn softmax_layers(c: &mut Criterion) {
    let arch = native().arch();
    let cases = [(&[1usize, 1000][..], 1usize), (&[8, 128, 128][..], 2)]
        .into_iter()
        .map(|(dims, axis)| {
            let id = format!("{dims:?}_axis{axis}")
                .replace(['[', ']', ' '], "")
                .replace(',', "x");
            same_size_case(&id, dims, softmax::lower_softmax(arch, axis, false, dims))
        })
        .collect();
    bench_nodes(c, "softmax_f32", cases);
}

/// GoogLeNet's first LRN (64 channels at 56×56, size 5).
fn lrn_layers(c: &mut Criterion) {
    let attrs = LrnAttrs {
        alpha: 1e-4,
        beta: 0.75,
        bias: 1.0,
        size: 5,
    };
    let dims = [1, 64, 56, 56];
    let lowering = lrn::lower_lrn(native().arch(), &attrs, &dims);
    bench_nodes(
        c,
        "lrn_f32",
        vec![same_size_case("64ch_56x56_size5", &dims, lowering)],
    );
}

/// NCHW → NHWC of a 64×56×56 activation, and ShuffleNet's channel shuffle (2 groups of 58).
fn transpose_layers(c: &mut Criterion) {
    let arch = native().arch();
    let cases = [
        (
            "nchw_to_nhwc_64x56x56",
            &[1usize, 64, 56, 56][..],
            &[0usize, 2, 3, 1][..],
        ),
        (
            "channel_shuffle_2x58_28x28",
            &[1, 2, 58, 28, 28][..],
            &[0, 2, 1, 3, 4][..],
        ),
    ]
    .into_iter()
    .map(|(id, dims, perm)| {
        let mut case = same_size_case(id, dims, layout::lower_transpose(arch, perm, dims));
        // Read once and written once.
        case.throughput = Throughput::Bytes(2 * 4 * dims.iter().product::<usize>() as u64);
        case
    })
    .collect();
    bench_nodes(c, "transpose_f32", cases);
}

criterion_group!(
    benches,
    gemm,
    fma_ceiling,
    conv_layers,
    depthwise_layers,
    softmax_layers,
    lrn_layers,
    transpose_layers
);
criterion_main!(benches);
