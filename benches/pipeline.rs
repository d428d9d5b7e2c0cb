//! Time of the whole optimization pipeline (canonical passes + e-graph), import excluded, on
//! the largest zoo graphs. Run on one core: `taskset -c 0 cargo bench --bench pipeline`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use qcc_passes::{default_pipeline, PipelineOptions};

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    for name in ["resnet50", "densenet121", "mobilenetv2"] {
        let g =
            qcc::zoo::build(name, &qcc::zoo::ZooOptions { seed: 0, batch: 1 }).expect("zoo model");
        let pm = default_pipeline(&PipelineOptions::default());
        group.bench_function(name, |b| {
            b.iter_batched(
                || g.clone(),
                |mut g| {
                    pm.run(&mut g, None, None).expect("pipeline");
                    g
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
