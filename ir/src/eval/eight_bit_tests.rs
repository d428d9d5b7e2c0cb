//! The ops a quantized graph keeps in the 8-bit domain between realized int8 ops: MaxPool
//! (ONNX allows u8/i8 since opset 12) and the layout ops. MaxPool commutes with the
//! monotone DequantizeLinear and QuantizeLinear, so on 8-bit values it must equal
//! DQ → f32 MaxPool → Q with the same parameters, exactly, padding included (padding never
//! wins a max; a window of padding only gives the type's minimum, as Q(−∞) does).

use super::realized::tests::{ints, tensor, tt, Rng};
use super::test_util::*;
use super::{eval_op, run};
use crate::graph::{Graph, ValueId};
use crate::infer::infer_types;
use crate::op::{Op, Padding, PoolAttrs};
use crate::quant::QParams;
use crate::{DType, Tensor};
use std::collections::HashMap;

fn random_pool(rng: &mut Rng, spatial: usize) -> (PoolAttrs, Vec<usize>) {
    let kernel: Vec<usize> = (0..spatial).map(|_| 1 + rng.below(3)).collect();
    let strides: Vec<usize> = (0..spatial).map(|_| 1 + rng.below(2)).collect();
    let dilations: Vec<usize> = (0..spatial).map(|_| 1 + rng.below(2)).collect();
    let padding = match rng.below(4) {
        0 => Padding::SameUpper,
        1 => Padding::SameLower,
        _ => Padding::Explicit(
            (0..2 * spatial)
                .map(|i| rng.below(kernel[i % spatial]))
                .collect(),
        ),
    };
    let input = (0..spatial)
        .map(|d| (kernel[d] - 1) * dilations[d] + 1 + rng.below(4))
        .collect();
    let attrs = PoolAttrs {
        kernel,
        strides,
        dilations,
        padding,
        ceil_mode: rng.below(2) == 0,
    };
    (attrs, input)
}

#[test]
fn max_pool_on_8_bit_equals_dequantize_then_f32_max_pool_then_quantize() {
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    for case in 0..300 {
        let spatial = 1 + rng.below(2);
        let (attrs, input) = random_pool(&mut rng, spatial);
        let mut dims = vec![1 + rng.below(2), 1 + rng.below(3)];
        dims.extend(input);
        let dtype = rng.dtype();
        let q = QParams::per_tensor(dtype, rng.scale(), rng.value(dtype)).unwrap();
        let x: Vec<i32> = (0..dims.iter().product())
            .map(|_| rng.value(dtype))
            .collect();
        let x = tensor(dtype, &dims, &x);
        let op = Op::MaxPool(attrs);
        let direct = run1(&op, &[&x]);
        let real = run1(&Op::DequantizeLinear(q.clone()), &[&x]);
        let through_f32 = run1(&Op::QuantizeLinear(q.clone()), &[&run1(&op, &[&real])]);
        assert_eq!(direct.dtype(), dtype, "case {case}: {op:?}");
        assert_eq!(direct, through_f32, "case {case}: {op:?} {q}");
    }
}

#[test]
fn max_pool_padding_never_wins_on_8_bit() {
    // Every value is the type's minimum: a padding of 0 (or of the zero point) would win.
    let attrs = PoolAttrs {
        kernel: vec![3],
        strides: vec![1],
        dilations: vec![1],
        padding: Padding::Explicit(vec![2, 2]),
        ceil_mode: false,
    };
    let u = u8s(&[1, 1, 2], &[0, 0]);
    assert_eq!(
        run1(&Op::MaxPool(attrs.clone()), &[&u]),
        u8s(&[1, 1, 4], &[0; 4])
    );
    let i = i8s(&[1, 1, 2], &[-128, -100]);
    assert_eq!(
        run1(&Op::MaxPool(attrs), &[&i]),
        i8s(&[1, 1, 4], &[-128, -100, -100, -100])
    );
}

/// The 8-bit tensor `0, 1, 2, ...` (offset into i8's range for i8).
fn counting(dtype: DType, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let base = if dtype == DType::I8 { -100 } else { 0 };
    tensor(
        dtype,
        dims,
        &(0..n as i32).map(|v| base + v).collect::<Vec<_>>(),
    )
}

