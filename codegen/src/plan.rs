//! The memory plan: where every tensor of a compiled graph lives.
//!
//! A compiled graph addresses four regions: the caller's input buffers, the caller's output
//! buffers, one read-only weight blob (every constant the graph reads, 64-byte aligned) and
//! one scratch arena (the workspace the caller passes to `NAME_run`, 64-byte aligned). Nothing
//! is mutable outside those, which is what makes the generated code reentrant.
//!
//! # Liveness
//!
//! Nodes run in [`MemoryPlan::order`] (the graph's topological order); the plan is only valid
//! for that order. A value produced by node `p` and last read by node `q` is live over the
//! inclusive range `[p, q]` (`[p, p]` when nothing reads it: the node still writes it). Ranges
//! are inclusive at both ends because a node reads its inputs while writing its outputs, so a
//! tensor that dies at `q` may not share memory with one born at `q`. (In-place elementwise
//! kernels could relax that later; they would need their own alias rule.)
//!
//! # Aliasing (no copy)
//!
//! - **Views**: the output of Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout
//!   (its first output) is its input's bytes. When the view's output is a graph output, the
//!   direction reverses: the input's producer writes straight into the output buffer, provided
//!   the input is an intermediate that no other rule has placed yet; otherwise the view node
//!   copies.
//! - **Split** along an axis whose leading dims are all 1: each output that is not a graph
//!   output is a slice of the input.
//! - **Concat** along an axis whose leading dims are all 1 (a slice is then one contiguous
//!   byte range, e.g. a batch-1 NCHW channel concat): an input is written by its producer
//!   straight into its slice of the output when it is an intermediate (produced by a node, not
//!   a graph input, output or constant), is read by nothing but this one Concat slot, and no
//!   other rule has placed it. Any other input is copied by the Concat kernel. Concats nest:
//!   a Concat output read only by another Concat becomes a slice of it.
//!
//! [`Location::Alias`] always names a value that owns storage (never another alias), with the
//! byte offset inside it. The lowering tells "no code" from "copy" by comparing addresses: a
//! view or Split output at the same address range as its input needs no code. Every value
//! aliased to a storage owner extends the owner's lifetime: the owner's arena range is live
//! from the first member's birth to the last member's last use.
//!
//! # Placement
//!
//! Arena owners are placed greedy-by-size with best fit (the scheme of TFLite's arena planner
//! and of Pisarchyk & Lee, "Efficient memory management for deep neural net inference"):
//! largest first; each goes into the smallest 64-byte aligned gap left between already-placed
//! tensors whose lifetimes overlap its own, or above all of them when no gap fits. Large
//! tensors placed first leave gaps that small ones fill.
//!
//! # Graph outputs
//!
//! A graph output lives in its output buffer, also when later nodes read it. A graph output
//! that is a graph input or a constant, or that appears a second time in the output list, has
//! no producer writing its buffer: [`MemoryPlan::output_copies`] lists those, to be copied
//! after the last node.

use qcc_ir::{Graph, GraphError, NodeId, Op, ValueDef, ValueId};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Alignment of every weight and arena offset, and of the buffers the caller provides.
pub const ALIGNMENT: usize = 64;

/// Where one value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The caller's input buffer `i` (read-only).
    Input(usize),
    /// The caller's output buffer `i`.
    Output(usize),
    /// Byte offset in the weight blob.
    Weight(usize),
    /// Byte offset in the scratch arena.
    Arena(usize),
    /// The bytes of `of` (a value that owns storage) from byte `offset` on.
    Alias { of: ValueId, offset: usize },
    /// Nothing reads or writes it: an unreferenced constant, or a value whose producer a pass
    /// removed.
    Unused,
}

/// The memory region an address refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    Input(usize),
    Output(usize),
    Weights,
    Arena,
}

/// A resolved address: a region and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub region: Region,
    pub offset: usize,
}

/// One constant in the weight blob, in its raw (unpacked) layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightSlot {
    pub value: ValueId,
    pub offset: usize,
    pub size: usize,
}

/// After the last node, output buffer `output` receives a copy of `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputCopy {
    pub output: usize,
    pub from: ValueId,
}

/// Positions in [`MemoryPlan::order`] over which a node output is live (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The node order the plan was made for; code must run nodes in this order.
    pub order: Vec<NodeId>,
    /// Per value, indexed by `ValueId::index`.
    pub slots: Vec<Location>,
    /// Per value: the lifetime of a node output, `None` for everything else.
    pub lifetimes: Vec<Option<Lifetime>>,
    pub weights: Vec<WeightSlot>,
    pub weights_bytes: usize,
    pub arena_bytes: usize,
    /// What the arena would take with one 64-byte aligned buffer per intermediate (no reuse,
    /// no aliasing): the baseline the report compares with.
    pub naive_bytes: usize,
    pub output_copies: Vec<OutputCopy>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("value '{0}' is read but no node of the graph produces it")]
    Undefined(String),
    #[error("memory plan of graph '{0}' does not fit the address space")]
    TooLarge(String),
    #[error("memory plan check failed: {0}")]
    Check(String),
}

