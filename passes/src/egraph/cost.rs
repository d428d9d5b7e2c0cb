//! The target cost model: an estimate, in nanoseconds, of running one node.
//!
//! A node costs its arithmetic (FLOPs at the target's rate), the bytes it reads and writes
//! (at the target's memory bandwidth) and a fixed per-kernel overhead (launch, loop set-up,
//! one more pass over memory that fusion would avoid). Views (Reshape, Flatten...) are
//! nearly free; leaves cost a token amount so that every node's cost is strictly positive
//! (which keeps extraction acyclic). Ops the back end has no kernel for (BatchNormalization,
//! which must be folded or decomposed) cost a penalty that makes any rewrite preferable.

use qcc_ir::{Op, TensorType};

/// Cost parameters of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    pub name: &'static str,
    /// Arithmetic throughput, floating-point operations per nanosecond (GFLOP/s).
    pub flops_per_ns: f64,
    /// Memory bandwidth, bytes per nanosecond (GB/s).
    pub bytes_per_ns: f64,
    /// Fixed cost of one kernel, nanoseconds.
    pub kernel_overhead_ns: f64,
    /// Cost of an op the back end cannot run (it must be rewritten away).
    pub unsupported_op_ns: f64,
}

/// The token cost of a leaf or a projection: positive, negligible.
pub const LEAF_COST: f64 = 1e-3;

impl Default for CostModel {
    fn default() -> Self {
        CostModel::generic_cpu()
    }
}

impl CostModel {
    /// One core of a generic x86-64/aarch64 CPU with 128-bit vectors.
    pub fn generic_cpu() -> CostModel {
        CostModel {
            name: "generic-cpu",
            flops_per_ns: 16.0,
            bytes_per_ns: 10.0,
            kernel_overhead_ns: 500.0,
            unsupported_op_ns: 1e9,
        }
    }

    /// The cost model of a compilation target, named as targets name their architecture
    /// and precision (`x86_64`, `fp32`). Parameters come from measurements on this project's
    /// x86-64 machine (AVX-512 VNNI Xeon, one core): 13.7 GB/s is the median of a 64 MiB
    /// single-core copy (numpy `copyto`, read + write bytes); 52 GFLOP/s is the best f32x4
    /// Cranelift FMA block measured there and 238 GOP/s the `vpdpbusd` int8 block (the
    /// figures the back-end issues record). Targets not measured yet (aarch64, fp16) use
    /// [`CostModel::generic_cpu`]; the model's `name` says which one was chosen.
    pub fn for_target(arch: &str, precision: &str) -> CostModel {
        let measured_x86 = |name, flops_per_ns| CostModel {
            name,
            flops_per_ns,
            bytes_per_ns: 13.7,
            ..CostModel::generic_cpu()
        };
        match (arch, precision) {
            ("x86_64", "fp32") => measured_x86("x86_64-fp32", 52.0),
            ("x86_64", "int8") => measured_x86("x86_64-int8", 238.0),
            _ => CostModel::generic_cpu(),
        }
    }

    fn kernel(&self, flops: f64, bytes: f64) -> f64 {
        self.kernel_overhead_ns + flops / self.flops_per_ns + bytes / self.bytes_per_ns
    }

