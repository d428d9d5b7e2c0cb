//! The canonical passes, run before the e-graph: constant folding, Identity/Dropout removal,
//! shape-chain folding and dead-code elimination.
//!
//! Each pass is one file and rebuilds the graph ([`qcc_ir::Graph::rebuild`]) only when it
//! has something to do, so it reports "changed" truthfully. A rebuild also drops dead nodes;
//! `eliminate-dead-code` is what guarantees it happens once, at the end.

mod eliminate_dead_code;
mod fold_constants;
mod fold_shape_chains;
mod remove_identities;
#[cfg(test)]
mod testing;

pub use eliminate_dead_code::EliminateDeadCode;
pub use fold_constants::FoldConstants;
pub use fold_shape_chains::FoldShapeChains;
pub use remove_identities::RemoveIdentities;

use crate::{PassError, PassManager};
use qcc_ir::{Graph, GraphError, Node, Rebuilder, ValueId};

/// The shared shape of a rewriting canonical pass: rebuild `graph`, letting `rewrite` replace
/// a node (`Some(values)`) or keep it (`None`). Only when some node was replaced is the new
/// graph kept, and what the replacements left unread is removed at once; returns whether
/// anything changed.
pub(crate) fn rewrite_nodes(
    graph: &mut Graph,
    pass: &'static str,
    mut rewrite: impl FnMut(&mut Rebuilder, &Node) -> Result<Option<Vec<ValueId>>, GraphError>,
) -> Result<bool, PassError> {
    let err = |source| PassError::Graph { pass, source };
    let mut replaced = 0usize;
    let new = graph
        .rebuild(|r, node| match rewrite(r, node)? {
            Some(values) => {
                replaced += 1;
                Ok(values)
            }
            None => r.copy_node(node),
        })
        .map_err(err)?;
    if replaced == 0 {
        // Every candidate was dead or could not be rewritten: the graph stays as it was
        // (removing dead code is another pass's job and report).
        return Ok(false);
    }
    *graph = new;
    eliminate_dead_code::remove_dead_code(graph).map_err(err)?;
    Ok(true)
}

/// The canonical passes in pipeline order, by name.
///
/// Why this order: folding first turns `ConstantOfShape` weights and shape arithmetic into
/// constants (an Identity or Dropout of a constant folds with them); removing identities then
/// brings reshapes next to each other (Reshape → Identity → Reshape); the reshape chains
/// collapse; finally everything left unread goes.
pub const CANONICAL_PASSES: [&str; 4] = [
    "fold-constants",
    "remove-identities",
    "fold-shape-chains",
    "eliminate-dead-code",
];

/// Adds the canonical passes, in order, to a pipeline.
pub fn add_canonical_passes(pm: &mut PassManager) {
    for name in CANONICAL_PASSES {
        let added = add_pass_by_name(pm, name);
        debug_assert!(added, "canonical pass '{name}' has no constructor");
    }
}

/// Adds the canonical pass called `name`; false if there is none.
pub fn add_pass_by_name(pm: &mut PassManager, name: &str) -> bool {
    match name {
        "fold-constants" => pm.add(FoldConstants),
        "remove-identities" => pm.add(RemoveIdentities),
        "fold-shape-chains" => pm.add(FoldShapeChains),
        "eliminate-dead-code" => pm.add(EliminateDeadCode),
        _ => return false,
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::testing::{assert_same_semantics, ops, parse};

    #[test]
    fn every_name_builds_its_pass_and_unknown_names_do_not() {
        let mut pm = PassManager::new();
        add_canonical_passes(&mut pm);
        assert_eq!(pm.pass_names(), CANONICAL_PASSES);
        assert!(!add_pass_by_name(&mut pm, "fold-everything"));
    }

    #[test]
    fn a_pytorch_shape_chain_disappears_in_the_canonical_pipeline() {
        // `x.view(x.size(0), -1)` as exported, with the Reshape's shape resolved at import
        // and the chain left behind; the chain's end is also read by an Identity-wrapped
        // output so that it must fold rather than just die.
        let g = parse(
            "graph g(%x: f32[2,3,2]) -> (%y, %n) {
               %i0 = const i64[] dense<0>
               %s = Shape(%x) : i64[3]
               %d0 = Gather(%s, %i0) {axis=0} : i64[]
               %u = Unsqueeze(%d0) {axes=[0]} : i64[1]
               %m1 = const i64[1] dense<-1>
               %c = Concat(%u, %m1) {axis=0} : i64[2]
               %n = Identity(%c) : i64[2]
               %i = Identity(%x) : f32[2,3,2]
               %r = Reshape(%i) {shape=[2,-1]} : f32[2,6]
               %y = Reshape(%r) {shape=[2,3,2]} : f32[2,3,2]
             }",
        );
        let mut after = g.clone();
        let mut pm = PassManager::new();
        add_canonical_passes(&mut pm);
        if let Err(e) = pm.run(&mut after, None, None) {
            panic!("pipeline failed: {e}");
        }
        // y is x again; n is the constant [2, -1].
        assert_eq!(ops(&after), ["Identity"]);
        let n = after.outputs()[1];
        assert_eq!(
            after.constant(n).and_then(|t| t.to_i64_vec()),
            Some(vec![2, -1])
        );
        assert_same_semantics(&g, &after);
    }
}
