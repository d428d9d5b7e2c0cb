//! Extraction: picking one e-node per needed e-class so that the resulting graph is cheapest.
//!
//! The cost that matters is the DAG's: every chosen class is computed once however many
//! consumers it has. A tree extractor (egg's `Extractor`) counts shared subexpressions once per
//! use, and — worse for us — judges each class alone: folding a batch norm into a conv whose
//! output another node also reads looks free to it, yet keeps the old conv alive next to the
//! folded one. So extraction here runs in two steps:
//!
//! 1. tree costs (a fixpoint over the e-graph, each node's own cost plus its children's best)
//!    give every class a first choice;
//! 2. a local search over the DAG cost: for each alternative node of each needed class, switch
//!    to it, re-pick every needed class knowing which classes are already computed (those are
//!    free to share), and keep the switch when the true DAG cost drops.
//!
//! Every node costs strictly more than zero and the DAG cost of a choice with a cycle is
//! infinite, so the chosen graph never has a node reading its own output.

use super::cost::{CostModel, LEAF_COST};
use super::lang::{TGraph, TensorLang};
use egg::Id;
use std::collections::HashMap;

const NONE: usize = usize::MAX;
/// Local-search rounds; each round tries every alternative once.
const MAX_ROUNDS: usize = 4;
/// Recursion bound of the shared-cost estimate (beyond it the tree cost stands in).
const MAX_SHARED_DEPTH: usize = 64;

/// The chosen node of every class (by canonical id), and the DAG cost of the graph it gives.
pub struct Extraction {
    choice: Vec<usize>,
    pub cost: f64,
}

impl Extraction {
    pub fn node<'a>(&self, eg: &'a TGraph, id: Id) -> &'a TensorLang {
        let c = eg.find(id);
        &eg[c].nodes[self.choice[usize::from(c)]]
    }
}

/// Per-class tables the search works on: nodes' own costs and canonical children.
struct Tables {
    own: Vec<Vec<f64>>,
    children: Vec<Vec<Vec<usize>>>,
    tree: Vec<f64>,
}

impl Tables {
    fn build(eg: &TGraph, model: &CostModel) -> Tables {
        let size = eg
            .classes()
            .map(|c| usize::from(c.id) + 1)
            .max()
            .unwrap_or(0);
        let mut own = vec![Vec::new(); size];
        let mut children = vec![Vec::new(); size];
        for class in eg.classes() {
            let i = usize::from(class.id);
            for node in class.iter() {
                own[i].push(node_cost(eg, node, &class.data.types, model));
                children[i].push(
                    egg::Language::children(node)
                        .iter()
                        .map(|&c| usize::from(eg.find(c)))
                        .collect(),
                );
            }
        }
        let tree = tree_costs(&own, &children);
        Tables {
            own,
            children,
            tree,
        }
    }

    fn nodes(&self, c: usize) -> usize {
        self.own[c].len()
    }

    fn tree_choice(&self, c: usize) -> usize {
        let mut best = (f64::INFINITY, NONE);
        for n in 0..self.nodes(c) {
            let cost = self.own[c][n]
                + self.children[c][n]
                    .iter()
                    .map(|&k| self.tree[k])
                    .sum::<f64>();
            if cost < best.0 {
                best = (cost, n);
            }
        }
        best.1
    }
}

fn node_cost(eg: &TGraph, node: &TensorLang, out: &[qcc_ir::TensorType], m: &CostModel) -> f64 {
    match node {
        TensorLang::Op(k, children) => {
            let ins: Vec<&qcc_ir::TensorType> =
                children.iter().filter_map(|&c| eg[c].data.ty()).collect();
            m.op_cost(eg.analysis.op(*k), &ins, out).max(LEAF_COST)
        }
        _ => LEAF_COST,
    }
}

/// Best tree cost of every class: a Bellman-Ford style fixpoint (costs are positive, so
/// cycles never lower a cost and the iteration ends).
fn tree_costs(own: &[Vec<f64>], children: &[Vec<Vec<usize>>]) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; own.len()];
    loop {
        let mut changed = false;
        for c in 0..own.len() {
            for n in 0..own[c].len() {
                let cost = own[c][n] + children[c][n].iter().map(|&k| best[k]).sum::<f64>();
                if cost < best[c] {
                    best[c] = cost;
                    changed = true;
                }
            }
        }
        if !changed {
            return best;
        }
    }
}

/// The classes reachable from `roots` under `choice`, children before parents, with the DAG
/// cost; `None` when the choice has a cycle.
fn reach(t: &Tables, choice: &[usize], roots: &[usize]) -> Option<(Vec<usize>, f64)> {
    let mut state = vec![0u8; choice.len()];
    let mut order = Vec::new();
    let mut cost = 0.0;
    for &r in roots {
        if state[r] != 0 {
            continue;
        }
        let mut stack = vec![(r, 0usize)];
        state[r] = 1;
        while let Some(&mut (c, ref mut pos)) = stack.last_mut() {
            let kids = &t.children[c][choice[c]];
            if *pos < kids.len() {
                let k = kids[*pos];
                *pos += 1;
                match state[k] {
                    0 => {
                        state[k] = 1;
                        stack.push((k, 0));
                    }
                    1 => return None,
                    _ => {}
                }
            } else {
                state[c] = 2;
                cost += t.own[c][choice[c]];
                order.push(c);
                stack.pop();
            }
        }
    }
    Some((order, cost))
}

