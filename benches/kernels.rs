//! Kernel micro-benchmarks: the f32 GEMM micro-kernel (256×256×256, bias, tile 3×12) at both
//! Cranelift optimisation levels. GFLOP/s = 2·256³ / time. Run on one core:
//! `taskset -c 0 cargo bench --bench kernels`.

use criterion::{criterion_group, criterion_main, Criterion};
use qcc_codegen::emit::JitKernels;
use qcc_codegen::lower::gemm::{GemmKernel, DEFAULT_TILE};
use qcc_codegen::lower::Kernel;
use qcc_codegen::{IsaOptions, OptLevel, Target};

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

fn gemm(c: &mut Criterion) {
    let (m, n, k) = (256usize, 256usize, 256usize);
    let fill = |len: usize, seed: usize| {
        (0..len)
            .map(|i| ((i * 7 + seed) % 13) as f32 / 13.0 - 0.5)
            .collect::<Vec<f32>>()
    };
    let (a, b, bias) = (fill(m * k, 1), fill(k * n, 2), fill(n, 3));
    let target = Target::parse("native-fp32").expect("native target");
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

criterion_group!(benches, gemm);
criterion_main!(benches);
