//! Semantic checks of the int8 realization rules (`realize-int8`): seeded random graphs in
//! the QDQ form, the realized graph's outputs (interpreter) within one quantization step of
//! the output of the QDQ graph's, and the float ops really gone (else the check would prove
//! nothing).
//!
//! Why one step: the QDQ graph computes the real-valued result in f32 and rounds it once in
//! the output QuantizeLinear; the realized op computes the exact integer sum and rounds it
//! once in its fixed-point requantization. Two roundings of values that differ by far less
//! than a step land at most one step apart.

use super::tests::{ops, run, text, Rng};
use qcc_ir::{
    Activation, BinaryOp, ConvAttrs, DType, GemmAttrs, Graph, Op, Padding, PoolAttrs, QParams,
    Tensor, TensorType, ValueId,
};
use std::collections::HashMap;

const CASES: u64 = 24;

/// A QDQ graph under construction, with a counter for fresh names.
struct Qdq {
    g: Graph,
    n: usize,
    rng: Rng,
}

impl Qdq {
    fn new(seed: u64) -> Qdq {
        Qdq {
            g: Graph::new("qdq"),
            n: 0,
            rng: Rng(seed),
        }
    }
    fn fresh(&mut self, base: &str) -> String {
        self.n += 1;
        format!("{base}{}", self.n)
    }
    fn coin(&mut self) -> bool {
        self.rng.below(2) == 0
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.rng.unit() + 1.0) / 2.0
    }
    fn input(&mut self, dims: &[usize]) -> ValueId {
        let name = self.fresh("in");
        self.g
            .add_input(name, TensorType::new(DType::F32, dims.to_vec()))
            .unwrap()
    }
    fn constant(&mut self, t: Tensor) -> ValueId {
        let name = self.fresh("k");
        self.g.add_constant(name, t).unwrap()
    }
    fn node(&mut self, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let name = self.fresh("n");
        let id = self
            .g
            .add_node(name.clone(), op, inputs, vec![name])
            .unwrap_or_else(|e| panic!("{e}\n{}", text(&self.g)));
        self.g.node(id).outputs[0]
    }
    fn dims(&self, v: ValueId) -> Vec<usize> {
        self.g.value(v).ty.dims().to_vec()
    }
    /// Per-tensor activation parameters, u8 or i8, scale in [lo, hi).
    fn activation_params(&mut self, lo: f32, hi: f32) -> QParams {
        let scale = self.uniform(lo, hi);
        if self.coin() {
            QParams::per_tensor(DType::U8, scale, 100 + self.rng.below(56) as i32).unwrap()
        } else {
            QParams::per_tensor(DType::I8, scale, self.rng.below(21) as i32 - 10).unwrap()
        }
    }
    /// `DQ_p(Q_p(v))`: how the QDQ form reads a quantized activation.
    fn qdq(&mut self, v: ValueId, p: &QParams) -> ValueId {
        let q = self.node(Op::QuantizeLinear(p.clone()), vec![v]);
        self.node(Op::DequantizeLinear(p.clone()), vec![q])
    }
    fn int_constant(&mut self, dtype: DType, dims: &[usize], values: &[i64]) -> ValueId {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| match dtype {
                DType::I32 => (v as i32).to_le_bytes().to_vec(),
                _ => vec![v as u8],
            })
            .collect();
        let t = Tensor::from_le_bytes(&TensorType::new(dtype, dims.to_vec()), &bytes).unwrap();
        self.constant(t)
    }
    /// A random 8-bit weight `DQ_w(const)`: i8 symmetric or u8 asymmetric (snpe), per tensor
    /// or per channel along `axis` when given.
    fn weight(&mut self, dims: &[usize], axis: Option<usize>) -> (ValueId, QParams) {
        let channels = axis.map_or(1, |a| dims[a]);
        let scales: Vec<f32> = (0..channels).map(|_| self.uniform(0.004, 0.012)).collect();
        let u8_weights = self.coin();
        let zero_points: Vec<i32> = (0..channels)
            .map(|_| {
                if u8_weights {
                    110 + self.rng.below(36) as i32
                } else {
                    0
                }
            })
            .collect();
        let dtype = if u8_weights { DType::U8 } else { DType::I8 };
        let (lo, span) = if u8_weights { (0, 256) } else { (-127, 255) };
        let n: usize = dims.iter().product();
        let values: Vec<i64> = (0..n).map(|_| lo + self.rng.below(span) as i64).collect();
        let wq = self.int_constant(dtype, dims, &values);
        let pw = QParams::new(dtype, axis, scales, zero_points).unwrap();
        (self.node(Op::DequantizeLinear(pw.clone()), vec![wq]), pw)
    }
    /// A random i32 bias `DQ_b(const)` at the bias scale `s_x·s_w[c]` (f32 products).
    fn bias(&mut self, px: &QParams, pw: &QParams, n: usize) -> ValueId {
        let values: Vec<i64> = (0..n).map(|_| self.rng.below(2001) as i64 - 1000).collect();
        let bq = self.int_constant(DType::I32, &[n], &values);
        let scales: Vec<f32> = (0..n).map(|c| px.scales()[0] * pw.channel(c).0).collect();
        let axis = (n > 1).then_some(0);
        let pb = if axis.is_some() {
            QParams::per_channel(DType::I32, 0, scales, vec![0; n]).unwrap()
        } else {
            QParams::per_tensor(DType::I32, scales[0], 0).unwrap()
        };
        self.node(Op::DequantizeLinear(pb), vec![bq])
    }
    /// None, ReLU, ReLU6 or a symmetric Clip: the activations that realize as clamps.
    fn clamp_activation(&mut self, v: ValueId) -> ValueId {
        let act = match self.rng.below(4) {
            0 => return v,
            1 => Activation::Relu,
            2 => Activation::Clip { min: 0.0, max: 6.0 },
            _ => Activation::Clip {
                min: -0.5,
                max: 0.5,
            },
        };
        self.node(Op::Activation(act), vec![v])
    }
}