pub fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGNMENT - 1).map(|m| m & !(ALIGNMENT - 1))
}

/// Ops whose (first) output is its input's bytes under another shape.
pub fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout { .. }
    )
}

/// For a Concat or Split along `axis` of a tensor of `dims` (with `elem` bytes per element):
/// the bytes one unit along `axis` takes, when every slice along it is one contiguous range.
fn contiguous_stride(dims: &[usize], axis: usize, elem: usize) -> Option<usize> {
    if axis >= dims.len() || dims[..axis].iter().product::<usize>() != 1 {
        return None;
    }
    Some(dims[axis + 1..].iter().product::<usize>() * elem)
}

/// What the graph says about each value, shared by the planner and the checker.
pub(crate) struct Facts {
    pub order: Vec<NodeId>,
    /// Per value: position of its producer in `order`.
    pub def_pos: Vec<Option<usize>>,
    /// Per value: every (position, slot) that reads it.
    pub readers: Vec<Vec<(usize, usize)>>,
    pub input_index: Vec<Option<usize>>,
    /// Per value: the first output slot that names it.
    pub output_index: Vec<Option<usize>>,
    pub sizes: Vec<usize>,
}

impl Facts {
    pub fn new(graph: &Graph) -> Result<Facts, PlanError> {
        let order = graph.topo_order()?;
        let n = graph.values().count();
        let mut facts = Facts {
            order,
            def_pos: vec![None; n],
            readers: vec![Vec::new(); n],
            input_index: vec![None; n],
            output_index: vec![None; n],
            sizes: graph.values().map(|(_, v)| v.ty.byte_size()).collect(),
        };
        for (pos, &id) in facts.order.iter().enumerate() {
            let node = graph.node(id);
            for &o in &node.outputs {
                facts.def_pos[o.index()] = Some(pos);
            }
            for (slot, &i) in node.inputs.iter().enumerate() {
                facts.readers[i.index()].push((pos, slot));
            }
        }
        for (i, gi) in graph.inputs().iter().enumerate() {
            facts.input_index[gi.value.index()] = Some(i);
        }
        for (j, &o) in graph.outputs().iter().enumerate() {
            facts.output_index[o.index()].get_or_insert(j);
        }
        // A value read or returned must be defined by an input, a constant or a live node.
        for (id, v) in graph.values() {
            let used = !facts.readers[id.index()].is_empty() || facts.is_output(id);
            if used && matches!(v.def, ValueDef::Node { .. }) && facts.def_pos[id.index()].is_none()
            {
                return Err(PlanError::Undefined(v.name.clone()));
            }
        }
        Ok(facts)
    }

    pub fn is_output(&self, v: ValueId) -> bool {
        self.output_index[v.index()].is_some()
    }

    /// Produced by a node and not a graph output: the values the arena is for.
    pub fn is_intermediate(&self, v: ValueId) -> bool {
        self.def_pos[v.index()].is_some() && !self.is_output(v)
    }

    pub fn lifetime(&self, v: ValueId) -> Option<Lifetime> {
        let first = self.def_pos[v.index()]?;
        let last = self.readers[v.index()]
            .iter()
            .map(|&(p, _)| p)
            .max()
            .unwrap_or(first)
            .max(first);
        Some(Lifetime { first, last })
    }
}

