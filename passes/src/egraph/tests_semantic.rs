//! Semantic checks, one per rule family: seeded random small graphs where the family applies,
//! interpreter output before vs after within a relative L2 of 1e-5, and the rewrite really
//! happened (else the check would prove nothing).

use super::tests::{assert_same_semantics, ops, run, text, Rng};
use qcc_ir::{
    Activation, BinaryOp, ConvAttrs, DType, GemmAttrs, Graph, Op, Padding, Tensor, TensorType,
    ValueId,
};

const CASES: u64 = 24;

/// A graph under construction with a counter for fresh names.
struct G {
    g: Graph,
    n: usize,
    rng: Rng,
}

impl G {
    fn new(seed: u64) -> G {
        G {
            g: Graph::new("random"),
            n: 0,
            rng: Rng(seed),
        }
    }
    fn input(&mut self, dims: &[usize]) -> ValueId {
        let name = format!("in{}", self.n);
        self.n += 1;
        self.g
            .add_input(name, TensorType::new(DType::F32, dims.to_vec()))
            .unwrap()
    }
    fn constant(&mut self, t: Tensor) -> ValueId {
        let name = format!("k{}", self.n);
        self.n += 1;
        self.g.add_constant(name, t).unwrap()
    }
    fn random(&mut self, dims: &[usize]) -> ValueId {
        let t = self.rng.tensor(dims);
        self.constant(t)
    }
    /// Positive values in [0.1, 2.1): variances and scales that keep BN well conditioned.
    fn positive(&mut self, n: usize) -> ValueId {
        let data = (0..n).map(|_| 1.1 + self.rng.unit()).collect();
        self.constant(Tensor::from_f32(&[n], data))
    }
    fn node(&mut self, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let name = format!("n{}", self.n);
        self.n += 1;
        let id = self
            .g
            .add_node(name.clone(), op, inputs, vec![name])
            .unwrap_or_else(|e| panic!("{e}\n{}", text(&self.g)));
        self.g.node(id).outputs[0]
    }
    fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        self.g.set_outputs(outputs);
        self.g
    }
    fn coin(&mut self) -> bool {
        self.rng.below(2) == 0
    }
    fn activation(&mut self) -> Activation {
        match self.rng.below(7) {
            0 => Activation::Relu,
            1 => Activation::Clip { min: 0.0, max: 6.0 },
            2 => Activation::LeakyRelu { alpha: 0.1 },
            3 => Activation::HardSwish,
            4 => Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            5 => Activation::Sigmoid,
            _ => Activation::Tanh,
        }
    }
    /// A random conv of `x` (channels `c`) to `m` channels; returns (output, attrs).
    fn conv(&mut self, x: ValueId, c: usize, m: usize, pad_ok: bool) -> ValueId {
        let k = [1, 3][self.rng.below(2)];
        let pad = if pad_ok && k == 3 {
            self.rng.below(2)
        } else {
            0
        };
        let group = if c == m && self.coin() { c } else { 1 };
        let attrs = ConvAttrs {
            kernel: vec![k, k],
            strides: vec![1 + self.rng.below(2); 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![pad; 4]),
            group,
        };
        let w = self.random(&[m, c / group, k, k]);
        let mut inputs = vec![x, w];
        if self.coin() {
            inputs.push(self.random(&[m]));
        }
        self.node(Op::Conv(attrs), inputs)
    }
    fn batch_norm(&mut self, x: ValueId, c: usize) -> ValueId {
        let scale = self.positive(c);
        let bias = self.random(&[c]);
        let mean = self.random(&[c]);
        let var = self.positive(c);
        self.node(
            Op::BatchNorm { epsilon: 1e-5 },
            vec![x, scale, bias, mean, var],
        )
    }
}

fn count(g: &Graph, name: &str) -> usize {
    ops(g).iter().filter(|o| o.as_str() == name).count()
}

