//! Batch-norm folding. Inference batch norm is a per-channel affine map, so one rule does it:
//! `BN(x)` → `Add(Mul(x, s), t)` with `s = scale / sqrt(var + eps)`, `t = B - mean * s`. The
//! affine family then folds the `Mul` and the `Add` into a Conv/Gemm before them (Conv → BN,
//! Gemm → BN; MatMul → BN through `simplify`'s MatMul → Gemm) or a Conv after them (BN →
//! Conv, where exact). Going through the decomposition rather than a direct Conv+BN rule
//! scales each weight tensor once (the `Add` fold only touches the bias) instead of twice
//! (a direct rule and the decomposition would both fold), and a BN that folds nowhere —
//! after a Concat, or before a conv whose output has other readers — is left as the
//! `Mul` + `Add` a back end without a BN kernel can run.

use super::weights::{bn_scale_shift, Flat};
use super::{as_op, f32_const, key_of, name_of, ty, Match, TensorRule};
use crate::egraph::lang::{add_op, derived_consts, TGraph, TensorLang};
use egg::Id;
use qcc_ir::{BinaryOp, Op};
use std::sync::Arc;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![Arc::new(BatchNormToAffine)]
}

/// A BN node with constant f32 parameters: its input class and per-channel s and t.
struct BnParams {
    x: Id,
    s: Vec<f32>,
    t: Vec<f32>,
    key: String,
}

fn bn_params(eg: &TGraph, node: &TensorLang) -> Option<BnParams> {
    let (op, ch) = as_op(eg, node)?;
    let Op::BatchNorm { epsilon } = op else {
        return None;
    };
    let p: Vec<Vec<f32>> = ch[1..5]
        .iter()
        .map(|&c| f32_const(eg, c).map(|(_, v)| v))
        .collect::<Option<_>>()?;
    let (s, t) = bn_scale_shift(*epsilon, &p[0], &p[1], &p[2], &p[3])?;
    let key = ch[1..5]
        .iter()
        .map(|&c| key_of(eg, c))
        .collect::<Vec<_>>()
        .join(",");
    Some(BnParams {
        x: ch[0],
        s,
        t,
        key: format!("bn({}){key}", epsilon.to_bits()),
    })
}

/// Whether the BN node's parameters are constant (cheap check for `search`).
fn bn_is_foldable(eg: &TGraph, node: &TensorLang) -> Option<Id> {
    let (op, ch) = as_op(eg, node)?;
    if !matches!(op, Op::BatchNorm { .. }) || !ch[1..5].iter().all(|&c| f32_const_ok(eg, c)) {
        return None;
    }
    Some(ch[0])
}

fn f32_const_ok(eg: &TGraph, id: Id) -> bool {
    eg[id]
        .data
        .constant
        .as_deref()
        .is_some_and(|t| t.as_f32().is_ok())
}

/// `BN(x)` → `Add(Mul(x, s), t)`, s and t shaped `[C, 1, ...]` to broadcast along axis 1.
struct BatchNormToAffine;

impl TensorRule for BatchNormToAffine {
    fn name(&self) -> &'static str {
        "batchnorm-to-affine"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        if bn_is_foldable(eg, node).is_some() {
            out.push(Match {
                nodes: vec![node.clone()],
                classes: vec![class],
            });
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let Some(bn) = bn_params(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let Some(x_ty) = ty(eg, bn.x).cloned() else {
            return Vec::new();
        };
        if x_ty.rank() < 2 || x_ty.dims()[1] != bn.s.len() {
            return Vec::new();
        }
        let mut dims = vec![bn.s.len()];
        dims.resize(x_ty.rank() - 1, 1);
        let name = name_of(eg, &m.nodes[0]);
        let key = format!("bn-affine:{}:{}", x_ty.rank(), bn.key);
        let consts = derived_consts(eg, key, || {
            Some(vec![
                (
                    format!("{name}.scale"),
                    Flat::new(dims.clone(), bn.s.clone()).into_tensor(),
                ),
                (
                    format!("{name}.shift"),
                    Flat::new(dims.clone(), bn.t.clone()).into_tensor(),
                ),
            ])
        });
        let Some(consts) = consts else {
            return Vec::new();
        };
        let mul = add_op(
            eg,
            Op::Binary(BinaryOp::Mul),
            vec![bn.x, consts[0]],
            &format!("{name}.mul"),
        );
        let Some(mul) = mul else {
            return Vec::new();
        };
        let add = add_op(
            eg,
            Op::Binary(BinaryOp::Add),
            vec![mul, consts[1]],
            &format!("{name}.add"),
        );
        match add {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}