/// Plans where every value of `graph` lives. See the module documentation for the rules.
pub fn plan(graph: &Graph) -> Result<MemoryPlan, PlanError> {
    let facts = Facts::new(graph)?;
    let too_large = || PlanError::TooLarge(graph.name.clone());
    let parent = choose_aliases(graph, &facts);
    let n = facts.sizes.len();

    // Flatten alias chains so that every alias names a storage owner.
    let mut owner: Vec<(ValueId, usize)> = Vec::with_capacity(n);
    for i in 0..n {
        let (mut v, mut offset) = (ValueId(i as u32), 0usize);
        let mut steps = 0;
        while let Some((p, off)) = parent[v.index()] {
            offset = offset.checked_add(off).ok_or_else(too_large)?;
            v = p;
            steps += 1;
            if steps > n {
                return Err(PlanError::Check(format!(
                    "alias cycle through '{}'",
                    graph.value(v).name
                )));
            }
        }
        owner.push((v, offset));
    }

    let lifetimes: Vec<Option<Lifetime>> =
        (0..n).map(|i| facts.lifetime(ValueId(i as u32))).collect();
    // Storage owners in the arena, with the union of their members' lifetimes.
    let mut arena_live: HashMap<ValueId, Lifetime> = HashMap::new();
    for i in 0..n {
        let root = owner[i].0;
        if !facts.is_intermediate(root) {
            continue;
        }
        if let Some(l) = lifetimes[i] {
            let e = arena_live.entry(root).or_insert(l);
            e.first = e.first.min(l.first);
            e.last = e.last.max(l.last);
        }
    }
    let (arena_offsets, arena_bytes) = place_in_arena(&arena_live, &facts.sizes, too_large)?;

    let mut slots = vec![Location::Unused; n];
    let mut weights = Vec::new();
    let mut weights_bytes = 0usize;
    for (id, v) in graph.values() {
        let i = id.index();
        let (root, offset) = owner[i];
        slots[i] = if root != id {
            Location::Alias { of: root, offset }
        } else if let Some(k) = facts.input_index[i] {
            Location::Input(k)
        } else if let Some(k) = facts.output_index[i].filter(|_| facts.def_pos[i].is_some()) {
            Location::Output(k)
        } else if let Some(&off) = arena_offsets.get(&id) {
            Location::Arena(off)
        } else if matches!(v.def, ValueDef::Constant(_))
            && (!facts.readers[i].is_empty() || facts.is_output(id))
        {
            let offset = weights_bytes;
            let size = facts.sizes[i];
            weights.push(WeightSlot {
                value: id,
                offset,
                size,
            });
            weights_bytes = offset
                .checked_add(size)
                .and_then(align_up)
                .ok_or_else(too_large)?;
            Location::Weight(offset)
        } else {
            Location::Unused
        };
    }

    let output_copies = graph
        .outputs()
        .iter()
        .enumerate()
        .filter(|&(j, &o)| slots[o.index()] != Location::Output(j))
        .map(|(j, &o)| OutputCopy { output: j, from: o })
        .collect();
    let mut naive_bytes = 0usize;
    for i in 0..n {
        if facts.is_intermediate(ValueId(i as u32)) {
            naive_bytes = naive_bytes
                .checked_add(align_up(facts.sizes[i]).ok_or_else(too_large)?)
                .ok_or_else(too_large)?;
        }
    }
    Ok(MemoryPlan {
        order: facts.order,
        slots,
        lifetimes,
        weights,
        weights_bytes,
        arena_bytes,
        naive_bytes,
        output_copies,
    })
}

/// Decides the aliases: per value, the value whose bytes it is and the byte offset in it.
fn choose_aliases(graph: &Graph, facts: &Facts) -> Vec<Option<(ValueId, usize)>> {
    let mut parent: Vec<Option<(ValueId, usize)>> = vec![None; facts.sizes.len()];
    let size = |v: ValueId| facts.sizes[v.index()];
    for (pos, &id) in facts.order.iter().enumerate() {
        let node = graph.node(id);
        match &node.op {
            op if is_view(op) => {
                let (u, v) = (node.inputs[0], node.outputs[0]);
                if size(u) != size(v) {
                    continue;
                }
                if !facts.is_output(v) {
                    parent[v.index()] = Some((u, 0));
                } else if facts.is_intermediate(u) && parent[u.index()].is_none() {
                    // The producer of `u` writes straight into the output buffer.
                    parent[u.index()] = Some((v, 0));
                }
            }
            Op::Split { axis, sizes } => {
                let u = node.inputs[0];
                let ty = &graph.value(u).ty;
                let Some(stride) = contiguous_stride(ty.dims(), *axis, ty.dtype.size_bytes())
                else {
                    continue;
                };
                let mut offset = 0;
                for (&w, &len) in node.outputs.iter().zip(sizes) {
                    if !facts.is_output(w) {
                        parent[w.index()] = Some((u, offset));
                    }
                    offset += len * stride;
                }
            }
            Op::Concat { axis } => {
                let c = node.outputs[0];
                let ty = &graph.value(c).ty;
                let Some(stride) = contiguous_stride(ty.dims(), *axis, ty.dtype.size_bytes())
                else {
                    continue;
                };
                let mut offset = 0;
                for (slot, &x) in node.inputs.iter().enumerate() {
                    let only_reader = facts.readers[x.index()] == [(pos, slot)];
                    if only_reader && facts.is_intermediate(x) && parent[x.index()].is_none() {
                        parent[x.index()] = Some((c, offset));
                    }
                    offset += graph.value(x).ty.dims().get(*axis).copied().unwrap_or(0) * stride;
                }
            }
            _ => {}
        }
    }
    parent
}

