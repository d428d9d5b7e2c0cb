//! An independent check of a memory plan against its graph.
//!
//! It recomputes lifetimes from the graph and the plan's node order instead of trusting the
//! planner's, and it derives the allowed overlaps from the graph (views, Split, Concat) rather
//! than from the plan's aliases, so a planner bug that aliases unrelated tensors fails here.

use super::{is_view, Address, Facts, Location, MemoryPlan, PlanError, Region, ALIGNMENT};
use qcc_ir::{Graph, Op, ValueDef, ValueId};
use std::collections::HashMap;

/// Union-find over values the graph allows to share bytes (a view and its input, a Split's
/// input and outputs, a Concat's inputs and output).
struct AliasClasses(Vec<usize>);

impl AliasClasses {
    fn find(&mut self, mut v: usize) -> usize {
        while self.0[v] != v {
            self.0[v] = self.0[self.0[v]];
            v = self.0[v];
        }
        v
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        self.0[ra] = rb;
    }
}

impl MemoryPlan {
    /// Checks that the plan is sound for `graph`: every location matches the value's role,
    /// offsets are 64-byte aligned and in bounds, nothing is written into an input or the
    /// weights, and no two simultaneously live tensors share bytes unless the graph makes
    /// them views of one another.
    pub fn verify(&self, graph: &Graph) -> Result<(), PlanError> {
        let facts = Facts::new(graph)?;
        let fail = |m: String| Err(PlanError::Check(m));
        let name = |v: ValueId| graph.value(v).name.clone();
        let n = facts.sizes.len();
        if self.slots.len() != n || self.lifetimes.len() != n {
            return fail(format!(
                "plan has {} slots for {n} values",
                self.slots.len()
            ));
        }
        self.check_order(graph)?;
        self.check_weights(graph, &facts)?;

        for (id, v) in graph.values() {
            let i = id.index();
            let size = facts.sizes[i];
            let used = !facts.readers[i].is_empty() || facts.is_output(id);
            match self.slots[i] {
                Location::Input(k) => {
                    if facts.input_index[i] != Some(k) {
                        return fail(format!("%{} is not graph input {k}", name(id)));
                    }
                }
                Location::Output(k) => {
                    if graph.outputs().get(k) != Some(&id) || facts.def_pos[i].is_none() {
                        return fail(format!("%{} is not a produced graph output {k}", v.name));
                    }
                }
                Location::Weight(_) => {} // checked with the weight slots
                Location::Arena(o) => {
                    if o % ALIGNMENT != 0 || o + size > self.arena_bytes {
                        return fail(format!(
                            "%{} at arena offset {o} (+{size}) is misaligned or beyond {} bytes",
                            v.name, self.arena_bytes
                        ));
                    }
                    if !facts.is_intermediate(id) {
                        return fail(format!(
                            "%{} is in the arena but is no intermediate",
                            v.name
                        ));
                    }
                }
                Location::Alias { of, offset } => {
                    let owner_ok = matches!(
                        self.slots.get(of.index()),
                        Some(Location::Input(_) | Location::Output(_))
                            | Some(Location::Weight(_) | Location::Arena(_))
                    );
                    if !owner_ok || offset + size > facts.sizes[of.index()] {
                        return fail(format!(
                            "%{} aliases %{} +{offset} outside an owner's bytes",
                            v.name,
                            name(of)
                        ));
                    }
                    if facts.def_pos[i].is_none() || facts.is_output(id) {
                        return fail(format!("%{} must own its storage", v.name));
                    }
                }
                Location::Unused => {
                    if used || facts.def_pos[i].is_some() {
                        return fail(format!("%{} is used but has no location", v.name));
                    }
                }
            }
            if let (Location::Weight(_), false) =
                (self.slots[i], matches!(v.def, ValueDef::Constant(_)))
            {
                return fail(format!("%{} is in the weights but is no constant", v.name));
            }
        }
        self.check_outputs(graph)?;
        self.check_writes(graph, &facts)?;
        self.check_alias_offsets(graph, &facts)?;
        self.check_overlaps(graph, &facts)
    }

