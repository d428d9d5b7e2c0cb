//! `fold-shape-chains`: collapses chains of reshapes and removes reshapes that change nothing.
//!
//! PyTorch exports `x.view(x.size(0), -1)` as Shape → Gather → Unsqueeze → Concat → Reshape.
//! In qcc's IR the Reshape's target shape is an attribute, resolved by the importer (the
//! graph computes such small values while it is built), so the shape computation is already
//! dead after import; `fold-constants` folds any part of it that something still reads
//! (every `Shape` is static) and `eliminate-dead-code` removes the rest. This pass does not
//! repeat that logic. What it adds is the clean-up that the resolved chains leave behind and
//! that constant folding cannot do, because the data is an activation:
//!
//! - a `Reshape` whose input comes from a chain of pure reshapes (`Reshape`, `Flatten`,
//!   `Squeeze`, `Unsqueeze`: all keep row-major order, so any chain of them is one reshape)
//!   reads the chain's input directly; the inner nodes stay only if something else reads
//!   them.
//! - a pure reshape whose output type equals its input type is removed (its input forwarded;
//!   a graph output keeps its name, see [`qcc_ir::Graph::rebuild`]).

use crate::{Pass, PassError};
use qcc_ir::{Graph, GraphError, Node, Op, Rebuilder, ValueDef, ValueId};

pub struct FoldShapeChains;

impl Pass for FoldShapeChains {
    fn name(&self) -> &'static str {
        "fold-shape-chains"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        if !graph
            .petgraph()
            .node_indices()
            .any(|n| could_simplify(graph, graph.node(n)))
        {
            return Ok(false);
        }
        // The inner reshapes of collapsed chains are removed when nothing else reads them.
        super::rewrite_nodes(graph, self.name(), simplify)
    }
}

/// Ops that only reinterpret the dims of row-major data.
fn is_pure_reshape(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. }
    )
}

/// The node producing `v` in `g`, if a node does.
fn producer(g: &Graph, v: ValueId) -> Option<&Node> {
    match g.value(v).def {
        ValueDef::Node { node, .. } => Some(g.node(node)),
        _ => None,
    }
}

/// A cheap pre-check on the original graph, so an unchanged graph is not rebuilt.
fn could_simplify(g: &Graph, node: &Node) -> bool {
    if !is_pure_reshape(&node.op) {
        return false;
    }
    let input = node.inputs[0];
    g.value(input).ty == g.value(node.outputs[0]).ty
        || (matches!(node.op, Op::Reshape { .. })
            && producer(g, input).is_some_and(|p| is_pure_reshape(&p.op)))
}

/// The values standing for `node`'s outputs when it simplifies, `None` to copy it.
fn simplify(r: &mut Rebuilder, node: &Node) -> Result<Option<Vec<ValueId>>, GraphError> {
    if !is_pure_reshape(&node.op) {
        return Ok(None);
    }
    let input = r.map(node.inputs[0])?;
    let out_ty = &r.old().value(node.outputs[0]).ty;
    if &r.new.value(input).ty == out_ty {
        return Ok(Some(vec![input]));
    }
    let Op::Reshape { shape, allow_zero } = &node.op else {
        return Ok(None);
    };
    // The start of the chain of pure reshapes ending at `input` (in the new graph, where a
    // Reshape of the chain has already been pointed at its own start).
    let mut source = input;
    while let Some(inner) = producer(&r.new, source).filter(|p| is_pure_reshape(&p.op)) {
        source = inner.inputs[0];
    }
    if source == input {
        return Ok(None);
    }
    if &r.new.value(source).ty == out_ty {
        return Ok(Some(vec![source]));
    }
    // A 0 in the target shape copies a dim of the reshape's input, which is no longer the
    // same tensor: spell the output dims out instead.
    let shape = if !allow_zero && shape.contains(&0) {
        out_ty.dims().iter().map(|&d| d as i64).collect()
    } else {
        shape.clone()
    };
    let allow_zero = *allow_zero || out_ty.dims().contains(&0);
    let out_name = r.old().value(node.outputs[0]).name.clone();
    let id = r.new.add_node(
        node.name.clone(),
        Op::Reshape { shape, allow_zero },
        vec![source],
        vec![out_name],
    )?;
    Ok(Some(r.new.node(id).outputs.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::testing::{assert_same_semantics, count_op, ops, parse, run_pass, text};

    #[test]
    fn a_chain_of_reshapes_reads_the_original_tensor() {
        let g = parse(
            "graph g(%x: f32[2,3,4]) -> (%y) {
               %a = Flatten(%x) {axis=1} : f32[2,12]
               %b = Unsqueeze(%a) {axes=[0]} : f32[1,2,12]
               %c = Reshape(%b) {shape=[0,6,-1]} : f32[1,6,4]
               %y = Relu(%c) : f32[1,6,4]
             }",
        );
        let (after, changed) = run_pass(&FoldShapeChains, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Relu", "Reshape"]);
        let printed = text(&after);
        // The 0 referred to the Unsqueeze's output; the collapsed reshape spells dims out.
        assert!(
            printed.contains("%c = Reshape(%x) {shape=[1,6,4]"),
            "{printed}"
        );
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn an_inner_reshape_with_another_reader_stays() {
        let g = parse(
            "graph g(%x: f32[2,6]) -> (%y, %z) {
               %a = Reshape(%x) {shape=[3,4]} : f32[3,4]
               %y = Relu(%a) : f32[3,4]
               %z = Reshape(%a) {shape=[12]} : f32[12]
             }",
        );
        let (after, changed) = run_pass(&FoldShapeChains, &g);
        assert!(changed);
        assert_eq!(count_op(&after, "Reshape"), 2);
        assert!(
            text(&after).contains("%z = Reshape(%x)"),
            "{}",
            text(&after)
        );
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn reshapes_to_the_same_shape_vanish_even_as_graph_outputs() {
        let g = parse(
            "graph g(%x: f32[2,6]) -> (%y) {
               %r = Relu(%x) : f32[2,6]
               %a = Reshape(%r) {shape=[3,4]} : f32[3,4]
               %b = Reshape(%a) {shape=[2,6]} : f32[2,6]
               %y = Squeeze(%b) {axes=[]} : f32[2,6]
             }",
        );
        let (after, changed) = run_pass(&FoldShapeChains, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(after.value(after.outputs()[0]).name, "y");
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn reshape_after_a_transpose_is_not_touched() {
        let g = parse(
            "graph g(%x: f32[2,6]) -> (%y) {
               %t = Transpose(%x) {perm=[1,0]} : f32[6,2]
               %y = Reshape(%t) {shape=[3,4]} : f32[3,4]
             }",
        );
        let (after, changed) = run_pass(&FoldShapeChains, &g);
        assert!(!changed);
        assert_eq!(text(&after), text(&g));
    }
}