#[test]
fn batch_norm_folding_keeps_semantics_on_random_graphs() {
    for seed in 0..CASES {
        let mut b = G::new(seed);
        let (c, m) = (1 + b.rng.below(4), 1 + b.rng.below(4));
        let m = if seed % 3 == 0 { c } else { m };
        let batch = 1 + b.rng.below(2);
        let x = b.input(&[batch, c, 5, 5]);
        let conv = b.conv(x, c, m, true);
        let y = b.batch_norm(conv, m);
        // BN before an unpadded conv, and a Gemm/MatMul followed by BN.
        let pre = b.batch_norm(x, c);
        let after_bn = b.conv(pre, c, m, false);
        let v = b.input(&[2, 3]);
        let w = b.random(&[3, 4]);
        let mm = if b.coin() {
            b.node(Op::MatMul, vec![v, w])
        } else {
            let gemm = GemmAttrs {
                alpha: 0.5,
                beta: 1.5,
                trans_a: false,
                trans_b: false,
            };
            let bias = b.random(&[4]);
            b.node(Op::Gemm(gemm), vec![v, w, bias])
        };
        let z = b.batch_norm(mm, 4);
        let mut outputs = vec![y, after_bn, z];
        if seed % 4 == 0 {
            outputs.push(conv); // the conv is shared: no fold into it
        }
        let g = b.finish(outputs);
        let (after, _) = run("fuse", &g);
        assert_same_semantics(&g, &after);
        assert_eq!(
            count(&after, "BatchNormalization"),
            0,
            "seed {seed}\n{}",
            text(&after)
        );
    }
}

#[test]
fn affine_folding_keeps_semantics_on_random_graphs() {
    for seed in 0..CASES {
        let mut b = G::new(100 + seed);
        let (c, m) = (1 + b.rng.below(4), 1 + b.rng.below(4));
        let x = b.input(&[1, c, 4, 4]);
        let conv = b.conv(x, c, m, true);
        let k = b.random(&[m, 1, 1]);
        let mul = if b.coin() {
            b.node(Op::Binary(BinaryOp::Mul), vec![conv, k])
        } else {
            b.node(Op::Binary(BinaryOp::Mul), vec![k, conv])
        };
        let t = b.random(&[1, m, 1, 1]);
        let op = [BinaryOp::Add, BinaryOp::Sub][b.rng.below(2)];
        let y = b.node(Op::Binary(op), vec![mul, t]);
        let v = b.input(&[3, 5]);
        let w = b.random(&[4, 5]);
        let gemm = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        let g1 = b.node(Op::Gemm(gemm), vec![v, w]);
        let d = b.positive(4);
        let z = b.node(Op::Binary(BinaryOp::Div), vec![g1, d]);
        let g = b.finish(vec![y, z]);
        let (after, _) = run("fold-batchnorm", &g);
        assert_same_semantics(&g, &after);
        let left = ops(&after);
        assert_eq!(left.len(), 2, "seed {seed}: {left:?}\n{}", text(&after));
    }
}

#[test]
fn fusion_keeps_semantics_on_random_graphs() {
    for seed in 0..CASES {
        let mut b = G::new(200 + seed);
        let (c, m) = (1 + b.rng.below(4), 1 + b.rng.below(4));
        let x = b.input(&[1, c, 5, 5]);
        let conv = b.conv(x, c, m, true);
        let conv_ty = b.g.value(conv).ty.clone();
        let r = b.input(conv_ty.dims());
        let add = if b.coin() {
            b.node(Op::Binary(BinaryOp::Add), vec![conv, r])
        } else {
            b.node(Op::Binary(BinaryOp::Add), vec![r, conv])
        };
        let act = b.activation();
        let y = b.node(Op::Activation(act), vec![add]);
        let conv2 = b.conv(x, c, m, true);
        let act2 = b.activation();
        let y2 = b.node(Op::Activation(act2), vec![conv2]);
        let v = b.input(&[2, 3]);
        let w = b.random(&[3, 4]);
        let gemm = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        };
        let gm = b.node(Op::Gemm(gemm), vec![v, w]);
        let act3 = b.activation();
        let z = b.node(Op::Activation(act3), vec![gm]);
        let g = b.finish(vec![y, y2, z]);
        let (after, _) = run("fuse", &g);
        assert_same_semantics(&g, &after);
        let left = ops(&after);
        assert_eq!(left.len(), 3, "seed {seed}: {left:?}\n{}", text(&after));
        assert!(
            left.iter().all(|o| o.contains('+')),
            "seed {seed}: {left:?}"
        );
    }
}

