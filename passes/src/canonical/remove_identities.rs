//! `remove-identities`: Identity and inference-mode Dropout forward their input.
//!
//! Dropout at inference is the identity on its data output; its optional mask output is all
//! true. A Dropout whose mask nothing reads is removed; one whose mask is read stays (a
//! boolean tensor of trues is rarely worth a special case, and the mask reader still needs it).
//!
//! Graph outputs keep their names: when the forwarded value can take the output's name,
//! [`Graph::rebuild`] renames it; when it cannot (it is a graph input, a constant, or already
//! another graph output), rebuild would have to put an Identity back. Such an Identity is
//! therefore left in place, so that the pass reports "unchanged" on a graph it cannot improve.

use super::eliminate_dead_code::remove_dead_code;
use crate::{Pass, PassError};
use qcc_ir::{
    DType, Graph, GraphError, Node, Op, Rebuilder, Tensor, TensorType, ValueDef, ValueId,
};
use std::collections::HashSet;

pub struct RemoveIdentities;

impl Pass for RemoveIdentities {
    fn name(&self) -> &'static str {
        "remove-identities"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let err = |source| PassError::Graph {
            pass: "remove-identities",
            source,
        };
        let candidates = graph
            .petgraph()
            .node_indices()
            .any(|n| matches!(graph.node(n).op, Op::Identity | Op::Dropout { .. }));
        if !candidates {
            return Ok(false);
        }
        let old_outputs: Vec<ValueId> = graph.outputs().to_vec();
        let mut claimed = HashSet::new();
        let mut removed = 0usize;
        let new = graph
            .rebuild(|r, node| {
                let forwarded = match node.op {
                    Op::Identity => {
                        let v = r.map(node.inputs[0])?;
                        if keep_identity(r, node, v, &old_outputs, &claimed) {
                            return r.copy_node(node);
                        }
                        vec![v]
                    }
                    Op::Dropout { mask_output } => {
                        let mask_read = mask_output && is_read(r.old(), node.outputs[1]);
                        if mask_read {
                            return r.copy_node(node);
                        }
                        let mut outs = vec![r.map(node.inputs[0])?];
                        if mask_output {
                            outs.push(unread_mask_placeholder(r, node)?);
                        }
                        outs
                    }
                    _ => return r.copy_node(node),
                };
                if old_outputs.contains(&node.outputs[0]) {
                    claimed.insert(forwarded[0]);
                }
                removed += 1;
                Ok(forwarded)
            })
            .map_err(err)?;
        if removed == 0 {
            return Ok(false);
        }
        // The placeholders for unread masks are dead in the new graph.
        *graph = new;
        remove_dead_code(graph).map_err(err)?;
        Ok(true)
    }
}

/// Whether a node or the graph outputs read `v`.
fn is_read(g: &Graph, v: ValueId) -> bool {
    g.outputs().contains(&v) || !g.consumers(v).is_empty()
}

/// An Identity that defines a graph output stays when its input `v` (in the new graph) could
/// not be renamed to the output's name; see the module docs.
fn keep_identity(
    r: &mut Rebuilder,
    node: &Node,
    v: ValueId,
    old_outputs: &[ValueId],
    claimed: &HashSet<ValueId>,
) -> bool {
    let out = node.outputs[0];
    if !old_outputs.contains(&out) {
        return false;
    }
    if !matches!(r.new.value(v).def, ValueDef::Node { .. }) || claimed.contains(&v) {
        return true;
    }
    // Another graph output already stands for `v`. Only node-defined outputs are looked up:
    // mapping a constant would copy it into the new graph.
    old_outputs.iter().any(|&o| {
        o != out
            && matches!(r.old().value(o).def, ValueDef::Node { .. })
            && r.map(o).ok() == Some(v)
    })
}

/// A stand-in for an unread Dropout mask, so the rebuilt node has a value for every output;
/// nothing reads it, and the final copy removes it.
fn unread_mask_placeholder(r: &mut Rebuilder, node: &Node) -> Result<ValueId, GraphError> {
    let mask = r.old().value(node.outputs[1]);
    let dims = mask.ty.dims().to_vec();
    let name = r.new.fresh_name(&format!("{}.unread_mask", node.name));
    let truth = Tensor::from_le_bytes(&TensorType::new(DType::Bool, vec![1]), &[1])
        .ok_or_else(|| GraphError::Other("cannot build a bool tensor".into()))?;
    let id = r.new.add_node(
        name.clone(),
        Op::ConstantOfShape {
            shape: dims,
            value: truth,
        },
        vec![],
        vec![name],
    )?;
    Ok(r.new.node(id).outputs[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::testing::{assert_same_semantics, ops, parse, run_pass, text};

    #[test]
    fn identities_inside_the_graph_are_bypassed() {
        let g = parse(
            "graph g(%x: f32[1,4]) -> (%y) {
               %a = Relu(%x) : f32[1,4]
               %b = Identity(%a) : f32[1,4]
               %c = Identity(%b) : f32[1,4]
               %y = Sigmoid(%c) : f32[1,4]
             }",
        );
        let (after, changed) = run_pass(&RemoveIdentities, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Relu", "Sigmoid"]);
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn an_identity_feeding_a_graph_output_hands_its_name_to_its_input() {
        let g = parse(
            "graph g(%x: f32[1,4]) -> (%out) {
               %a = Relu(%x) : f32[1,4]
               %out = Identity(%a) : f32[1,4]
             }",
        );
        let (after, changed) = run_pass(&RemoveIdentities, &g);
        assert!(changed);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(after.value(after.outputs()[0]).name, "out");
        assert_same_semantics(&g, &after);
    }

    #[test]
    fn an_identity_that_cannot_be_removed_is_left_and_reported_unchanged() {
        // Output `x2` is the input `x` under another name, and `r2` is `r` under another name:
        // both need their Identity.
        let g = parse(
            "graph g(%x: f32[2]) -> (%x2, %r, %r2) {
               %x2 = Identity(%x) : f32[2]
               %r = Relu(%x) : f32[2]
               %r2 = Identity(%r) : f32[2]
             }",
        );
        let (after, changed) = run_pass(&RemoveIdentities, &g);
        assert!(!changed);
        assert_eq!(text(&after), text(&g));
    }

    #[test]
    fn dropouts_go_unless_their_mask_is_read() {
        let g = parse(
            "graph g(%x: f32[1,4]) -> (%y, %m2) {
               %d1 = Dropout(%x) {mask_output=false} : f32[1,4]
               %d2, %m = Dropout(%d1) {mask_output=true} : f32[1,4], bool[1,4]
               %d3, %m2 = Dropout(%d2) {mask_output=true} : f32[1,4], bool[1,4]
               %y = Relu(%d3) : f32[1,4]
             }",
        );
        let (after, changed) = run_pass(&RemoveIdentities, &g);
        assert!(changed);
        // d1 and d2 (mask unread) go, d3 (its mask is a graph output) stays; no placeholder
        // survives.
        assert_eq!(ops(&after), ["Dropout", "Relu"]);
        assert!(!text(&after).contains("unread_mask"), "{}", text(&after));
        assert_same_semantics(&g, &after);
    }
}
