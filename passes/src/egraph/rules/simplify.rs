//! Simplifications: arithmetic by constants put in the form the folding rules match (Div →
//! Mul, Sub → Add), view chains collapsed (Transpose∘Transpose, Reshape/Flatten chains,
//! views that change nothing), a zero Pad absorbed by the Conv after it, and a MatMul by a
//! constant 2-D weight turned into a Gemm (so that BN folding and activation fusion apply).

use super::{as_op, constant, key_of, name_of, ty, Match, TensorRule};
use crate::egraph::lang::{add_op, derived_consts, TGraph, TensorLang};
use egg::Id;
use qcc_ir::{BinaryOp, GemmAttrs, Op, Padding, Tensor};
use std::sync::Arc;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![
        Arc::new(ConstOperand(BinaryOp::Div)),
        Arc::new(ConstOperand(BinaryOp::Sub)),
        Arc::new(TransposeTranspose),
        Arc::new(ReshapeChain),
        Arc::new(IdentityView),
        Arc::new(PadIntoConv),
        Arc::new(MatMulToGemm),
    ]
}

/// `Div(x, c)` → `Mul(x, 1/c)` and `Sub(x, c)` → `Add(x, -c)` for an f32 constant c (every
/// element finite, non-zero for Div with a finite reciprocal).
struct ConstOperand(BinaryOp);

impl TensorRule for ConstOperand {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryOp::Div => "div-const-to-mul",
            _ => "sub-const-to-add",
        }
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Binary(b), ch)) = as_op(eg, node) else {
            return;
        };
        if *b != self.0 {
            return;
        }
        let Some(Ok(c)) = constant(eg, ch[1]).map(|t| t.as_f32()) else {
            return;
        };
        let ok = c.iter().all(|&v| match self.0 {
            BinaryOp::Div => v != 0.0 && v.is_finite() && (1.0 / v).is_finite(),
            _ => v.is_finite(),
        });
        if ok {
            out.push(Match {
                nodes: vec![node.clone()],
                classes: vec![class, ch[0], ch[1]],
            });
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (class, x, c) = (m.classes[0], m.classes[1], m.classes[2]);
        let Some(t) = constant(eg, c).cloned() else {
            return Vec::new();
        };
        let name = name_of(eg, &m.nodes[0]);
        let div = self.0 == BinaryOp::Div;
        let key = format!("{}:{}", self.name(), key_of(eg, c));
        let cname = eg[c].data.name.as_deref().unwrap_or("const").to_string();
        let consts = derived_consts(eg, key, || {
            let a = t.as_f32().ok()?;
            let data: Vec<f32> = a.iter().map(|&v| if div { 1.0 / v } else { -v }).collect();
            let suffix = if div { "reciprocal" } else { "negated" };
            Some(vec![(
                format!("{cname}.{suffix}"),
                Tensor::from_f32(a.shape(), data),
            )])
        });
        let Some(consts) = consts else {
            return Vec::new();
        };
        let op = if div { BinaryOp::Mul } else { BinaryOp::Add };
        match add_op(eg, Op::Binary(op), vec![x, consts[0]], &name) {
            Some(new) => vec![(class, new)],
            None => Vec::new(),
        }
    }
}

/// `Transpose(Transpose(x, p1), p2)` → `Transpose(x, p1∘p2)`, or `x` when that is the identity.
struct TransposeTranspose;