/// Realizes `g`, checks that each output agrees within one step (`steps`, the scale of each
/// output's quantization) on three random inputs, and returns the realized graph.
fn realize_and_compare(g: &Graph, steps: &[f32], seed: u64) -> Graph {
    let (after, _) = run("realize-int8", g);
    assert_eq!(steps.len(), g.outputs().len());
    for input_seed in 1..=3u64 {
        let mut rng = Rng(input_seed * 7919 + seed);
        let feeds: HashMap<String, Tensor> = g
            .input_values()
            .iter()
            .map(|&v| (g.value(v).name.clone(), rng.input(&g.value(v).ty)))
            .collect();
        let eval = |graph: &Graph| {
            qcc_ir::eval::run(graph, &feeds)
                .unwrap_or_else(|e| panic!("interpreter failed: {e}\n{}", text(graph)))
        };
        let (want, got) = (eval(g), eval(&after));
        for ((w, a), step) in want.iter().zip(&got).zip(steps) {
            assert_eq!(w.ty(), a.ty(), "seed {seed}: output type changed");
            let worst = w
                .to_f64_vec()
                .iter()
                .zip(a.to_f64_vec())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= *step as f64 * 1.0001,
                "seed {seed}/{input_seed}: outputs differ by {worst} > one step {step}\n\
                 before:\n{}\nafter:\n{}",
                text(g),
                text(&after)
            );
        }
    }
    after
}

fn count(g: &Graph, name: &str) -> usize {
    ops(g).iter().filter(|o| o.as_str() == name).count()
}

/// The element types of the inputs of every node running `op`.
fn input_dtypes(g: &Graph, op: &str) -> Vec<DType> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .filter(|&n| g.node(n).op.name() == op)
        .flat_map(|n| g.node(n).inputs.iter().map(|&v| g.value(v).ty.dtype))
        .collect()
}

#[test]
fn realized_convolutions_agree_with_the_qdq_graph() {
    for seed in 0..CASES {
        let mut b = Qdq::new(500 + seed);
        let (c, m) = (1 + b.rng.below(4), 1 + b.rng.below(4));
        let m = if seed % 3 == 0 { c } else { m };
        let k = [1, 3][b.rng.below(2)];
        let conv = ConvAttrs {
            kernel: vec![k, k],
            strides: vec![1 + b.rng.below(2); 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![b.rng.below(2) * (k / 2); 4]),
            group: if c == m && b.coin() { c } else { 1 },
        };
        let batch = 1 + b.rng.below(2);
        let x = b.input(&[batch, c, 5, 5]);
        let px = b.activation_params(0.005, 0.01);
        let xd = b.qdq(x, &px);
        let axis = b.coin().then_some(0);
        let (w, pw) = b.weight(&[m, c / conv.group, k, k], axis);
        let mut inputs = vec![xd, w];
        if b.coin() {
            inputs.push(b.bias(&px, &pw, m));
        }
        let mut y = b.node(Op::Conv(conv), inputs);
        if b.coin() {
            // A residual read from its own quantized tensor (the tensorrt form).
            let dims = b.dims(y);
            let r = b.input(&dims);
            let pr = b.activation_params(0.005, 0.01);
            let rd = b.qdq(r, &pr);
            y = b.node(Op::Binary(BinaryOp::Add), vec![y, rd]);
        }
        let y = b.clamp_activation(y);
        let py = b.activation_params(0.01, 0.02);
        let out = b.qdq(y, &py);
        b.g.set_outputs(vec![out]);
        let after = realize_and_compare(&b.g, &[py.scales()[0]], seed);
        let left = ops(&after);
        assert!(
            left.iter()
                .all(|o| !o.contains("Conv") || o == "QuantizedConv")
                && count(&after, "QuantizedConv") == 1,
            "seed {seed}: {left:?}\n{}",
            text(&after)
        );
        assert_eq!(count(&after, "Add"), 0, "seed {seed}: {left:?}");
    }
}

