//! Rewrite rules, one file per family, and the adapter that runs them under egg's `Runner`.
//!
//! Rules are written in Rust rather than as egg patterns: they match ops by kind and read typed
//! attributes, guard on shapes and constant values, and compute folded weights. Each rule is a
//! [`TensorRule`]: `search` looks at one e-node (read-only, cheap guards) and records matches;
//! `apply` builds the replacement and names the classes to union. Following Cranelift's rules
//! for writing e-graph rules, every rule goes one way (towards fewer or fused kernels) and there
//! is no general commutativity: where ONNX's `Add`/`Mul` are commutative, a rule matches both
//! operand orders explicitly.

pub mod affine;
pub mod bn_fold;
pub mod fuse;
pub mod horizontal;
pub mod quant;
pub mod simplify;
pub mod weights;

use super::lang::{TGraph, TensorLang};
use egg::{Id, Language, Rewrite, SearchMatches, Subst, Symbol, Var};
use qcc_ir::{Op, Tensor, TensorType};
use std::sync::{Arc, Mutex};

/// One match: the e-nodes it saw (cloned, so `apply` can read their attributes) and the
/// classes it involves, as the rule defines them.
#[derive(Clone, Debug)]
pub struct Match {
    pub nodes: Vec<TensorLang>,
    pub classes: Vec<Id>,
}

/// A rewrite rule over [`TensorLang`].
pub trait TensorRule: Send + Sync {
    fn name(&self) -> &'static str;
    /// Records in `out` the matches rooted at `node`, an e-node of class `class`.
    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>);
    /// Adds the replacement of `m`; returns the pairs of classes that are now equal.
    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)>;
}

/// The rule families, selectable per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Batch-norm folding and decomposition.
    BnFold,
    /// Per-channel Mul/Add folded into Conv/Gemm weights and bias.
    Affine,
    /// Activation and residual fusion.
    Fuse,
    /// Div/Sub by constants, Transpose/Reshape chains, Pad + Conv, MatMul → Gemm.
    Simplify,
    /// Sibling 1×1 convolutions merged into one.
    Horizontal,
    /// Integer ops realized from the QDQ form, DequantizeLinear moved past views, Q/DQ pairs
    /// cancelled.
    Quant,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::BnFold,
        Family::Affine,
        Family::Fuse,
        Family::Simplify,
        Family::Horizontal,
        Family::Quant,
    ];

    pub fn rules(self) -> Vec<Arc<dyn TensorRule>> {
        match self {
            Family::BnFold => bn_fold::rules(),
            Family::Affine => affine::rules(),
            Family::Fuse => fuse::rules(),
            Family::Simplify => simplify::rules(),
            Family::Horizontal => horizontal::rules(),
            Family::Quant => quant::rules(),
        }
    }
}

/// The egg rewrites of the given families.
pub fn rewrites(families: &[Family]) -> Vec<Rewrite<TensorLang, super::lang::TensorAnalysis>> {
    let mut out = Vec::new();
    for f in families {
        for rule in f.rules() {
            let table = Arc::new(Mutex::new(Vec::new()));
            let var: Var = "?match".parse().expect("a valid egg variable");
            let searcher = RuleSearcher {
                rule: rule.clone(),
                table: table.clone(),
                var,
            };
            let applier = RuleApplier { rule, table, var };
            let name = searcher.rule.name();
            match Rewrite::new(name, searcher, applier) {
                Ok(rw) => out.push(rw),
                Err(e) => unreachable!("rule '{name}' is ill-formed: {e}"),
            }
        }
    }
    out
}

/// Searches with a [`TensorRule`]; the matches of the current iteration live in `table`, and
/// the egg substitution carries an index into it.
struct RuleSearcher {
    rule: Arc<dyn TensorRule>,
    table: Arc<Mutex<Vec<Match>>>,
    var: Var,
}

struct RuleApplier {
    rule: Arc<dyn TensorRule>,
    table: Arc<Mutex<Vec<Match>>>,
    var: Var,
}

impl RuleSearcher {
    fn search_class(
        &self,
        eg: &TGraph,
        class: Id,
        table: &mut Vec<Match>,
    ) -> Option<SearchMatches<'static, TensorLang>> {
        let mut found = Vec::new();
        for node in eg[class].iter() {
            self.rule.search(eg, class, node, &mut found);
        }
        if found.is_empty() {
            return None;
        }
        let mut substs = Vec::with_capacity(found.len());
        for m in found {
            let mut s = Subst::with_capacity(1);
            s.insert(self.var, Id::from(table.len()));
            table.push(m);
            substs.push(s);
        }
        Some(SearchMatches {
            eclass: class,
            substs,
            ast: None,
        })
    }
}