/// Greedy-by-size best-fit placement; returns each owner's offset and the arena size.
fn place_in_arena(
    live: &HashMap<ValueId, Lifetime>,
    sizes: &[usize],
    too_large: impl Fn() -> PlanError,
) -> Result<(HashMap<ValueId, usize>, usize), PlanError> {
    let mut todo: Vec<(ValueId, Lifetime, usize)> = Vec::with_capacity(live.len());
    for (&v, &l) in live {
        todo.push((v, l, align_up(sizes[v.index()]).ok_or_else(&too_large)?));
    }
    // Largest first; ties by birth then id, so that the plan is deterministic.
    todo.sort_by_key(|&(v, l, s)| (std::cmp::Reverse(s), l.first, v));
    let mut placed: Vec<(usize, usize, Lifetime)> = Vec::new(); // (offset, padded size, live)
    let mut offsets = HashMap::with_capacity(todo.len());
    let mut arena_bytes = 0usize;
    for (v, l, size) in todo {
        let mut neighbours: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, pl)| pl.overlaps(&l))
            .map(|&(o, s, _)| (o, o + s))
            .collect();
        neighbours.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut low = 0usize;
        for (start, end) in neighbours {
            if start >= low {
                let gap = start - low;
                if gap >= size && best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, low));
                }
            }
            low = low.max(end);
        }
        let offset = best.map_or(low, |(_, o)| o);
        let end = offset.checked_add(size).ok_or_else(&too_large)?;
        arena_bytes = arena_bytes.max(end);
        placed.push((offset, size, l));
        offsets.insert(v, offset);
    }
    Ok((offsets, arena_bytes))
}

impl MemoryPlan {
    pub fn location(&self, v: ValueId) -> Location {
        self.slots[v.index()]
    }

    /// The region and byte offset where `v` starts; `None` for an unused value.
    pub fn address(&self, v: ValueId) -> Option<Address> {
        let (loc, extra) = match self.slots[v.index()] {
            Location::Alias { of, offset } => (self.slots[of.index()], offset),
            other => (other, 0),
        };
        let (region, offset) = match loc {
            Location::Input(i) => (Region::Input(i), 0),
            Location::Output(i) => (Region::Output(i), 0),
            Location::Weight(o) => (Region::Weights, o),
            Location::Arena(o) => (Region::Arena, o),
            Location::Alias { .. } | Location::Unused => return None,
        };
        Some(Address {
            region,
            offset: offset + extra,
        })
    }

    /// A human-readable summary for `qcc compile --report`: totals, then every value's
    /// placement in execution order.
    pub fn report(&self, graph: &Graph) -> String {
        let mut out = String::new();
        let percent = |a: usize, b: usize| {
            if b == 0 {
                100.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let _ = writeln!(out, "memory plan of graph '{}':", graph.name);
        let _ = writeln!(
            out,
            "  weights: {} bytes in {} tensors",
            self.weights_bytes,
            self.weights.len()
        );
        let _ = writeln!(
            out,
            "  arena:   {} bytes (one buffer per intermediate: {} bytes; {:.1}%)",
            self.arena_bytes,
            self.naive_bytes,
            percent(self.arena_bytes, self.naive_bytes)
        );
        let mut listed: Vec<ValueId> = graph.input_values();
        for &n in &self.order {
            listed.extend(graph.node(n).outputs.iter().copied());
        }
        listed.extend(self.weights.iter().map(|w| w.value));
        for v in listed {
            let value = graph.value(v);
            let place = match self.slots[v.index()] {
                Location::Input(i) => format!("input {i}"),
                Location::Output(i) => format!("output {i}"),
                Location::Weight(o) => format!("weights @{o}"),
                Location::Arena(o) => format!("arena @{o}"),
                Location::Alias { of, offset } => {
                    format!("alias of %{} +{offset}", graph.value(of).name)
                }
                Location::Unused => "unused".to_string(),
            };
            let live = match self.lifetimes[v.index()] {
                Some(l) => format!("live {}..={}", l.first, l.last),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  %{:<24} {:<22} {:>10} B  {:<28} {live}",
                value.name,
                value.ty.to_string(),
                value.ty.byte_size(),
                place
            );
        }
        for c in &self.output_copies {
            let _ = writeln!(
                out,
                "  output {} <- copy of %{}",
                c.output,
                graph.value(c.from).name
            );
        }
        out
    }
}

mod check;

#[cfg(test)]
mod tests;