    /// Cost of one node running `op` on inputs of types `inputs`, producing `outputs`.
    pub fn op_cost(&self, op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> f64 {
        let bytes_in: f64 = inputs.iter().map(|t| t.byte_size() as f64).sum();
        let bytes_out: f64 = outputs.iter().map(|t| t.byte_size() as f64).sum();
        let out_elems: f64 = outputs.iter().map(|t| t.shape.numel() as f64).sum();
        let moved = bytes_in + bytes_out;
        match op {
            Op::Conv(_)
            | Op::FusedConv { .. }
            | Op::QLinearConv { .. }
            | Op::QuantizedConv { .. }
            | Op::ConvInteger { .. } => {
                // Multiply-adds per output element: the weight's per-output-channel volume.
                let per_out = inputs
                    .get(1)
                    .map(|w| w.dims().iter().skip(1).product::<usize>() as f64)
                    .unwrap_or(1.0);
                let epilogue = match op {
                    Op::FusedConv {
                        residual,
                        activation,
                        ..
                    } => out_elems * (*residual as u8 as f64 + activation.is_some() as u8 as f64),
                    Op::QuantizedConv { residual, .. } => {
                        out_elems * residual.is_some() as u8 as f64
                    }
                    _ => 0.0,
                };
                self.kernel(2.0 * out_elems * per_out + epilogue, moved)
            }
            Op::Gemm(_)
            | Op::FusedGemm { .. }
            | Op::MatMul
            | Op::QLinearMatMul { .. }
            | Op::QuantizedMatMul { .. } => {
                // K is the contracted dim: A's last (or first when transposed).
                let k = match (op, inputs.first()) {
                    (Op::Gemm(g) | Op::FusedGemm { gemm: g, .. }, Some(a)) if g.trans_a => {
                        a.dims().first().copied().unwrap_or(1)
                    }
                    (_, Some(a)) => a.dims().last().copied().unwrap_or(1),
                    _ => 1,
                } as f64;
                self.kernel(2.0 * out_elems * k, moved)
            }
            Op::MatMulInteger { .. } => {
                let k = inputs
                    .first()
                    .and_then(|a| a.dims().last().copied())
                    .unwrap_or(1) as f64;
                self.kernel(2.0 * out_elems * k, moved)
            }
            // Two multiplies, an add, a rounding shift and a clamp per element, in 32-bit
            // lanes; the bytes (1 per element for 8-bit tensors) usually dominate.
            Op::QuantizedAdd { .. } => self.kernel(2.0 * out_elems, moved),
            // One add per input element, one requantization per output element.
            Op::QuantizedGlobalAveragePool { .. } => {
                let in_elems: f64 = inputs.iter().map(|t| t.shape.numel() as f64).sum();
                self.kernel(in_elems + out_elems, moved)
            }
            Op::BatchNorm { .. } => self.unsupported_op_ns + self.kernel(2.0 * out_elems, moved),
            // Views: no data moves once the back end aliases them.
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout { .. } => 1.0,
            Op::Shape { .. } => 1.0,
            // A division costs several multiplies on every target.
            Op::Binary(qcc_ir::BinaryOp::Div) => self.kernel(4.0 * out_elems, moved),
            Op::Activation(_) | Op::Binary(_) | Op::Sum => self.kernel(out_elems, moved),
            _ => self.kernel(out_elems, moved),
        }
    }
}

/// The cost of a graph as it stands: every live node once.
pub fn graph_cost(g: &qcc_ir::Graph, m: &CostModel) -> Result<f64, qcc_ir::GraphError> {
    let mut total = 0.0;
    for n in g.live_nodes()? {
        let node = g.node(n);
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
        let outs: Vec<TensorType> = node
            .outputs
            .iter()
            .map(|&v| g.value(v).ty.clone())
            .collect();
        total += m.op_cost(&node.op, &ins, &outs).max(LEAF_COST);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qcc_ir::{Activation, ConvAttrs, DType, Padding};

    fn f32t(dims: &[usize]) -> TensorType {
        TensorType::new(DType::F32, dims.to_vec())
    }

    fn conv() -> ConvAttrs {
        ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![1, 1, 1, 1]),
            group: 1,
        }
    }

    #[test]
    fn fused_conv_is_cheaper_than_conv_then_relu() {
        let m = CostModel::generic_cpu();
        let (x, w, b, y) = (
            f32t(&[1, 8, 16, 16]),
            f32t(&[8, 8, 3, 3]),
            f32t(&[8]),
            f32t(&[1, 8, 16, 16]),
        );
        let conv_cost = m.op_cost(&Op::Conv(conv()), &[&x, &w, &b], std::slice::from_ref(&y));
        let relu = m.op_cost(
            &Op::Activation(Activation::Relu),
            &[&y],
            std::slice::from_ref(&y),
        );
        let fused = m.op_cost(
            &Op::FusedConv {
                conv: conv(),
                residual: false,
                activation: Some(Activation::Relu),
            },
            &[&x, &w, &b],
            std::slice::from_ref(&y),
        );
        assert!(fused < conv_cost + relu);
        assert!(fused > conv_cost);
    }

    #[test]
    fn batch_norm_costs_more_than_mul_and_add() {
        let m = CostModel::generic_cpu();
        let (x, c) = (f32t(&[1, 8, 4, 4]), f32t(&[8]));
        let bn = m.op_cost(
            &Op::BatchNorm { epsilon: 1e-5 },
            &[&x, &c, &c, &c, &c],
            std::slice::from_ref(&x),
        );
        let mul = m.op_cost(
            &Op::Binary(qcc_ir::BinaryOp::Mul),
            &[&x, &c],
            std::slice::from_ref(&x),
        );
        assert!(bn > 2.0 * mul);
    }

    fn every_model() -> [CostModel; 3] {
        [
            CostModel::generic_cpu(),
            CostModel::for_target("x86_64", "fp32"),
            CostModel::for_target("x86_64", "int8"),
        ]
    }

    fn t(dtype: DType, dims: &[usize]) -> TensorType {
        TensorType::new(dtype, dims.to_vec())
    }

    fn q(dtype: DType) -> qcc_ir::QParams {
        qcc_ir::QParams::per_tensor(dtype, 0.1, 0).unwrap()
    }

