//! Helpers for the canonical passes' unit tests: parse a `.qir` graph, run a pass, and check
//! that the interpreter gives the same outputs before and after on seeded random inputs.

use crate::Pass;
use qcc_ir::text::{parse_graph, print_graph, PrintOptions};
use qcc_ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;

/// Parses a test graph; a test's own source text is never user input, so a panic is the
/// right report for a typo in it.
pub fn parse(src: &str) -> Graph {
    match parse_graph(src) {
        Ok(g) => g,
        Err(e) => panic!("test graph does not parse: {e}\n{src}"),
    }
}

/// Runs `pass` on a copy of `g`; returns the new graph and whether the pass said it changed.
pub fn run_pass(pass: &dyn Pass, g: &Graph) -> (Graph, bool) {
    let mut after = g.clone();
    let changed = match pass.run(&mut after) {
        Ok(c) => c,
        Err(e) => panic!("{} failed: {e}", pass.name()),
    };
    if let Err(e) = after.verify() {
        panic!("{} produced an invalid graph: {e}", pass.name());
    }
    (after, changed)
}

pub fn text(g: &Graph) -> String {
    print_graph(g, &PrintOptions::default())
}

/// Occurrences of ops named `name` in the graph.
pub fn count_op(g: &Graph, name: &str) -> usize {
    g.petgraph()
        .node_indices()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

pub fn ops(g: &Graph) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = match g.topo_order() {
        Ok(order) => order.into_iter().map(|n| g.node(n).op.name()).collect(),
        Err(e) => panic!("cycle: {e}"),
    };
    out.sort_unstable();
    out
}

/// A small deterministic generator (SplitMix64): the tests need reproducible inputs, not a
/// dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random_tensor(ty: &TensorType, rng: &mut SplitMix) -> Tensor {
    let n = ty.shape.numel();
    match ty.dtype {
        DType::F32 => Tensor::from_f32(ty.dims(), (0..n).map(|_| rng.unit()).collect()),
        DType::I64 => {
            Tensor::from_i64(ty.dims(), (0..n).map(|_| (rng.next() % 4) as i64).collect())
        }
        other => panic!("random inputs of {other} are not needed by these tests"),
    }
}

/// Relative L2 distance between two tensors' values.
fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = a.iter().map(|x| x * x).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// The pass must not change what the graph computes: same output types, values within a
/// relative L2 of 1e-6, on three seeded random inputs.
pub fn assert_same_semantics(before: &Graph, after: &Graph) {
    let names = |g: &Graph| -> Vec<String> {
        g.outputs()
            .iter()
            .map(|&o| g.value(o).name.clone())
            .collect()
    };
    assert_eq!(names(before), names(after), "graph output names changed");
    for seed in 1..=3u64 {
        let mut rng = SplitMix(seed);
        let feeds: HashMap<String, Tensor> = before
            .input_values()
            .iter()
            .map(|&v| {
                let val = before.value(v);
                (val.name.clone(), random_tensor(&val.ty, &mut rng))
            })
            .collect();
        let run = |g: &Graph| match qcc_ir::eval::run(g, &feeds) {
            Ok(outs) => outs,
            Err(e) => panic!("interpreter failed: {e}\n{}", text(g)),
        };
        let (want, got) = (run(before), run(after));
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.ty(), g.ty(), "output type changed");
            let d = rel_l2(w, g);
            assert!(d <= 1e-6, "outputs differ (rel L2 {d}) with seed {seed}");
        }
    }
}