/// Re-picks every needed class given that the needed classes are computed anyway: a child
/// already needed costs nothing more, a new one its cheapest cost on top of the needed set.
fn reoptimize(t: &Tables, choice: &mut [usize], roots: &[usize]) {
    let Some((order, _)) = reach(t, choice, roots) else {
        return;
    };
    let mut needed = vec![false; choice.len()];
    for &c in &order {
        needed[c] = true;
    }
    let mut memo = HashMap::new();
    for &c in &order {
        if t.nodes(c) < 2 {
            continue;
        }
        let mut best = (f64::INFINITY, choice[c]);
        for n in 0..t.nodes(c) {
            let mut cost = t.own[c][n];
            for &k in &t.children[c][n] {
                if !needed[k] {
                    cost += shared_cost(t, k, &needed, &mut memo, &mut Vec::new());
                }
            }
            if cost < best.0 {
                best = (cost, n);
            }
        }
        if best.1 != choice[c] {
            choice[c] = best.1;
            for &k in &t.children[c][best.1] {
                assign_shared(t, k, &needed, &mut memo, choice, &mut Vec::new());
            }
        }
    }
}

/// Cheapest cost of computing class `c` when the `needed` classes are free.
fn shared_cost(
    t: &Tables,
    c: usize,
    needed: &[bool],
    memo: &mut HashMap<usize, (f64, usize)>,
    stack: &mut Vec<usize>,
) -> f64 {
    shared_best(t, c, needed, memo, stack).0
}

fn shared_best(
    t: &Tables,
    c: usize,
    needed: &[bool],
    memo: &mut HashMap<usize, (f64, usize)>,
    stack: &mut Vec<usize>,
) -> (f64, usize) {
    if needed[c] {
        return (0.0, NONE);
    }
    if let Some(&m) = memo.get(&c) {
        return m;
    }
    if stack.contains(&c) {
        return (f64::INFINITY, NONE);
    }
    if stack.len() >= MAX_SHARED_DEPTH {
        return (t.tree[c], t.tree_choice(c));
    }
    stack.push(c);
    let mut best = (f64::INFINITY, NONE);
    for n in 0..t.nodes(c) {
        let mut cost = t.own[c][n];
        for &k in &t.children[c][n] {
            cost += shared_best(t, k, needed, memo, stack).0;
        }
        if cost < best.0 {
            best = (cost, n);
        }
    }
    stack.pop();
    memo.insert(c, best);
    best
}

/// Sets the choice of `c` and of its not-yet-needed descendants to their shared-cost best.
fn assign_shared(
    t: &Tables,
    c: usize,
    needed: &[bool],
    memo: &mut HashMap<usize, (f64, usize)>,
    choice: &mut [usize],
    visited: &mut Vec<usize>,
) {
    if needed[c] || visited.contains(&c) {
        return;
    }
    visited.push(c);
    let (_, n) = shared_best(t, c, needed, memo, &mut Vec::new());
    if n == NONE {
        return;
    }
    choice[c] = n;
    for i in 0..t.children[c][n].len() {
        let k = t.children[c][n][i];
        assign_shared(t, k, needed, memo, choice, visited);
    }
}

/// Extracts the cheapest acyclic graph computing `roots`.
pub fn extract(eg: &TGraph, roots: &[Id], model: &CostModel) -> Result<Extraction, String> {
    let t = Tables::build(eg, model);
    let roots: Vec<usize> = roots.iter().map(|&r| usize::from(eg.find(r))).collect();
    let mut choice = vec![NONE; t.own.len()];
    for class in eg.classes() {
        let c = usize::from(class.id);
        choice[c] = t.tree_choice(c);
        if choice[c] == NONE {
            return Err(format!("e-class {c} has no finite-cost node"));
        }
    }
    let Some((_, mut best)) = reach(&t, &choice, &roots) else {
        return Err("the tree extraction has a cycle".into());
    };
    let mut start = choice.clone();
    reoptimize(&t, &mut start, &roots);
    if let Some((_, cost)) = reach(&t, &start, &roots) {
        if better(cost, best) {
            choice = start;
            best = cost;
        }
    }
    for _ in 0..MAX_ROUNDS {
        let mut improved = false;
        let Some((order, _)) = reach(&t, &choice, &roots) else {
            break;
        };
        for c in order {
            for n in 0..t.nodes(c) {
                if n == choice[c] {
                    continue;
                }
                let mut trial = choice.clone();
                trial[c] = n;
                let mut tuned = trial.clone();
                reoptimize(&t, &mut tuned, &roots);
                let candidates = [tuned, trial];
                for cand in candidates {
                    if let Some((_, cost)) = reach(&t, &cand, &roots) {
                        if better(cost, best) {
                            choice = cand;
                            best = cost;
                            improved = true;
                            break;
                        }
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    Ok(Extraction { choice, cost: best })
}

fn better(cost: f64, best: f64) -> bool {
    cost < best - 1e-9 * best.abs().max(1.0)
}
