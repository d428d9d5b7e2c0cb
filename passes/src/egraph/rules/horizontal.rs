//! Horizontal fusion: sibling 1×1 convolutions reading the same input (Inception branches)
//! become one convolution over the concatenated weights, whose output a Split hands back to
//! each branch. Whether that pays (one input read and one kernel instead of several, against
//! the Split's copy) is the cost model's call: the rule only adds the alternative.

use super::weights::Flat;
use super::{as_op, constant, f32_const, f32_tensor, key_of, name_of, ty, Match, TensorRule};
use crate::egraph::lang::{add_op, derived_consts, OutputIndex, TGraph, TensorLang};
use egg::Id;
use qcc_ir::{ConvAttrs, Op, Padding};
use std::sync::Arc;

/// More siblings than this are left alone (keeps one match small).
const MAX_SIBLINGS: usize = 8;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![Arc::new(HorizontalConv1x1)]
}

fn is_pointwise(a: &ConvAttrs) -> bool {
    a.group == 1
        && a.kernel.iter().all(|&k| k == 1)
        && a.strides.iter().all(|&s| s == 1)
        && a.dilations.iter().all(|&d| d == 1)
        && matches!(&a.padding, Padding::Explicit(p) if p.iter().all(|&v| v == 0))
}

/// A pointwise Conv of `x` with constant f32 weight and bias (or none), with these attrs.
fn sibling_conv<'a>(eg: &'a TGraph, node: &'a TensorLang, x: Id) -> Option<&'a ConvAttrs> {
    let (Op::Conv(a), ch) = as_op(eg, node)? else {
        return None;
    };
    let f32c = |id: Id| constant(eg, id).is_some_and(|t| t.as_f32().is_ok());
    // Only weights of the input graph: a merged conv reads x too and would otherwise be
    // merged again with its own parts, and BN-folded twins of a conv are not siblings.
    let original = eg[ch[1]]
        .iter()
        .any(|n| matches!(n, TensorLang::Const(k) if !eg.analysis.is_derived(*k)));
    let ok = eg.find(ch[0]) == eg.find(x)
        && is_pointwise(a)
        && original
        && f32c(ch[1])
        && ch.get(2).is_none_or(|&b| f32c(b));
    ok.then_some(a)
}

struct HorizontalConv1x1;

impl TensorRule for HorizontalConv1x1 {
    fn name(&self) -> &'static str {
        "horizontal-conv1x1"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((_, ch)) = as_op(eg, node) else {
            return;
        };
        let x = ch[0];
        let Some(attrs) = sibling_conv(eg, node, x) else {
            return;
        };
        // Sibling classes (one conv node each), in id order; only the first reports.
        let mut siblings: Vec<(Id, TensorLang)> = Vec::new();
        let mut parents: Vec<Id> = eg[x].parents().map(|p| eg.find(p)).collect();
        parents.sort();
        parents.dedup();
        for p in parents {
            let found = eg[p]
                .iter()
                .find(|n| sibling_conv(eg, n, x).is_some_and(|a| a == attrs));
            if let Some(n) = found {
                siblings.push((p, n.clone()));
            }
        }
        let me = eg.find(class);
        if siblings.len() < 2 || siblings.len() > MAX_SIBLINGS || siblings[0].0 != me {
            return;
        }
        out.push(Match {
            nodes: siblings.iter().map(|(_, n)| n.clone()).collect(),
            classes: std::iter::once(x)
                .chain(siblings.iter().map(|(c, _)| *c))
                .collect(),
        });
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let x = m.classes[0];
        let Some((Op::Conv(attrs), _)) = as_op(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let attrs = attrs.clone();
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        let mut sizes = Vec::new();
        let mut key = String::from("horizontal");
        let mut names = Vec::new();
        for node in &m.nodes {
            let Some((_, ch)) = as_op(eg, node) else {
                return Vec::new();
            };
            let Some(w) = f32_tensor(eg, ch[1]) else {
                return Vec::new();
            };
            let channels = w.dims().first().copied().unwrap_or(0);
            let b = match ch.get(2) {
                Some(&b) => match f32_const(eg, b) {
                    Some((_, v)) if v.len() == channels => v,
                    _ => return Vec::new(),
                },
                None => vec![0.0; channels],
            };
            key.push_str(&format!(
                ":{}/{}",
                key_of(eg, ch[1]),
                ch.get(2).map(|&b| key_of(eg, b)).unwrap_or_default()
            ));
            names.push(name_of(eg, node));
            sizes.push(channels);
            weights.push(w);
            biases.push(b);
        }
        if weights
            .windows(2)
            .any(|w| w[0].dims()[1..] != w[1].dims()[1..])
        {
            return Vec::new();
        }
        let name = names.join("+");
        let total: usize = sizes.iter().sum();
        let consts = derived_consts(eg, key, || {
            let mut dims = weights[0].dims().to_vec();
            dims[0] = total;
            let w: Vec<f32> = weights.iter().flat_map(|w| Flat::of(w).data).collect();
            let b: Vec<f32> = biases.concat();
            Some(vec![
                (
                    format!("{name}.weight.cat"),
                    Flat::new(dims, w).into_tensor(),
                ),
                (
                    format!("{name}.bias.cat"),
                    Flat::new(vec![total], b).into_tensor(),
                ),
            ])
        });
        let Some(consts) = consts else {
            return Vec::new();
        };
        let Some(conv) = add_op(eg, Op::Conv(attrs), vec![x, consts[0], consts[1]], &name) else {
            return Vec::new();
        };
        let split = Op::Split { axis: 1, sizes };
        let Some(tuple) = add_op(eg, split, vec![conv], &format!("{name}.split")) else {
            return Vec::new();
        };
        let mut unions = Vec::new();
        for (i, &class) in m.classes[1..].iter().enumerate() {
            let proj = eg.add(TensorLang::Proj(OutputIndex(i as u32), [tuple]));
            if ty(eg, proj) == ty(eg, class) {
                unions.push((class, proj));
            }
        }
        unions
    }
}