    #[test]
    fn quantized_add_and_pool_are_cheaper_than_their_f32_ops() {
        let shape = [1, 64, 28, 28];
        let (f, u, i) = (
            t(DType::F32, &shape),
            t(DType::U8, &shape),
            t(DType::I8, &shape),
        );
        let add = Op::QuantizedAdd {
            a: q(DType::U8),
            b: q(DType::I8),
            y: q(DType::U8),
            clamp: None,
        };
        let pool = Op::QuantizedGlobalAveragePool {
            x: q(DType::I8),
            y: q(DType::U8),
        };
        let (f1, u1) = (t(DType::F32, &[1, 64, 1, 1]), t(DType::U8, &[1, 64, 1, 1]));
        for m in every_model() {
            let f32_add = m.op_cost(
                &Op::Binary(qcc_ir::BinaryOp::Add),
                &[&f, &f],
                std::slice::from_ref(&f),
            );
            let int8_add = m.op_cost(&add, &[&u, &i], std::slice::from_ref(&u));
            assert!(int8_add < f32_add, "{}: {int8_add} vs {f32_add}", m.name);
            // Bytes dominate: a quarter of the traffic, well under half the time.
            assert!(
                int8_add - m.kernel_overhead_ns < 0.5 * (f32_add - m.kernel_overhead_ns),
                "{}",
                m.name
            );
            let f32_pool = m.op_cost(&Op::GlobalAveragePool, &[&f], std::slice::from_ref(&f1));
            let int8_pool = m.op_cost(&pool, &[&i], std::slice::from_ref(&u1));
            assert!(
                int8_pool < f32_pool,
                "{}: {int8_pool} vs {f32_pool}",
                m.name
            );
            // The int8 pool still pays for reading its whole input.
            assert!(
                int8_pool > m.kernel(0.0, i.byte_size() as f64),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn eight_bit_pools_and_layout_ops_cost_their_byte_size() {
        let pool = Op::MaxPool(qcc_ir::PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![1, 1, 1, 1]),
            ceil_mode: false,
        });
        let transpose = Op::Transpose {
            perm: vec![0, 2, 3, 1],
        };
        for m in every_model() {
            for dtype in [DType::U8, DType::I8] {
                let cost = |op: &Op, ins: &[&[usize]], out: &[usize], dtype| {
                    let ins: Vec<TensorType> = ins.iter().map(|d| t(dtype, d)).collect();
                    let refs: Vec<&TensorType> = ins.iter().collect();
                    m.op_cost(op, &refs, &[t(dtype, out)])
                };
                let x = [1, 64, 56, 56];
                let pooled = [1, 64, 28, 28];
                let cat_in: [&[usize]; 2] = [&[1, 32, 28, 28], &[1, 32, 28, 28]];
                let nhwc = [1, 56, 56, 64];
                let pairs = [
                    (&pool, &[&x[..]][..], &pooled[..]),
                    (&Op::Concat { axis: 1 }, &cat_in[..], &pooled[..]),
                    (&transpose, &[&x[..]][..], &nhwc[..]),
                ];
                for (op, ins, out) in pairs {
                    let (q8, f32) = (cost(op, ins, out, dtype), cost(op, ins, out, DType::F32));
                    assert!(q8 < f32, "{} {dtype} {op:?}: {q8} vs {f32}", m.name);
                    // Exactly the bytes differ: a quarter of the f32 traffic.
                    let bytes: f64 = ins
                        .iter()
                        .chain([&out])
                        .map(|d| d.iter().product::<usize>() as f64)
                        .sum();
                    let saved = 3.0 * bytes / m.bytes_per_ns;
                    assert!(((f32 - q8) - saved).abs() < 1e-6 * f32, "{}", m.name);
                }
                // Views stay views.
                let view = Op::Reshape {
                    shape: vec![1, -1],
                    allow_zero: false,
                };
                assert_eq!(cost(&view, &[&x], &[1, 64 * 56 * 56], dtype), 1.0);
            }
        }
    }

    #[test]
    fn targets_pick_their_measured_model_or_say_generic() {
        let fp32 = CostModel::for_target("x86_64", "fp32");
        let int8 = CostModel::for_target("x86_64", "int8");
        assert_eq!((fp32.name, int8.name), ("x86_64-fp32", "x86_64-int8"));
        assert!(int8.flops_per_ns > fp32.flops_per_ns);
        assert_eq!(CostModel::for_target("aarch64", "int8").name, "generic-cpu");
        // A compute-bound conv is cheaper on the faster target.
        let (x, w) = (f32t(&[1, 64, 56, 56]), f32t(&[64, 64, 3, 3]));
        let conv = Op::Conv(qcc_ir::ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: qcc_ir::Padding::Explicit(vec![1, 1, 1, 1]),
            group: 1,
        });
        let cost = |m: &CostModel| m.op_cost(&conv, &[&x, &w], std::slice::from_ref(&x));
        assert!(cost(&int8) < cost(&fp32) && cost(&fp32) < cost(&CostModel::generic_cpu()));
    }
}
