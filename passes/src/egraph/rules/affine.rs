//! Per-channel affine folding: a `Mul`/`Add` by a per-channel constant after a Conv or Gemm
//! goes into its weights and bias; before a Conv (a decomposed standalone batch norm), into
//! its weights (Mul, always exact since zero padding stays zero) or its bias (Add, only
//! without padding, where the shift reaches every tap).

use super::weights::{
    conv_shift_bias, gemm_bias_per_column, scale_cols, scale_conv_inputs, scale_rows, Flat,
};
use super::{
    as_op, constant, f32_const, f32_tensor, key_of, name_of, per_channel, ty, Match, TensorRule,
};
use crate::egraph::lang::{add_op, derived_consts, TGraph, TensorLang};
use egg::Id;
use qcc_ir::{BinaryOp, GemmAttrs, Op, Padding};
use std::sync::Arc;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![
        Arc::new(FoldIntoProducer(BinaryOp::Mul)),
        Arc::new(FoldIntoProducer(BinaryOp::Add)),
        Arc::new(FoldIntoConvInput),
    ]
}

fn is_f32_const(eg: &TGraph, id: Id) -> bool {
    constant(eg, id).is_some_and(|t| t.as_f32().is_ok())
}

/// Conv or Gemm with constant weights and bias (or none).
fn foldable_producer(eg: &TGraph, node: &TensorLang) -> bool {
    match as_op(eg, node) {
        Some((Op::Conv(_) | Op::Gemm(_), ch)) => {
            is_f32_const(eg, ch[1]) && ch.get(2).is_none_or(|&b| is_f32_const(eg, b))
        }
        _ => false,
    }
}

/// `Mul(P, k)` / `Add(P, k)` (either operand order) with P a Conv or Gemm and k constant per
/// output channel → P with folded weights/bias.
struct FoldIntoProducer(BinaryOp);

impl TensorRule for FoldIntoProducer {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryOp::Mul => "mul-into-conv-gemm",
            _ => "add-into-conv-gemm",
        }
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Binary(b), ch)) = as_op(eg, node) else {
            return;
        };
        if *b != self.0 {
            return;
        }
        for (p, k) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            if !is_f32_const(eg, k) || ty(eg, p) != ty(eg, class) {
                continue;
            }
            for inner in eg[p].iter() {
                if foldable_producer(eg, inner) {
                    out.push(Match {
                        nodes: vec![node.clone(), inner.clone()],
                        classes: vec![class, p, k],
                    });
                }
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (class, p, k) = (m.classes[0], m.classes[1], m.classes[2]);
        let (Some(out_ty), Some(kt)) = (ty(eg, p).cloned(), constant(eg, k).cloned()) else {
            return Vec::new();
        };
        let Some(vals) = per_channel(&kt, &out_ty, 1) else {
            return Vec::new();
        };
        let Some((op, ch)) = as_op(eg, &m.nodes[1]) else {
            return Vec::new();
        };
        let (op, ch) = (op.clone(), ch.to_vec());
        let name = name_of(eg, &m.nodes[1]);
        let Some(w) = f32_tensor(eg, ch[1]) else {
            return Vec::new();
        };
        let bias = ch
            .get(2)
            .and_then(|&b| f32_const(eg, b))
            .map(Flat::from_pair);
        let n = vals.len();
        let mul = self.0 == BinaryOp::Mul;
        let key = format!(
            "{}:{:?}:{}:{}:{}",
            self.name(),
            op,
            key_of(eg, ch[1]),
            ch.get(2).map(|&b| key_of(eg, b)).unwrap_or_default(),
            key_of(eg, k)
        );
        let (new_op, weight_changes) = match &op {
            Op::Conv(_) => {
                if w.dims().first() != Some(&n) {
                    return Vec::new();
                }
                (op.clone(), mul)
            }
            Op::Gemm(g) => {
                if out_ty.rank() != 2 {
                    return Vec::new();
                }
                (Op::Gemm(GemmAttrs { beta: 1.0, ..*g }), mul)
            }
            _ => return Vec::new(),
        };
        let base_bias = match &op {
            Op::Gemm(g) => gemm_bias_per_column(bias.as_ref(), g.beta, n),
            _ => match &bias {
                Some(b) if b.data.len() == n => Some(b.data.clone()),
                Some(_) => None,
                None => Some(vec![0.0; n]),
            },
        };
        let Some(base_bias) = base_bias else {
            return Vec::new();
        };
        let trans_b = matches!(&op, Op::Gemm(g) if g.trans_b);
        let is_gemm = matches!(&op, Op::Gemm(_));
        let consts = derived_consts(eg, key, || {
            let new_bias: Vec<f32> = base_bias
                .iter()
                .zip(&vals)
                .map(|(&b, &v)| if mul { b * v } else { b + v })
                .collect();
            let mut out = vec![(
                format!("{name}.bias.folded"),
                Flat::new(vec![n], new_bias).into_tensor(),
            )];
            if weight_changes {
                let w = Flat::of(&w);
                let w = if is_gemm && !trans_b {
                    scale_cols(w, &vals)
                } else {
                    scale_rows(w, &vals)
                };
                out.push((format!("{name}.weight.folded"), w.into_tensor()));
            }
            Some(out)
        });
        let Some(consts) = consts else {
            return Vec::new();
        };
        let weight = if weight_changes { consts[1] } else { ch[1] };
        match add_op(eg, new_op, vec![ch[0], weight, consts[0]], &name) {
            Some(new) => vec![(class, new)],
            None => Vec::new(),
        }
    }
}