    fn check_order(&self, graph: &Graph) -> Result<(), PlanError> {
        let pos: HashMap<_, _> = self
            .order
            .iter()
            .enumerate()
            .map(|(p, &n)| (n, p))
            .collect();
        if pos.len() != graph.node_count() || self.order.len() != graph.node_count() {
            return Err(PlanError::Check(
                "order does not list every node once".into(),
            ));
        }
        for (p, &n) in self.order.iter().enumerate() {
            for &i in &graph.node(n).inputs {
                if let ValueDef::Node { node, .. } = graph.value(i).def {
                    if pos.get(&node).is_none_or(|&q| q >= p) {
                        return Err(PlanError::Check(format!(
                            "node '{}' runs before the producer of its input",
                            graph.node(n).name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_weights(&self, graph: &Graph, facts: &Facts) -> Result<(), PlanError> {
        let mut slots = self.weights.clone();
        slots.sort_by_key(|w| w.offset);
        let mut end = 0;
        for w in &slots {
            let ok = w.offset % ALIGNMENT == 0
                && w.offset >= end
                && w.size == facts.sizes[w.value.index()]
                && w.offset + w.size <= self.weights_bytes
                && self.slots[w.value.index()] == Location::Weight(w.offset);
            if !ok {
                return Err(PlanError::Check(format!(
                    "weight %{} at {} (+{}) overlaps, is misaligned or out of bounds",
                    graph.value(w.value).name,
                    w.offset,
                    w.size
                )));
            }
            end = w.offset + w.size;
        }
        let in_blob = self
            .slots
            .iter()
            .filter(|l| matches!(l, Location::Weight(_)))
            .count();
        if in_blob != slots.len() {
            return Err(PlanError::Check(
                "a weight location has no weight slot".into(),
            ));
        }
        Ok(())
    }

    /// Every output buffer is written exactly once: by its producer or by a copy.
    fn check_outputs(&self, graph: &Graph) -> Result<(), PlanError> {
        for (j, &o) in graph.outputs().iter().enumerate() {
            let produced = self.slots[o.index()] == Location::Output(j);
            let copies = self.output_copies.iter().filter(|c| c.output == j).count();
            let from_ok = self
                .output_copies
                .iter()
                .all(|c| c.output != j || c.from == o);
            if produced as usize + copies != 1 || !from_ok {
                return Err(PlanError::Check(format!(
                    "output {j} (%{}) is written {} times",
                    graph.value(o).name,
                    produced as usize + copies
                )));
            }
        }
        Ok(())
    }

    /// No node writes into an input buffer or the weights; the only outputs located there are
    /// views (or Split slices) of their own input, which need no code.
    fn check_writes(&self, graph: &Graph, facts: &Facts) -> Result<(), PlanError> {
        for &n in &self.order {
            let node = graph.node(n);
            for &o in &node.outputs {
                let Some(at) = self.address(o) else {
                    return Err(PlanError::Check(format!(
                        "%{} has no address",
                        graph.value(o).name
                    )));
                };
                if matches!(at.region, Region::Arena | Region::Output(_)) {
                    continue;
                }
                let viewing = is_view(&node.op) || matches!(node.op, Op::Split { .. });
                let inside_input = self.address(node.inputs[0]).is_some_and(|src| {
                    src.region == at.region
                        && src.offset <= at.offset
                        && at.offset + facts.sizes[o.index()]
                            <= src.offset + facts.sizes[node.inputs[0].index()]
                });
                if !(viewing && inside_input) {
                    return Err(PlanError::Check(format!(
                        "node '{}' would write %{} into read-only memory",
                        node.name,
                        graph.value(o).name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Where a view, Split or Concat shares bytes between an input and an output, they sit
    /// exactly where the op's semantics put them (a view: same bytes; a slice: its offset).
    fn check_alias_offsets(&self, graph: &Graph, facts: &Facts) -> Result<(), PlanError> {
        for &n in &self.order {
            let node = graph.node(n);
            // (whole, part, byte offset of part inside whole)
            let mut pairs: Vec<(ValueId, ValueId, usize)> = Vec::new();
            match &node.op {
                op if is_view(op) => pairs.push((node.inputs[0], node.outputs[0], 0)),
                Op::Split { axis, .. } | Op::Concat { axis } => {
                    let split = matches!(node.op, Op::Split { .. });
                    let (whole, parts) = if split {
                        (node.inputs[0], &node.outputs)
                    } else {
                        (node.outputs[0], &node.inputs)
                    };
                    let ty = &graph.value(whole).ty;
                    let outer: usize = ty.dims()[..*axis].iter().product();
                    let inner: usize = ty.dims()[*axis + 1..].iter().product();
                    let mut offset = 0;
                    for &part in parts.iter() {
                        // Only a contiguous slice has one offset; others must not overlap.
                        let at = if outer == 1 { offset } else { usize::MAX };
                        pairs.push((whole, part, at));
                        offset +=
                            graph.value(part).ty.dims()[*axis] * inner * ty.dtype.size_bytes();
                    }
                }
                _ => {}
            }
            for (whole, part, expected) in pairs {
                let (Some(w), Some(p)) = (self.address(whole), self.address(part)) else {
                    continue;
                };
                let (wsz, psz) = (facts.sizes[whole.index()], facts.sizes[part.index()]);
                let overlap =
                    w.region == p.region && w.offset < p.offset + psz && p.offset < w.offset + wsz;
                if overlap && p.offset.checked_sub(w.offset) != Some(expected) {
                    return Err(PlanError::Check(format!(
                        "node '{}': %{} shares bytes with %{} at the wrong offset",
                        node.name,
                        graph.value(part).name,
                        graph.value(whole).name
                    )));
                }
            }
        }
        Ok(())
    }

    /// No two values live at the same time share bytes of the arena or of an output buffer,
    /// unless the graph relates them (view, Split, Concat: [`Self::check_alias_offsets`]
    /// checks that such bytes are shared at the right offset). Two slices of one tensor may
    /// overlap, e.g. two Splits of the same view: neither is written. Graph outputs stay live
    /// to the end of the run (the caller reads them).
    fn check_overlaps(&self, graph: &Graph, facts: &Facts) -> Result<(), PlanError> {
        let n = facts.sizes.len();
        let mut classes = AliasClasses((0..n).collect());
        for &id in &self.order {
            let node = graph.node(id);
            let related =
                is_view(&node.op) || matches!(node.op, Op::Split { .. } | Op::Concat { .. });
            if related {
                let first_out = node.outputs[0].index();
                let outs = if is_view(&node.op) {
                    &node.outputs[..1]
                } else {
                    &node.outputs[..]
                };
                for v in node.inputs.iter().chain(outs) {
                    classes.union(v.index(), first_out);
                }
            }
        }
        let end = self.order.len();
        let mut live: Vec<(ValueId, Address, usize, usize, usize)> = Vec::new();
        for i in 0..n {
            let v = ValueId(i as u32);
            let (Some(l), Some(at)) = (facts.lifetime(v), self.address(v)) else {
                continue;
            };
            if matches!(at.region, Region::Arena | Region::Output(_)) && facts.sizes[i] > 0 {
                let last = if facts.is_output(v) { end } else { l.last };
                live.push((v, at, facts.sizes[i], l.first, last));
            }
        }
        for (a_i, &(a, aa, asz, af, al)) in live.iter().enumerate() {
            for &(b, ba, bsz, bf, bl) in &live[a_i + 1..] {
                let same_time = af <= bl && bf <= al;
                let same_bytes = aa.region == ba.region
                    && aa.offset < ba.offset + bsz
                    && ba.offset < aa.offset + asz;
                if !(same_time && same_bytes) {
                    continue;
                }
                if classes.find(a.index()) != classes.find(b.index()) {
                    return Err(PlanError::Check(format!(
                        "%{} ({:?} +{asz}) and %{} ({:?} +{bsz}) are live together and overlap",
                        graph.value(a).name,
                        aa,
                        graph.value(b).name,
                        ba
                    )));
                }
            }
        }
        Ok(())
    }
}