#[test]
fn layout_ops_keep_8_bit_types_and_values() {
    for dtype in [DType::U8, DType::I8] {
        let base = if dtype == DType::I8 { -100 } else { 0 };
        let x = counting(dtype, &[1, 2, 3]);
        let check = |op: Op, dims: &[usize], want: &[i32]| {
            let out = run1(&op, &[&x]);
            assert_eq!(out.dtype(), dtype, "{op:?}");
            assert_eq!(out.dims(), dims, "{op:?}");
            let want: Vec<i32> = want.iter().map(|v| base + v).collect();
            assert_eq!(ints(&out), want, "{op:?}");
            let inferred = infer_types(&op, &[&x.ty()]).unwrap();
            assert_eq!(inferred, vec![tt(dtype, dims)], "{op:?}");
        };
        let same = [0, 1, 2, 3, 4, 5];
        check(
            Op::Reshape {
                shape: vec![3, -1],
                allow_zero: false,
            },
            &[3, 2],
            &same,
        );
        check(Op::Flatten { axis: 2 }, &[2, 3], &same);
        check(Op::Squeeze { axes: vec![0] }, &[2, 3], &same);
        check(Op::Unsqueeze { axes: vec![1, 4] }, &[1, 1, 2, 3, 1], &same);
        check(Op::Identity, &[1, 2, 3], &same);
        check(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[3, 1, 2],
            &[0, 3, 1, 4, 2, 5],
        );
        let y = counting(dtype, &[1, 1, 3]);
        let cat = run1(&Op::Concat { axis: 1 }, &[&x, &y]);
        assert_eq!(cat.dtype(), dtype);
        assert_eq!(cat.dims(), &[1, 3, 3]);
        let want: Vec<i32> = [0, 1, 2, 3, 4, 5, 0, 1, 2]
            .iter()
            .map(|v| base + v)
            .collect();
        assert_eq!(ints(&cat), want);
    }
}

#[test]
fn concat_rejects_mixed_8_bit_types() {
    let (u, i) = (counting(DType::U8, &[1, 2]), counting(DType::I8, &[1, 2]));
    assert!(eval_op(&Op::Concat { axis: 1 }, &[&u, &i]).is_err());
}

#[test]
fn a_graph_of_8_bit_layout_ops_and_max_pool_runs() {
    let mut g = Graph::new("u8 layout");
    let x = g.add_input("x", tt(DType::U8, &[1, 2, 2, 3])).unwrap();
    let add = |g: &mut Graph, name: &str, op: Op, inputs: Vec<ValueId>| {
        let n = g.add_node(name, op, inputs, vec![name.into()]).unwrap();
        g.node(n).outputs[0]
    };
    let pool = Op::MaxPool(PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![0, 0, 0, 0]),
        ceil_mode: false,
    });
    let pooled = add(&mut g, "pool", pool, vec![x]); // [1, 2, 1, 2]
    let flat = add(&mut g, "flat", Op::Flatten { axis: 1 }, vec![pooled]); // [1, 4]
    let side = g
        .add_constant("side", counting(DType::U8, &[1, 2]))
        .unwrap();
    let cat = add(&mut g, "cat", Op::Concat { axis: 1 }, vec![flat, side]); // [1, 6]
    let y = add(
        &mut g,
        "reshape",
        Op::Reshape {
            shape: vec![2, 3],
            allow_zero: false,
        },
        vec![cat],
    );
    assert_eq!(g.value(y).ty, tt(DType::U8, &[2, 3]));
    g.set_outputs(vec![y]);
    // x planes [[0 1 2] [3 4 5]] and [[6 7 8] [9 10 11]]: 2x2 maxima 4 5 and 10 11.
    let inputs = HashMap::from([("x".to_string(), counting(DType::U8, &[1, 2, 2, 3]))]);
    let out = run(&g, &inputs).unwrap();
    assert_eq!(out[0], u8s(&[2, 3], &[4, 5, 10, 11, 0, 1]));
}
