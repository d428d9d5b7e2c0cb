//! Helpers shared by the passes' unit tests: parse a `.qir` graph, print it, make seeded
//! random inputs, and check that the interpreter gives the same outputs before and after a
//! rewrite.

use qcc_ir::text::{parse_graph, print_graph, PrintOptions};
use qcc_ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;

/// Parses a test graph; a test's own source text is never user input, so a panic is the
/// right report for a typo in it.
pub fn parse(src: &str) -> Graph {
    parse_graph(src).unwrap_or_else(|e| panic!("test graph does not parse: {e}\n{src}"))
}

pub fn text(g: &Graph) -> String {
    print_graph(g, &PrintOptions::default())
}

/// The op names of the graph's nodes, sorted: what a rewrite left, order aside.
pub fn ops(g: &Graph) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = match g.topo_order() {
        Ok(order) => order.into_iter().map(|n| g.node(n).op.name()).collect(),
        Err(e) => panic!("cycle: {e}"),
    };
    out.sort_unstable();
    out
}

/// SplitMix64: reproducible inputs without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// An f32 tensor uniform in [-1, 1).
    pub fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_f32(dims, (0..n).map(|_| self.unit()).collect())
    }
    /// A random input of type `ty`: f32 uniform in [-1, 1), i64 in 0..4.
    pub fn input(&mut self, ty: &TensorType) -> Tensor {
        match ty.dtype {
            DType::F32 => self.tensor(ty.dims()),
            DType::I64 => Tensor::from_i64(
                ty.dims(),
                (0..ty.shape.numel())
                    .map(|_| (self.next() % 4) as i64)
                    .collect(),
            ),
            other => panic!("random inputs of {other} are not needed by these tests"),
        }
    }
}

/// Relative L2 distance between two tensors' values.
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = a.iter().map(|x| x * x).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// A rewrite must not change what the graph computes: same output names and types, values
/// within relative L2 `tolerance`, on three seeded random inputs.
pub fn assert_same_semantics_within(before: &Graph, after: &Graph, tolerance: f64) {
    let names = |g: &Graph| -> Vec<String> {
        g.outputs()
            .iter()
            .map(|&o| g.value(o).name.clone())
            .collect()
    };
    assert_eq!(names(before), names(after), "graph output names changed");
    for seed in 1..=3u64 {
        let mut rng = Rng(seed);
        let feeds: HashMap<String, Tensor> = before
            .input_values()
            .iter()
            .map(|&v| (before.value(v).name.clone(), rng.input(&before.value(v).ty)))
            .collect();
        let run = |g: &Graph| {
            qcc_ir::eval::run(g, &feeds)
                .unwrap_or_else(|e| panic!("interpreter failed: {e}\n{}", text(g)))
        };
        let (want, got) = (run(before), run(after));
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.ty(), g.ty(), "output type changed");
            let d = rel_l2(w, g);
            assert!(
                d <= tolerance,
                "outputs differ (rel L2 {d}) with seed {seed}\nbefore:\n{}\nafter:\n{}",
                text(before),
                text(after)
            );
        }
    }
}