fn random_perm(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

#[test]
fn simplification_keeps_semantics_on_random_graphs() {
    for seed in 0..CASES {
        let mut b = G::new(300 + seed);
        let rank = 3 + b.rng.below(2);
        let dims: Vec<usize> = (0..rank).map(|_| 1 + b.rng.below(4)).collect();
        let x = b.input(&dims);
        let p1 = random_perm(&mut b.rng, rank);
        let t1 = b.node(Op::Transpose { perm: p1 }, vec![x]);
        let p2 = random_perm(&mut b.rng, rank);
        let t2 = b.node(Op::Transpose { perm: p2 }, vec![t1]);
        let y = b.node(Op::Activation(Activation::Relu), vec![t2]);
        let n: usize = dims.iter().product();
        let r1 = b.node(
            Op::Reshape {
                shape: vec![n as i64, 1],
                allow_zero: false,
            },
            vec![x],
        );
        let f = b.node(Op::Flatten { axis: 0 }, vec![r1]);
        let z = b.node(Op::Activation(Activation::Tanh), vec![f]);
        let c = 1 + b.rng.below(3);
        let img = b.input(&[1, c, 4, 4]);
        let pads = vec![
            0,
            0,
            b.rng.below(2) as i64,
            1,
            0,
            0,
            1,
            b.rng.below(2) as i64,
        ];
        let padded = b.node(Op::Pad { pads, value: 0.0 }, vec![img]);
        let conv = b.conv(padded, c, 2, true);
        let g = b.finish(vec![y, z, conv]);
        let (after, _) = run("egraph-simplify", &g);
        assert_same_semantics(&g, &after);
        let left = ops(&after);
        assert_eq!(
            left.iter().filter(|o| *o == "Transpose").count(),
            usize::from(left.contains(&"Transpose".to_string())),
            "seed {seed}: at most one transpose left: {left:?}"
        );
        assert!(!left.contains(&"Pad".to_string()), "seed {seed}: {left:?}");
        assert!(
            !left.contains(&"Flatten".to_string()),
            "seed {seed}: {left:?}"
        );
    }
}

#[test]
fn horizontal_fusion_keeps_semantics_on_random_graphs() {
    for seed in 0..CASES / 2 {
        let mut b = G::new(400 + seed);
        let c = 32 + b.rng.below(32);
        let x = b.input(&[1, c, 6, 6]);
        let k = 2 + b.rng.below(3);
        let mut outputs = Vec::new();
        for _ in 0..k {
            let m = 1 + b.rng.below(4);
            let attrs = ConvAttrs {
                kernel: vec![1, 1],
                strides: vec![1, 1],
                dilations: vec![1, 1],
                padding: Padding::Explicit(vec![0; 4]),
                group: 1,
            };
            let w = b.random(&[m, c, 1, 1]);
            let mut inputs = vec![x, w];
            if b.coin() {
                inputs.push(b.random(&[m]));
            }
            outputs.push(b.node(Op::Conv(attrs), inputs));
        }
        let g = b.finish(outputs);
        let (after, stats) = run("horizontal-fusion", &g);
        assert_same_semantics(&g, &after);
        assert!(
            stats.applied.iter().any(|(r, _)| r == "horizontal-conv1x1"),
            "seed {seed}: {stats:?}"
        );
    }
}