/// Whether the per-channel affine chain that class `x` starts (Mul/Add by constants, a batch
/// norm, a few deep) comes from a Conv or Gemm that nothing but the chain reads: then
/// [`FoldIntoProducer`] folds it there, which serves every reader of the chain's result. Folding
/// it into one reading conv instead would leave the Mul/Add for the others (a MobileNetV2
/// projection BN feeds the next block's conv and its residual Add), and the extraction, once
/// both forms exist, can settle on that one (its choices for the two convs depend on each
/// other). `reader` is the class of the node that reads `x` in the match.
fn folds_into_producer(eg: &TGraph, reader: Id, x: Id) -> bool {
    let mut chain = vec![eg.find(reader), eg.find(x)];
    let mut current = eg.find(x);
    for _ in 0..4 {
        if eg[current].iter().any(|n| foldable_producer(eg, n)) {
            return eg[current].parents().all(|p| chain.contains(&eg.find(p)));
        }
        let next = eg[current].iter().find_map(|n| match as_op(eg, n) {
            Some((Op::Binary(BinaryOp::Mul | BinaryOp::Add), ch)) => {
                [(ch[0], ch[1]), (ch[1], ch[0])]
                    .into_iter()
                    .find(|&(_, k)| is_f32_const(eg, k))
                    .map(|(y, _)| y)
            }
            Some((Op::BatchNorm { .. }, ch)) => Some(ch[0]),
            _ => None,
        });
        let Some(next) = next else {
            return false;
        };
        current = eg.find(next);
        chain.push(current);
    }
    false
}

/// `Conv(Mul(x, s))` → `Conv(x, W * s)`; `Conv(Add(x, t))` → `Conv(x, W, b + ΣW·t)` when the
/// conv has no padding. s and t are per input channel (axis 1 of x); either operand order.
/// Not when the affine map can fold into the producer of x instead ([`folds_into_producer`]).
struct FoldIntoConvInput;

impl TensorRule for FoldIntoConvInput {
    fn name(&self) -> &'static str {
        "affine-into-conv-input"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Conv(attrs), ch)) = as_op(eg, node) else {
            return;
        };
        if !is_f32_const(eg, ch[1]) || !ch.get(2).is_none_or(|&b| is_f32_const(eg, b)) {
            return;
        }
        let unpadded = matches!(&attrs.padding, Padding::Explicit(p) if p.iter().all(|&v| v == 0));
        for inner in eg[ch[0]].iter() {
            let Some((Op::Binary(b @ (BinaryOp::Mul | BinaryOp::Add)), ich)) = as_op(eg, inner)
            else {
                continue;
            };
            if *b == BinaryOp::Add && !unpadded {
                continue;
            }
            for (x, k) in [(ich[0], ich[1]), (ich[1], ich[0])] {
                if is_f32_const(eg, k)
                    && ty(eg, x) == ty(eg, ch[0])
                    && !folds_into_producer(eg, ch[0], x)
                {
                    out.push(Match {
                        nodes: vec![node.clone(), inner.clone()],
                        classes: vec![class, x, k],
                    });
                }
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (class, x, k) = (m.classes[0], m.classes[1], m.classes[2]);
        let Some((Op::Conv(attrs), ch)) = as_op(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let (attrs, ch) = (attrs.clone(), ch.to_vec());
        let Some((Op::Binary(b), _)) = as_op(eg, &m.nodes[1]) else {
            return Vec::new();
        };
        let mul = *b == BinaryOp::Mul;
        let (Some(x_ty), Some(kt)) = (ty(eg, x).cloned(), constant(eg, k).cloned()) else {
            return Vec::new();
        };
        let Some(vals) = per_channel(&kt, &x_ty, 1) else {
            return Vec::new();
        };
        let name = name_of(eg, &m.nodes[0]);
        let Some(w) = f32_tensor(eg, ch[1]) else {
            return Vec::new();
        };
        let m_out = w.dims().first().copied().unwrap_or(0);
        let bias = match ch.get(2) {
            Some(&b) => f32_const(eg, b).map(|(_, v)| v),
            None => Some(vec![0.0; m_out]),
        };
        let Some(bias) = bias.filter(|b| b.len() == m_out) else {
            return Vec::new();
        };
        let key = format!(
            "{}:{}:{}:{}:{}:{}",
            self.name(),
            mul,
            attrs.group,
            key_of(eg, ch[1]),
            ch.get(2).map(|&b| key_of(eg, b)).unwrap_or_default(),
            key_of(eg, k)
        );
        let group = attrs.group;
        let consts = derived_consts(eg, key, || {
            let w = Flat::of(&w);
            if mul {
                let w = scale_conv_inputs(w, group, &vals)?;
                Some(vec![(format!("{name}.weight.folded"), w.into_tensor())])
            } else {
                let extra = conv_shift_bias(&w, group, &vals)?;
                let b: Vec<f32> = bias
                    .iter()
                    .zip(extra)
                    .map(|(&b, e)| (b as f64 + e) as f32)
                    .collect();
                Some(vec![(
                    format!("{name}.bias.folded"),
                    Flat::new(vec![m_out], b).into_tensor(),
                )])
            }
        });
        let Some(consts) = consts else {
            return Vec::new();
        };
        let mut inputs = vec![x];
        if mul {
            inputs.push(consts[0]);
            inputs.extend(ch.get(2).copied());
        } else {
            inputs.push(ch[1]);
            inputs.push(consts[0]);
        }
        match add_op(eg, Op::Conv(attrs), inputs, &name) {
            Some(new) => vec![(class, new)],
            None => Vec::new(),
        }
    }
}