#[test]
fn realized_matrix_products_agree_with_the_qdq_graph() {
    for seed in 0..CASES {
        let mut b = Qdq::new(600 + seed);
        let (rows, k, n) = (1 + b.rng.below(3), 1 + b.rng.below(8), 1 + b.rng.below(5));
        let pa = b.activation_params(0.005, 0.01);
        let gemm = seed % 3 != 0;
        let y = if gemm {
            let a = b.input(&[rows, k]);
            let ad = b.qdq(a, &pa);
            let trans_b = b.coin();
            let (dims, axis) = if trans_b { ([n, k], 0) } else { ([k, n], 1) };
            let per_channel = b.coin().then_some(axis);
            let (w, pw) = b.weight(&dims, per_channel);
            let mut inputs = vec![ad, w];
            if b.coin() {
                inputs.push(b.bias(&pa, &pw, n));
            }
            let attrs = GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b,
            };
            let y = b.node(Op::Gemm(attrs), inputs);
            b.clamp_activation(y)
        } else {
            let a = b.input(&[2, rows, k]);
            let ad = b.qdq(a, &pa);
            let per_channel = b.coin().then_some(1);
            let (w, _) = b.weight(&[k, n], per_channel);
            b.node(Op::MatMul, vec![ad, w])
        };
        let py = b.activation_params(0.004, 0.01);
        let out = b.qdq(y, &py);
        b.g.set_outputs(vec![out]);
        let after = realize_and_compare(&b.g, &[py.scales()[0]], seed);
        let left = ops(&after);
        assert_eq!(count(&after, "QuantizedMatMul"), 1, "seed {seed}: {left:?}");
        assert!(
            left.iter().all(|o| !o.starts_with("Gemm") && o != "MatMul"),
            "seed {seed}: {left:?}\n{}",
            text(&after)
        );
    }
}

#[test]
fn realized_add_pool_and_moved_dequantizes_agree_with_the_qdq_graph() {
    for seed in 0..CASES {
        let mut b = Qdq::new(700 + seed);
        let c = 1 + b.rng.below(4);
        let (x, z) = (b.input(&[1, c, 4, 4]), b.input(&[1, c, 4, 4]));
        let (px, pz) = (
            b.activation_params(0.005, 0.01),
            b.activation_params(0.005, 0.01),
        );
        let (xd, zd) = (b.qdq(x, &px), b.qdq(z, &pz));
        let sum = b.node(Op::Binary(BinaryOp::Add), vec![xd, zd]);
        let sum = b.clamp_activation(sum);
        let py = b.activation_params(0.008, 0.012);
        let yd = b.qdq(sum, &py);
        // MaxPool then Concat with another tensor of the same parameters, each followed by
        // a Q/DQ with those parameters (which cancels once the DQ has moved up).
        // 2x2 unpadded, or ResNet's padded 3x3 stem pool: both give 2x2 from 4x4.
        let (kernel, pad) = if b.coin() { (2, 0) } else { (3, 1) };
        let pool = PoolAttrs {
            kernel: vec![kernel; 2],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![pad; 4]),
            ceil_mode: false,
        };
        let pooled = b.node(Op::MaxPool(pool), vec![yd]);
        let pooled = b.qdq(pooled, &py);
        let other = b.input(&[1, 1, 2, 2]);
        let other = b.qdq(other, &py);
        let cat = b.node(Op::Concat { axis: 1 }, vec![pooled, other]);
        let cat = b.qdq(cat, &py);
        let gap = b.node(Op::GlobalAveragePool, vec![cat]);
        let pg = b.activation_params(0.002, 0.004);
        let gap = b.qdq(gap, &pg);
        let flat = b.node(Op::Flatten { axis: 1 }, vec![gap]);
        b.g.set_outputs(vec![flat]);
        let after = realize_and_compare(&b.g, &[pg.scales()[0]], seed);
        let left = ops(&after);
        for gone in ["Add", "GlobalAveragePool"] {
            assert_eq!(count(&after, gone), 0, "seed {seed}: {left:?}");
        }
        assert_eq!(count(&after, "QuantizedAdd"), 1, "seed {seed}: {left:?}");
        for quantized in ["MaxPool", "Concat", "QuantizedGlobalAveragePool"] {
            let types = input_dtypes(&after, quantized);
            assert!(
                !types.is_empty() && types.iter().all(|t| t.is_quantized()),
                "seed {seed}: {quantized} reads {types:?}\n{}",
                text(&after)
            );
        }
        // Only the three input quantizations are left, and one DQ for the output.
        assert_eq!(count(&after, "QuantizeLinear"), 3, "seed {seed}: {left:?}");
        assert_eq!(
            count(&after, "DequantizeLinear"),
            1,
            "seed {seed}: {left:?}"
        );
    }
}