impl TensorRule for TransposeTranspose {
    fn name(&self) -> &'static str {
        "transpose-transpose"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Transpose { .. }, ch)) = as_op(eg, node) else {
            return;
        };
        for inner in eg[ch[0]].iter() {
            if let Some((Op::Transpose { .. }, _)) = as_op(eg, inner) {
                out.push(Match {
                    nodes: vec![node.clone(), inner.clone()],
                    classes: vec![class],
                });
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (Some((Op::Transpose { perm: p2 }, _)), Some((Op::Transpose { perm: p1 }, ich))) =
            (as_op(eg, &m.nodes[0]), as_op(eg, &m.nodes[1]))
        else {
            return Vec::new();
        };
        if p1.len() != p2.len() || p2.iter().any(|&i| i >= p1.len()) {
            return Vec::new();
        }
        let perm: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
        let x = ich[0];
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return vec![(m.classes[0], x)];
        }
        let name = name_of(eg, &m.nodes[0]);
        match add_op(eg, Op::Transpose { perm }, vec![x], &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

fn is_reshape_like(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Flatten { .. })
}

/// A Reshape/Flatten of a Reshape/Flatten → one Reshape to the final shape (or nothing when
/// the final shape is the original one).
struct ReshapeChain;

impl TensorRule for ReshapeChain {
    fn name(&self) -> &'static str {
        "reshape-chain"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((op, ch)) = as_op(eg, node) else {
            return;
        };
        if !is_reshape_like(op) {
            return;
        }
        for inner in eg[ch[0]].iter() {
            if as_op(eg, inner).is_some_and(|(op, _)| is_reshape_like(op)) {
                out.push(Match {
                    nodes: vec![node.clone(), inner.clone()],
                    classes: vec![class],
                });
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let Some((_, ich)) = as_op(eg, &m.nodes[1]) else {
            return Vec::new();
        };
        let x = ich[0];
        let (Some(out_ty), Some(x_ty)) = (ty(eg, m.classes[0]).cloned(), ty(eg, x)) else {
            return Vec::new();
        };
        if &out_ty == x_ty {
            return vec![(m.classes[0], x)];
        }
        let shape: Vec<i64> = out_ty.dims().iter().map(|&d| d as i64).collect();
        let allow_zero = out_ty.dims().contains(&0);
        let name = name_of(eg, &m.nodes[0]);
        match add_op(eg, Op::Reshape { shape, allow_zero }, vec![x], &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// A view that changes nothing (a Reshape/Flatten/Squeeze/Unsqueeze to the same type, an
/// identity Transpose, Identity, Dropout without mask) is its input.
struct IdentityView;

impl TensorRule for IdentityView {
    fn name(&self) -> &'static str {
        "identity-view"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((op, ch)) = as_op(eg, node) else {
            return;
        };
        let view = match op {
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout { mask_output: false } => true,
            Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
            _ => false,
        };
        if view && ty(eg, class).is_some() && ty(eg, class) == ty(eg, ch[0]) {
            out.push(Match {
                nodes: vec![node.clone()],
                classes: vec![class, ch[0]],
            });
        }
    }

    fn apply(&self, _eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        vec![(m.classes[0], m.classes[1])]
    }
}

/// `Conv(Pad(x))` with a constant-zero, non-negative, spatial-only Pad and explicit conv pads
/// → `Conv(x)` with the pads added.
struct PadIntoConv;

fn spatial_pads(op: &Op, rank: usize) -> Option<Vec<usize>> {
    let Op::Pad { pads, value } = op else {
        return None;
    };
    if *value != 0.0 || pads.len() != 2 * rank || rank < 3 || pads.iter().any(|&p| p < 0) {
        return None;
    }
    let (begins, ends) = pads.split_at(rank);
    if begins[..2].iter().chain(&ends[..2]).any(|&p| p != 0) {
        return None;
    }
    Some(
        begins[2..]
            .iter()
            .chain(&ends[2..])
            .map(|&p| p as usize)
            .collect(),
    )
}

impl TensorRule for PadIntoConv {
    fn name(&self) -> &'static str {
        "pad-into-conv"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Conv(attrs), ch)) = as_op(eg, node) else {
            return;
        };
        if !matches!(attrs.padding, Padding::Explicit(_)) {
            return;
        }
        for inner in eg[ch[0]].iter() {
            let Some((op, ich)) = as_op(eg, inner) else {
                continue;
            };
            let rank = ty(eg, ich[0]).map(|t| t.rank()).unwrap_or(0);
            if spatial_pads(op, rank).is_some() {
                out.push(Match {
                    nodes: vec![node.clone(), inner.clone()],
                    classes: vec![class],
                });
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (Some((Op::Conv(attrs), ch)), Some((pad, ich))) =
            (as_op(eg, &m.nodes[0]), as_op(eg, &m.nodes[1]))
        else {
            return Vec::new();
        };
        let x = ich[0];
        let rank = ty(eg, x).map(|t| t.rank()).unwrap_or(0);
        let (Some(extra), Padding::Explicit(old)) = (spatial_pads(pad, rank), &attrs.padding)
        else {
            return Vec::new();
        };
        if old.len() != extra.len() {
            return Vec::new();
        }
        let mut attrs = attrs.clone();
        attrs.padding = Padding::Explicit(old.iter().zip(&extra).map(|(a, b)| a + b).collect());
        let mut inputs = ch.to_vec();
        inputs[0] = x;
        let name = name_of(eg, &m.nodes[0]);
        match add_op(eg, Op::Conv(attrs), inputs, &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// `MatMul(a, B)` with a 2-D and B a constant 2-D f32 weight → `Gemm(a, B)`.
struct MatMulToGemm;

impl TensorRule for MatMulToGemm {
    fn name(&self) -> &'static str {
        "matmul-to-gemm"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::MatMul, ch)) = as_op(eg, node) else {
            return;
        };
        let weight_ok =
            constant(eg, ch[1]).is_some_and(|t| t.as_f32().is_ok() && t.dims().len() == 2);
        if weight_ok && ty(eg, ch[0]).is_some_and(|t| t.rank() == 2) {
            out.push(Match {
                nodes: vec![node.clone()],
                classes: vec![class, ch[0], ch[1]],
            });
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let gemm = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        };
        let name = name_of(eg, &m.nodes[0]);
        match add_op(eg, Op::Gemm(gemm), vec![m.classes[1], m.classes[2]], &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}
