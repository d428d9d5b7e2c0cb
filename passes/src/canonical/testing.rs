//! Helpers for the canonical passes' unit tests, on top of [`crate::testing`].

pub use crate::testing::{parse, text};
use crate::Pass;
use qcc_ir::Graph;

/// Canonical passes are exact rewrites: outputs agree to 1e-6.
pub fn assert_same_semantics(before: &Graph, after: &Graph) {
    crate::testing::assert_same_semantics_within(before, after, 1e-6);
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

/// Occurrences of ops named `name` in the graph.
pub fn count_op(g: &Graph, name: &str) -> usize {
    g.petgraph()
        .node_indices()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

pub use crate::testing::ops;
