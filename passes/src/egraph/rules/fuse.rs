//! Epilogue fusion: an activation after a Conv/Gemm, and a residual `Add` after a Conv, become
//! part of one fused kernel (`FusedConv` computes `act(conv(X, W) + B + R)`, `FusedGemm`
//! `act(Gemm(A, B, C))`). The two compose: `Relu(Add(Conv(x), y))` first becomes
//! `Relu(FusedConv{residual})`, then `FusedConv{residual, relu}`.

use super::{as_op, name_of, ty, Match, TensorRule};
use crate::egraph::lang::{add_op, derived_consts, TGraph, TensorLang};
use egg::Id;
use qcc_ir::{BinaryOp, Op, Tensor};
use std::sync::Arc;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![Arc::new(ActivationFusion), Arc::new(ResidualFusion)]
}

/// `act(Conv)` → `FusedConv{act}`, `act(FusedConv{no act})` → `FusedConv{act}`, and the same
/// for Gemm. The activations are the ones `Activation` lists: Relu, Clip (ReLU6), LeakyRelu,
/// HardSwish, HardSigmoid, Sigmoid, Tanh.
struct ActivationFusion;

impl TensorRule for ActivationFusion {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Activation(_), ch)) = as_op(eg, node) else {
            return;
        };
        for inner in eg[ch[0]].iter() {
            let fusable = matches!(
                as_op(eg, inner),
                Some((
                    Op::Conv(_)
                        | Op::Gemm(_)
                        | Op::FusedConv {
                            activation: None,
                            ..
                        }
                        | Op::FusedGemm {
                            activation: None,
                            ..
                        },
                    _
                ))
            );
            if fusable {
                out.push(Match {
                    nodes: vec![node.clone(), inner.clone()],
                    classes: vec![class],
                });
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let Some((Op::Activation(act), _)) = as_op(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let act = Some(*act);
        let Some((op, ch)) = as_op(eg, &m.nodes[1]) else {
            return Vec::new();
        };
        let (op, mut ch) = (op.clone(), ch.to_vec());
        let name = name_of(eg, &m.nodes[1]);
        let fused = match op {
            Op::Conv(conv) => {
                if ch.len() == 2 {
                    match zero_bias(eg, ch[1], &name) {
                        Some(b) => ch.push(b),
                        None => return Vec::new(),
                    }
                }
                Op::FusedConv {
                    conv,
                    residual: false,
                    activation: act,
                }
            }
            Op::FusedConv { conv, residual, .. } => Op::FusedConv {
                conv,
                residual,
                activation: act,
            },
            Op::Gemm(gemm) | Op::FusedGemm { gemm, .. } => Op::FusedGemm {
                gemm,
                activation: act,
            },
            _ => return Vec::new(),
        };
        match add_op(eg, fused, ch, &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// A zero bias for a conv whose weight is class `w` (FusedConv always has a bias input).
fn zero_bias(eg: &mut TGraph, w: Id, name: &str) -> Option<Id> {
    let w_ty = ty(eg, w)?.clone();
    let channels = *w_ty.dims().first()?;
    let key = format!("zero-bias:{}:{channels}", w_ty.dtype);
    let ids = derived_consts(eg, key, || {
        let ty = qcc_ir::TensorType::new(w_ty.dtype, vec![channels]);
        Some(vec![(format!("{name}.bias.zero"), Tensor::zeros(&ty))])
    })?;
    ids.first().copied()
}

/// `Add(Conv(x), y)` and `Add(y, Conv(x))` → `FusedConv{residual}(x, W, B, y)`, only when y
/// has exactly the conv output's type: a broadcasting add is not an epilogue.
struct ResidualFusion;

impl TensorRule for ResidualFusion {
    fn name(&self) -> &'static str {
        "fuse-residual"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Binary(BinaryOp::Add), ch)) = as_op(eg, node) else {
            return;
        };
        for (p, y) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            let (Some(pt), Some(yt)) = (ty(eg, p), ty(eg, y)) else {
                continue;
            };
            if pt != yt || ty(eg, class) != Some(pt) {
                continue;
            }
            for inner in eg[p].iter() {
                let fusable = matches!(
                    as_op(eg, inner),
                    Some((
                        Op::Conv(_)
                            | Op::FusedConv {
                                residual: false,
                                activation: None,
                                ..
                            },
                        _
                    ))
                );
                if fusable {
                    out.push(Match {
                        nodes: vec![node.clone(), inner.clone()],
                        classes: vec![class, y],
                    });
                }
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (class, y) = (m.classes[0], m.classes[1]);
        let Some((op, ch)) = as_op(eg, &m.nodes[1]) else {
            return Vec::new();
        };
        let (op, mut ch) = (op.clone(), ch.to_vec());
        let name = name_of(eg, &m.nodes[1]);
        let conv = match op {
            Op::Conv(conv) | Op::FusedConv { conv, .. } => conv,
            _ => return Vec::new(),
        };
        if ch.len() == 2 {
            match zero_bias(eg, ch[1], &name) {
                Some(b) => ch.push(b),
                None => return Vec::new(),
            }
        }
        ch.push(y);
        let fused = Op::FusedConv {
            conv,
            residual: true,
            activation: None,
        };
        match add_op(eg, fused, ch, &name) {
            Some(new) => vec![(class, new)],
            None => Vec::new(),
        }
    }
}
