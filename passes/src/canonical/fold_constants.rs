//! `fold-constants`: nodes whose inputs are all constants become constants.
//!
//! Each such node is evaluated with the reference interpreter ([`qcc_ir::eval::eval_op`]), so
//! a folded value is by construction what the node would have computed at run time. There is
//! no size limit: the ONNX light models build their weights with `ConstantOfShape` (a node
//! with no inputs), and folding is what turns those into real weights the later rewrites can
//! fold batch norms into. A `Shape` node always folds, whatever its input, because every
//! shape in a qcc graph is static; with it, PyTorch's shape arithmetic
//! (Shape → Gather → Unsqueeze → Concat) folds to constants node by node, in topological
//! order, and the dead-code pass then removes whatever nothing reads.
//!
//! A folded constant takes the name of the node output it replaces, so later dumps and
//! diagnostics still speak of the same tensor.
//!
//! Not folded, on purpose:
//! - `QuantizeLinear` / `DequantizeLinear`: in a QDQ model, `DequantizeLinear(int8 weight)`
//!   is how the model says "this conv runs in int8"; folding it to an f32 constant would
//!   erase the quantization the later passes realise.
//! - a node the interpreter cannot evaluate: it stays as it is (the error, if it is one,
//!   surfaces at run time with the node's name), rather than failing the whole pipeline.

use crate::{Pass, PassError};
use qcc_ir::{Graph, Node, Op, Rebuilder, Tensor, ValueDef, ValueId};
use std::sync::Arc;

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        if !graph
            .petgraph()
            .node_indices()
            .any(|n| is_foldable(graph, graph.node(n)))
        {
            return Ok(false);
        }
        // What only a folded node read (the producer of a Shape's input) is removed with it.
        super::rewrite_nodes(graph, self.name(), |r, node| fold_node(r, node).transpose())
    }
}

/// Quantization boundaries are the quantization passes' to realise, not constants.
fn keeps_quantization_boundary(op: &Op) -> bool {
    matches!(op, Op::QuantizeLinear(_) | Op::DequantizeLinear(_))
}

/// A cheap pre-check on the original graph: may a node fold once its inputs have folded?
/// (Only Shape and nodes fed by constants can start a chain.)
fn is_foldable(g: &Graph, node: &Node) -> bool {
    if keeps_quantization_boundary(&node.op) {
        return false;
    }
    matches!(node.op, Op::Shape { .. }) || node.inputs.iter().all(|&v| g.constant(v).is_some())
}

/// The constants standing for `node`'s outputs in the new graph, or `None` to copy the node.
fn fold_node(r: &mut Rebuilder, node: &Node) -> Option<Result<Vec<ValueId>, qcc_ir::GraphError>> {
    if keeps_quantization_boundary(&node.op) {
        return None;
    }
    let outputs = if let Op::Shape { start, end } = node.op {
        // The input's type is static, so its value is not needed (nor, for an activation,
        // available).
        let input = r.old().value(*node.inputs.first()?);
        let dims = input.ty.dims().get(start..end)?;
        vec![Tensor::from_i64(
            &[dims.len()],
            dims.iter().map(|&d| d as i64).collect(),
        )]
    } else {
        let mut args = Vec::with_capacity(node.inputs.len());
        for &old in &node.inputs {
            // An original constant is read from the old graph rather than mapped: mapping
            // would copy it into the new graph, where nothing might read it any more.
            if let ValueDef::Constant(t) = &r.old().value(old).def {
                args.push(Arc::clone(t));
                continue;
            }
            let new = r.map(old).ok()?;
            match &r.new.value(new).def {
                ValueDef::Constant(t) => args.push(Arc::clone(t)),
                _ => return None,
            }
        }
        let refs: Vec<&Tensor> = args.iter().map(|t| &**t).collect();
        qcc_ir::eval::eval_op(&node.op, &refs).ok()?
    };
    let mut values = Vec::with_capacity(outputs.len());
    for (&old, t) in node.outputs.iter().zip(outputs) {
        let name = r.old().value(old).name.clone();
        values.push(r.new.add_constant(name, t));
    }
    Some(values.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::testing::{assert_same_semantics, count_op, ops, parse, run_pass};

    #[test]
    fn a_chain_of_constant_arithmetic_becomes_one_constant_named_after_its_output() {
        let g = parse(
            "graph g(%x: f32[2]) -> (%y) {
               %a = const f32[2] dense<1.0, 2.0>
               %b = const f32[2] dense<3.0, 5.0>
               %s = Add(%a, %b) : f32[2]
               %m = Mul(%s, %s) : f32[2]
               %y = Add(%x, %m) : f32[2]
             }",
        );
        let (after, changed) = run_pass(&FoldConstants, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Add"]);
        assert!(after.value_by_name("a").is_none() && after.value_by_name("s").is_none());
        let m = after
            .value_by_name("m")
            .expect("the folded value keeps its name");
        assert_eq!(
            after.constant(m),
            Some(&Tensor::from_f32(&[2], vec![16.0, 49.0]))
        );
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn constant_of_shape_weights_and_shapes_of_activations_fold() {
        let g = parse(
            "graph g(%x: f32[1,2,4,4]) -> (%y, %s) {
               %w = ConstantOfShape() {shape=[3,2,1,1], value=f32[1] dense<0.5>} : f32[3,2,1,1]
               %y = Conv(%x, %w) {kernel=[1,1]} : f32[1,3,4,4]
               %s = Shape(%y) {start=1, end=4} : i64[3]
             }",
        );
        let (after, changed) = run_pass(&FoldConstants, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Conv"]);
        assert_eq!(count_op(&after, "ConstantOfShape"), 0);
        let s = after.outputs()[1];
        assert_eq!(after.value(s).name, "s");
        assert_eq!(
            after.constant(s),
            Some(&Tensor::from_i64(&[3], vec![3, 4, 4]))
        );
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn nothing_to_fold_reports_unchanged_and_keeps_the_graph() {
        let src = "graph g(%x: f32[2]) -> (%y) {
               %a = const f32[2] dense<1.0, 2.0>
               %y = Add(%x, %a) : f32[2]
               %dead = Relu(%x) : f32[2]
             }";
        let g = parse(src);
        let (after, changed) = run_pass(&FoldConstants, &g);
        assert!(!changed);
        // The dead Relu stays: dropping it is eliminate-dead-code's job and report.
        assert_eq!(ops(&after), ["Add", "Relu"]);
    }

    #[test]
    fn dequantize_of_a_constant_weight_is_kept() {
        let g = parse(
            "graph g(%x: f32[1,2]) -> (%y) {
               %wq = const i8[2,2] dense<1, -2, 3, 4>
               %w = DequantizeLinear(%wq) {q=i8(scale=0.5, zp=0)} : f32[2,2]
               %y = MatMul(%x, %w) : f32[1,2]
             }",
        );
        let (after, changed) = run_pass(&FoldConstants, &g);
        assert!(!changed);
        assert_eq!(ops(&after), ["DequantizeLinear", "MatMul"]);
        assert_same_semantics(&g, &after);
    }
}
