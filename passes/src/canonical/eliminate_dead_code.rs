//! `eliminate-dead-code`: drops nodes and constants that no graph output depends on.
//!
//! The graph is rebuilt with every live node copied unchanged ([`Graph::rebuild`] visits only
//! live nodes and copies constants on first use). Graph inputs stay, read or not: they are the
//! model's calling convention.
//!
//! The pass first checks whether anything is dead, so an already clean graph is reported as
//! unchanged and not rebuilt.

use crate::{Pass, PassError};
use qcc_ir::{Graph, ValueDef};
use std::collections::HashSet;

pub struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate-dead-code"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let err = |source| PassError::Graph {
            pass: "eliminate-dead-code",
            source,
        };
        remove_dead_code(graph).map_err(err)
    }
}

/// Rebuilds `g` without its dead nodes and unread constants, if it has any; returns whether
/// it did. The other canonical passes call this on the graph they built, so that a pass that
/// changed the graph never leaves behind what its rewrite orphaned.
pub(crate) fn remove_dead_code(g: &mut Graph) -> Result<bool, qcc_ir::GraphError> {
    if !has_dead_code(g)? {
        return Ok(false);
    }
    *g = g.rebuild(|r, node| r.copy_node(node))?;
    Ok(true)
}

/// Whether some node is not live, or some constant is read by nothing.
fn has_dead_code(g: &Graph) -> Result<bool, qcc_ir::GraphError> {
    let live = g.live_nodes()?;
    if live.len() != g.node_count() {
        return Ok(true);
    }
    let read: HashSet<_> = g
        .petgraph()
        .node_indices()
        .flat_map(|n| g.node(n).inputs.iter().copied())
        .chain(g.outputs().iter().copied())
        .collect();
    Ok(g.values()
        .any(|(id, v)| matches!(v.def, ValueDef::Constant(_)) && !read.contains(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::testing::{assert_same_semantics, ops, parse, run_pass, text};

    #[test]
    fn an_unused_branch_and_its_constants_are_removed() {
        let g = parse(
            "graph g(%x: f32[1,4]) -> (%y) {
               %w = const f32[4] dense<1.0, 2.0, 3.0, 4.0>
               %k = const f32[4] splat<2.0>
               %y = Relu(%x) : f32[1,4]
               %d1 = Mul(%x, %w) : f32[1,4]
               %d2 = Sigmoid(%d1) : f32[1,4]
               %d3 = Add(%d2, %k) : f32[1,4]
             }",
        );
        let (after, changed) = run_pass(&EliminateDeadCode, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Relu"]);
        assert!(after.value_by_name("w").is_none() && after.value_by_name("k").is_none());
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn an_unread_constant_alone_counts_as_dead() {
        let g = parse(
            "graph g(%x: f32[2]) -> (%y) {
               %unused = const f32[2] dense<1.0, 2.0>
               %y = Relu(%x) : f32[2]
             }",
        );
        let (after, changed) = run_pass(&EliminateDeadCode, &g);
        assert!(changed);
        assert!(after.value_by_name("unused").is_none());
    }

    #[test]
    fn a_clean_graph_is_unchanged_and_unused_inputs_stay() {
        let g = parse(
            "graph g(%x: f32[2], %unused: f32[3]) -> (%y, %x) {
               %a = const f32[2] dense<1.0, 2.0>
               %y = Add(%x, %a) : f32[2]
             }",
        );
        let (after, changed) = run_pass(&EliminateDeadCode, &g);
        assert!(!changed);
        assert_eq!(text(&after), text(&g));
        assert_eq!(after.inputs().len(), 2);
    }

    #[test]
    fn a_node_with_one_live_output_stays_whole() {
        let g = parse(
            "graph g(%x: f32[1,4]) -> (%a) {
               %a, %b = Split(%x) {axis=1, sizes=[2,2]} : f32[1,2], f32[1,2]
               %dead = Relu(%b) : f32[1,2]
             }",
        );
        let (after, changed) = run_pass(&EliminateDeadCode, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Split"]);
        assert_same_semantics(&g, &after);
    }
}