impl egg::Searcher<TensorLang, super::lang::TensorAnalysis> for RuleSearcher {
    fn search_eclass_with_limit(
        &self,
        egraph: &TGraph,
        eclass: Id,
        _limit: usize,
    ) -> Option<SearchMatches<'_, TensorLang>> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.search_class(egraph, eclass, &mut table)
    }

    fn search_with_limit(
        &self,
        egraph: &TGraph,
        limit: usize,
    ) -> Vec<SearchMatches<'_, TensorLang>> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.clear();
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        // Deterministic order: the result must not depend on hash-map iteration.
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if table.len() >= limit {
                break;
            }
            if let Some(m) = self.search_class(egraph, id, &mut table) {
                out.push(m);
            }
        }
        out
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.var]
    }
}

impl egg::Applier<TensorLang, super::lang::TensorAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut TGraph,
        _eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&egg::PatternAst<TensorLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let m = {
            let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            match subst.get(self.var).and_then(|i| table.get(usize::from(*i))) {
                Some(m) => m.clone(),
                None => return Vec::new(),
            }
        };
        let mut changed = Vec::new();
        for (a, b) in self.rule.apply(egraph, &m) {
            if egraph.union(a, b) {
                changed.push(egraph.find(a));
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.var]
    }
}

// ---- helpers shared by the rule families ----

/// The op and inputs of an `Op` e-node.
pub fn as_op<'a>(eg: &'a TGraph, node: &'a TensorLang) -> Option<(&'a Op, &'a [Id])> {
    match node {
        TensorLang::Op(k, children) => Some((eg.analysis.op(*k), children)),
        _ => None,
    }
}

/// The type of a single-value class.
pub fn ty(eg: &TGraph, id: Id) -> Option<&TensorType> {
    eg[id].data.ty()
}

/// The f32 constant a class holds: its dims and row-major values.
pub fn f32_const(eg: &TGraph, id: Id) -> Option<(Vec<usize>, Vec<f32>)> {
    let t = eg[id].data.constant.as_deref()?;
    let a = t.as_f32().ok()?;
    Some((a.shape().to_vec(), a.iter().copied().collect()))
}

/// The f32 constant a class holds, shared (no copy): weights are flattened only when a
/// rule actually computes with them (see `derived_consts`).
pub fn f32_tensor(eg: &TGraph, id: Id) -> Option<Arc<Tensor>> {
    let t = eg[id].data.constant.as_ref()?;
    t.as_f32().ok()?;
    Some(t.clone())
}

/// The constant a class holds.
pub fn constant(eg: &TGraph, id: Id) -> Option<&Arc<Tensor>> {
    eg[id].data.constant.as_ref()
}

/// Text naming a constant class in a derived-constant key.
pub fn key_of(eg: &TGraph, id: Id) -> String {
    super::lang::class_key(eg, id)
}

/// The node name recorded for `node`, else its op's name: rules name new nodes after the
/// node they replace.
pub fn name_of(eg: &TGraph, node: &TensorLang) -> String {
    if let Some(n) = eg.analysis.node_name(node) {
        return n.to_string();
    }
    // The node's children may have been merged since it was named: compare canonically.
    let canonical = |n: &TensorLang| n.clone().map_children(|c| eg.find(c));
    let want = canonical(node);
    eg.analysis
        .node_names
        .iter()
        .find(|(n, _)| canonical(n) == want)
        .map(|(_, name)| name.to_string())
        .or_else(|| as_op(eg, node).map(|(op, _)| op.name().to_string()))
        .unwrap_or_else(|| "node".to_string())
}

/// The values of a constant `k` seen per channel of `out` along `axis`: `k` must broadcast
/// to `out` without growing it and vary only along `axis` (a scalar is the same for every
/// channel). Returns one value per channel.
pub fn per_channel(k: &Tensor, out: &TensorType, axis: usize) -> Option<Vec<f32>> {
    let a = k.as_f32().ok()?;
    let (kr, r) = (a.ndim(), out.rank());
    if kr > r || axis >= r {
        return None;
    }
    let channels = out.dims()[axis];
    let mut along = None;
    for (i, &d) in a.shape().iter().enumerate() {
        let out_axis = r - kr + i;
        if out_axis == axis {
            if d != 1 && d != channels {
                return None;
            }
            along = Some(d);
        } else if d != 1 {
            return None;
        }
    }
    let flat: Vec<f32> = a.iter().copied().collect();
    match along {
        Some(d) if d == channels => Some(flat),
        _ => Some(vec![flat[0]; channels]),
    }
}
