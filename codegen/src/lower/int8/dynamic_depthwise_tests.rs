//! The dynamic int8 depthwise kernel against the interpreter (`qcc_ir::eval::eval_op` on
//! `Op::DynamicQuantizedConv`), bit for bit: random geometry, run-time zero points (0 and
//! 255 included), weight zero points (none, per tensor or per channel, −128 and 127
//! included), per-tensor and per-channel scales, residual and activations, both gathers and
//! several block widths, on the VNNI target, the widening fallback and `sdot`'s flipped
//! scratch; the refusal that sends a node to the grouped GEMM, and the model lowering's
//! choice between them; the instruction selection; and the speed report.

use std::collections::HashMap;

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Activation, ConvAttrs, DType, Graph, Op, Padding, QParams, Tensor, TensorType};

use super::super::dynamic_tests::{f32_bytes, same_f32};
use super::super::tests::{disassemble, no_vnni, vnni, Bytes, ConvCase};
use super::super::{lower_dynamic_qconv, with_dot_product};
use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::{compile_node, lower_graph, run_node_bytes, AlignedBuffer};

/// The run-time quantization, weights' parameters and epilogue of one case.
#[derive(Clone, Debug)]
struct Quant {
    zx: u8,
    per_channel_scales: bool,
    /// `None`: all zero; one value: per tensor; otherwise per channel.
    weight_zero_points: Vec<i32>,
    residual: bool,
    activation: Option<Activation>,
}

/// A kernel choice: `None` for the target's defaults.
#[derive(Clone, Copy, Debug)]
struct Choice {
    gather: Option<Gather>,
    vectors: usize,
}

const DEFAULT: Choice = Choice {
    gather: None,
    vectors: 8,
};

/// A depthwise case: `channels` planes of one input and one output channel each.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    batch: usize,
    channels: usize,
    in_hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    seed: u64,
) -> ConvCase {
    ConvCase {
        batch,
        group: channels,
        cin_g: 1,
        cout_g: 1,
        in_hw,
        kernel,
        strides,
        dilations,
        pads,
        seed,
    }
}

fn conv_attrs(case: &ConvCase) -> ConvAttrs {
    ConvAttrs {
        kernel: case.kernel.to_vec(),
        strides: case.strides.to_vec(),
        dilations: case.dilations.to_vec(),
        padding: Padding::Explicit(case.pads.to_vec()),
        group: case.group,
    }
}

fn unit(rng: &mut Bytes) -> f32 {
    (rng.next() >> 40) as f32 / (1u64 << 24) as f32
}

/// A positive scale spanning a few decades.
fn scale(rng: &mut Bytes) -> f32 {
    (0.05 + unit(rng)) * 2f32.powi((rng.next() % 12) as i32 - 9)
}

fn tensor(dtype: DType, dims: &[usize], bytes: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(dtype, dims.to_vec()), bytes).expect("byte count")
}

fn i8_bytes(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&v| v as u8).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The op's weight parameters (per channel along axis 0 when scales or zero points are).
fn weight_qparams(scales: &[f32], zero_points: &[i32], channels: usize) -> QParams {
    if scales.len() == 1 && zero_points.len() == 1 {
        return QParams::per_tensor(DType::I8, scales[0], zero_points[0]).expect("valid");
    }
    let pick = |v: &[f32], c: usize| v[if v.len() == 1 { 0 } else { c }];
    let scales = (0..channels).map(|c| pick(scales, c)).collect();
    let zero_points = (0..channels)
        .map(|c| zero_points[if zero_points.len() == 1 { 0 } else { c }])
        .collect();
    QParams::per_channel(DType::I8, 0, scales, zero_points).expect("valid")
}

/// One case's tensors.
struct Data {
    x: Vec<u8>,
    w: Vec<i8>,
    x_scale: f32,
    scales: Vec<f32>,
    bias: Vec<f32>,
    residual: Vec<f32>,
}

impl Data {
    /// Random bytes with the extremes over-represented. A channel with both a weight 127
    /// and zero point −128 is the one the kernel refuses: its 127s become 126 here (the
    /// refusal has its own test).
    fn new(g: &ConvGeometry, quant: &Quant, seed: u64) -> Data {
        let mut rng = Bytes(seed | 1);
        let channels = g.out_channels;
        let taps = g.kernel_h * g.kernel_w;
        let x = (0..g.batch * channels * g.in_h * g.in_w)
            .map(|_| rng.u8())
            .collect();
        let zw = &quant.weight_zero_points;
        let w = (0..channels * taps)
            .map(
                |i| match (rng.i8(), zw[if zw.len() == 1 { 0 } else { i / taps }]) {
                    (127, -128) => 126,
                    (w, _) => w,
                },
            )
            .collect();
        let x_scale = scale(&mut rng);
        let scales = (0..if quant.per_channel_scales {
            channels
        } else {
            1
        })
            .map(|_| scale(&mut rng))
            .collect();
        let bias = (0..channels)
            .map(|_| (unit(&mut rng) - 0.5) * 8.0)
            .collect();
        let out_len = g.batch * channels * g.out_h * g.out_w;
        let residual = (0..out_len).map(|_| (unit(&mut rng) - 0.5) * 8.0).collect();
        Data {
            x,
            w,
            x_scale,
            scales,
            bias,
            residual,
        }
    }

    fn params<'a>(&'a self, g: &ConvGeometry, quant: &'a Quant) -> DynamicConvParams<'a> {
        DynamicConvParams {
            geometry: *g,
            weight: &self.w,
            weight_scales: &self.scales,
            weight_zero_points: &quant.weight_zero_points,
            bias: &self.bias,
            residual: quant.residual,
            activation: quant.activation,
        }
    }

    /// The node's inputs as bytes, in the op's order.
    fn inputs(&self, quant: &Quant) -> Vec<Vec<u8>> {
        let mut inputs = vec![
            self.x.clone(),
            f32_bytes(&[self.x_scale]),
            vec![quant.zx],
            i8_bytes(&self.w),
            f32_bytes(&self.bias),
        ];
        if quant.residual {
            inputs.push(f32_bytes(&self.residual));
        }
        inputs
    }

    /// The interpreter's output.
    fn interpret(&self, case: &ConvCase, g: &ConvGeometry, quant: &Quant) -> Vec<f32> {
        let channels = g.out_channels;
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(case),
            w: weight_qparams(&self.scales, &quant.weight_zero_points, channels),
            residual: quant.residual,
            activation: quant.activation,
        };
        let w_dims = [channels, 1, g.kernel_h, g.kernel_w];
        let y_dims = [g.batch, channels, g.out_h, g.out_w];
        let mut tensors = vec![
            tensor(DType::U8, &[g.batch, channels, g.in_h, g.in_w], &self.x),
            Tensor::from_f32(&[], vec![self.x_scale]),
            tensor(DType::U8, &[], &[quant.zx]),
            tensor(DType::I8, &w_dims, &i8_bytes(&self.w)),
            Tensor::from_f32(&[channels], self.bias.clone()),
        ];
        if quant.residual {
            tensors.push(Tensor::from_f32(&y_dims, self.residual.clone()));
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let want = eval_op(&op, &refs).expect("the interpreter runs");
        want[0]
            .as_f32()
            .expect("f32 output")
            .iter()
            .copied()
            .collect()
    }
}

fn lower(
    target: &Target,
    choice: Choice,
    params: &DynamicConvParams,
) -> Result<NodeLowering, KernelError> {
    match choice.gather {
        None => lower_dynamic_qdepthwise(target, params),
        Some(gather) => {
            let dot = DotProduct::for_target(target);
            lower_dynamic_qdepthwise_with(target.arch(), dot, gather, choice.vectors, params)
        }
    }
}

fn check(
    target: &Target,
    choice: Choice,
    case: &ConvCase,
    quant: &Quant,
) -> Result<(), TestCaseError> {
    let Some(g) = case.geometry() else {
        return Ok(());
    };
    let data = Data::new(&g, quant, case.seed);
    let lowering = lower(target, choice, &data.params(&g, quant))
        .map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
    prop_assert!(lowering.fallback.is_none());
    let inputs = data.inputs(quant);
    let refs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
    let out_len = g.batch * g.out_channels * g.out_h * g.out_w;
    let got = run_node_bytes(target, &lowering, &refs, &[4 * out_len])
        .map_err(|e| TestCaseError::fail(format!("node fails: {e}")))?;
    let want = data.interpret(case, &g, quant);
    let what = format!("{} {choice:?} {g:?}\n{quant:?}", target.name());
    same_f32(&f32_values(&got[0]), &want, &what)
}

fn depthwise_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 1usize..=9),
        ([1usize..=12, 1usize..=40], 1usize..=5),
        ([1usize..=3, 1usize..=3], [1usize..=2, 1usize..=2]),
        [0usize..=2, 0usize..=3, 0usize..=2, 0usize..=3],
        any::<u64>(),
    )
        .prop_map(
            |((batch, channels), (in_hw, k), (strides, dilations), pads, seed)| {
                depthwise(
                    batch,
                    channels,
                    in_hw,
                    [k, k],
                    strides,
                    dilations,
                    pads,
                    seed,
                )
            },
        )
        .prop_filter("window fits", |case| case.geometry().is_some())
}

fn activation() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Clip {
            min: -0.75,
            max: 2.5
        })),
        Just(Some(Activation::LeakyRelu { alpha: 0.125 })),
        Just(Some(Activation::HardSwish)),
    ]
}

fn quant_strategy(channels: usize) -> impl Strategy<Value = Quant> {
    let zero_point = prop_oneof![Just(-128i32), Just(127), Just(3), -128i32..=127];
    let weight_zero_points = prop_oneof![
        1 => Just(vec![0]),
        2 => zero_point.clone().prop_map(|z| vec![z]),
        3 => prop::collection::vec(zero_point, channels),
    ];
    (
        prop_oneof![Just(0u8), Just(255u8), any::<u8>()],
        any::<bool>(),
        weight_zero_points,
        any::<bool>(),
        activation(),
    )
        .prop_map(
            |(zx, per_channel_scales, weight_zero_points, residual, activation)| Quant {
                zx,
                per_channel_scales,
                weight_zero_points,
                residual,
                activation,
            },
        )
}

fn choice_strategy() -> impl Strategy<Value = Choice> {
    prop_oneof![
        2 => Just(DEFAULT),
        1 => (1usize..=16).prop_map(|vectors| Choice {
            gather: Some(Gather::Shuffled),
            vectors,
        }),
        1 => (1usize..=16).prop_map(|vectors| Choice {
            gather: Some(Gather::Direct),
            vectors,
        }),
    ]
}

/// A case, its quantization and a kernel choice (a `Direct` choice only where plain loads
/// apply).
fn full_case() -> impl Strategy<Value = (ConvCase, Quant, Choice)> {
    depthwise_case().prop_flat_map(|case| {
        let channels = case.group;
        (Just(case), quant_strategy(channels), choice_strategy()).prop_map(
            |(case, quant, mut choice)| {
                let g = case.geometry().expect("filtered");
                if choice.gather == Some(Gather::Direct)
                    && Gather::for_geometry(&g) != Gather::Direct
                {
                    choice.gather = Some(Gather::Shuffled);
                }
                (case, quant, choice)
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn dynamic_depthwise_vnni_equals_the_interpreter((case, quant, choice) in full_case()) {
        check(&vnni(), choice, &case, &quant)?;
    }

    #[test]
    fn dynamic_depthwise_without_vnni_equals_the_interpreter(
        (case, quant, choice) in full_case(),
    ) {
        check(&no_vnni(), choice, &case, &quant)?;
    }

    /// aarch64's `sdot` kernel (flipped scratch, `zx − 128` compensated) on the JIT.
    #[test]
    fn dynamic_depthwise_sdot_equals_the_interpreter((case, quant, choice) in full_case()) {
        with_dot_product(DotProduct::Sdot, || check(&vnni(), choice, &case, &quant))?;
    }
}

fn fixed_quant(channels: usize, zx: u8, weight_zero_points: Vec<i32>) -> Quant {
    Quant {
        zx,
        per_channel_scales: channels > 1,
        weight_zero_points,
        residual: true,
        activation: Some(Activation::HardSwish),
    }
}

/// Rows wider than a block with a remainder (both gathers), strides 1 to 5, wide
/// dilations, 7×7 and 1×N kernels, a single channel, 1×1 kernels and rows over 8 vectors,
/// with and without weight zero points, on every dot product.
#[test]
fn dynamic_depthwise_edge_geometries_equal_the_interpreter() {
    let cases = [
        depthwise(1, 6, [9, 61], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1),
        depthwise(2, 5, [12, 45], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 2),
        depthwise(1, 3, [10, 50], [3, 5], [3, 3], [1, 2], [1, 2, 0, 1], 3),
        depthwise(1, 3, [9, 40], [3, 3], [4, 4], [1, 1], [1, 1, 1, 1], 4),
        depthwise(1, 2, [11, 47], [5, 5], [5, 5], [2, 3], [2, 2, 2, 2], 5),
        depthwise(1, 4, [15, 33], [7, 7], [1, 1], [3, 3], [9, 9, 9, 9], 6),
        depthwise(2, 1, [6, 7], [1, 7], [1, 1], [1, 1], [0, 3, 0, 3], 7),
        depthwise(1, 7, [3, 3], [3, 3], [1, 2], [1, 1], [2, 0, 0, 2], 8),
        depthwise(1, 3, [5, 37], [1, 1], [1, 1], [1, 1], [0; 4], 9),
        depthwise(1, 2, [4, 150], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 10),
    ];
    for dot in [DotProduct::Vnni, DotProduct::Widening, DotProduct::Sdot] {
        for case in &cases {
            let channels = case.group;
            let per_channel: Vec<i32> = (0..channels)
                .map(|c| [127, -128, 3, -40, 90][c % 5])
                .collect();
            for (zx, zero_points) in [(0u8, vec![0]), (255, per_channel), (131, vec![-128])] {
                let quant = fixed_quant(channels, zx, zero_points);
                let target = if dot == DotProduct::Widening {
                    no_vnni()
                } else {
                    vnni()
                };
                with_dot_product(dot, || check(&target, DEFAULT, case, &quant))
                    .unwrap_or_else(|e| panic!("{dot:?}: {e}"));
            }
        }
    }
}

/// The largest sums: every input byte 255 or 0 against zero point 0 or 255, weights −128
/// or 127 against zero points 127 or −128 (differences of ±255 split into two parts), 5×5.
#[test]
fn dynamic_depthwise_extreme_bytes_equal_the_interpreter() {
    let case = depthwise(1, 3, [7, 19], [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], 1);
    let g = case.geometry().expect("valid geometry");
    for (x, zx, w, zw) in [
        (255u8, 0u8, -128i8, 127),
        (0, 255, -128, 127),
        (255, 0, 126, -128),
        (0, 255, 0, -128),
        (255, 255, 127, 0),
    ] {
        let quant = fixed_quant(3, zx, vec![zw]);
        let mut data = Data::new(&g, &quant, 1);
        data.x.fill(x);
        data.w.fill(w);
        let want = data.interpret(&case, &g, &quant);
        for target in [vnni(), no_vnni()] {
            let lowering =
                lower_dynamic_qdepthwise(&target, &data.params(&g, &quant)).expect("lowers");
            let inputs = data.inputs(&quant);
            let refs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
            let got = run_node_bytes(&target, &lowering, &refs, &[4 * want.len()]).expect("runs");
            same_f32(
                &f32_values(&got[0]),
                &want,
                &format!("x {x} zx {zx} w {w} zw {zw}"),
            )
            .expect("kernel equals the interpreter");
        }
    }
}

/// Weight zero points cost a second dot product (`_zw`, a third byte blob) only when some
/// weight's difference from its zero point leaves s8; a channel with both 127 and −128 is
/// refused; other refusals are the static kernel's.
#[test]
fn weight_zero_points_name_the_kernel_and_only_wide_differences_cost_a_second_dot() {
    let case = depthwise(1, 4, [8, 8], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let g = case.geometry().expect("valid geometry");
    let mut w: Vec<i8> = (0..36).map(|i| (i * 7 % 200 - 100) as i8).collect();
    let lowering = |w: &[i8], zero_points: &[i32]| {
        let params = DynamicConvParams {
            geometry: g,
            weight: w,
            weight_scales: &[0.5],
            weight_zero_points: zero_points,
            bias: &[0.0; 4],
            residual: false,
            activation: None,
        };
        lower_dynamic_qdepthwise(&vnni(), &params)
    };
    let name = |l: &NodeLowering| l.calls[0].kernel.spec().name.clone();
    let plain = lowering(&w, &[0]).expect("lowers");
    assert!(name(&plain).contains("dqdw") && !name(&plain).contains("_zw"));
    assert_eq!(plain.bytes.len(), 2);
    // Weights −100..=99 less 20: still s8, no second dot product.
    let fits = lowering(&w, &[20]).expect("lowers");
    assert!(!name(&fits).contains("_zw"), "{}", name(&fits));
    let wide = lowering(&w, &[0, 0, -100, 0]).expect("lowers");
    assert!(name(&wide).ends_with("_zw"), "{}", name(&wide));
    assert_eq!(wide.bytes.len(), 3);
    w[20] = 127;
    let error = lowering(&w, &[0, 0, -128, 0])
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("channel 2"), "{error}");
    assert!(lowering(&w, &[0, 0, -127, 0]).is_ok());
    for bad in [&[128][..], &[-129], &[1, 2]] {
        assert!(lowering(&w, bad).is_err(), "{bad:?}");
    }
    let not_depthwise = DynamicConvParams {
        geometry: ConvGeometry { group: 2, ..g },
        weight: &w,
        weight_scales: &[0.5],
        weight_zero_points: &[0],
        bias: &[0.0; 4],
        residual: false,
        activation: None,
    };
    assert!(lower_dynamic_qdepthwise(&vnni(), &not_depthwise).is_err());
    let short = DynamicConvParams {
        weight: &w[1..],
        geometry: g,
        ..not_depthwise
    };
    assert!(lower_dynamic_qdepthwise(&vnni(), &short).is_err());
}

/// DynamicQuantizeLinear → depthwise DynamicQuantizedConv (3×3, 6 channels, zero points
/// per channel) through `model::lower_graph`: the dedicated kernel, no fallback, equal to
/// the interpreter; with a channel of weight 127 and zero point −128 the grouped GEMM,
/// which reports itself, also equal.
#[test]
fn the_model_lowering_picks_the_depthwise_kernel_and_falls_back_only_when_refused() {
    for refused in [false, true] {
        let mut rng = Bytes(31);
        let mut g = Graph::new("dw");
        let x = g
            .add_input("x", TensorType::new(DType::F32, [2, 6, 9, 11]))
            .expect("input");
        let q = g
            .add_node(
                "q",
                Op::DynamicQuantizeLinear,
                vec![x],
                vec!["qy".into(), "qs".into(), "qz".into()],
            )
            .expect("DynamicQuantizeLinear");
        let q = g.node(q).outputs.clone();
        let mut w: Vec<i8> = (0..6 * 9).map(|_| rng.i8().clamp(-127, 126)).collect();
        if refused {
            w[4] = 127;
        }
        let w = g
            .add_constant("w", tensor(DType::I8, &[6, 1, 3, 3], &i8_bytes(&w)))
            .expect("w");
        let bias: Vec<f32> = (0..6).map(|_| unit(&mut rng) - 0.5).collect();
        let bias = g
            .add_constant("b", Tensor::from_f32(&[6], bias))
            .expect("bias");
        let scales: Vec<f32> = (0..6).map(|_| 0.001 + unit(&mut rng) * 0.01).collect();
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(&depthwise(2, 6, [9, 11], [3, 3], [1, 1], [1, 1], [1; 4], 0)),
            w: QParams::per_channel(DType::I8, 0, scales, vec![-128, 127, 3, 0, -40, 3])
                .expect("valid"),
            residual: false,
            activation: Some(Activation::Relu),
        };
        let c = g
            .add_node("dw", op, vec![q[0], q[1], q[2], w, bias], vec!["y".into()])
            .expect("conv");
        let y = g.node(c).outputs[0];
        g.set_outputs(vec![y]);
        let values: Vec<f32> = (0..2 * 6 * 9 * 11)
            .map(|_| (unit(&mut rng) - 0.3) * 4.0)
            .collect();
        let inputs = HashMap::from([(
            "x".to_string(),
            Tensor::from_f32(&[2, 6, 9, 11], values.clone()),
        )]);
        let want = qcc_ir::eval::run(&g, &inputs).expect("the interpreter runs");
        let want: Vec<f32> = want[0].as_f32().expect("f32").iter().copied().collect();
        for target in [vnni(), no_vnni()] {
            let model = lower_graph(&g, &target, "m").expect("lowered");
            let layer = model
                .layers
                .iter()
                .find(|l| l.node == "dw")
                .expect("the conv layer");
            let kernels: Vec<String> = model
                .program
                .steps
                .iter()
                .flat_map(|step| &step.calls)
                .map(|call| call.kernel.spec().name.clone())
                .collect();
            let depthwise_kernel = kernels.iter().any(|k| k.contains("dqdw"));
            assert_eq!(depthwise_kernel, !refused, "{kernels:?}");
            assert_eq!(layer.fallback.is_some(), refused, "{layer:?}");
            let jit = crate::model::JitProgram::new(
                &target,
                &crate::target::IsaOptions::default(),
                &model.program,
            )
            .expect("compiled");
            let mut input = AlignedBuffer::new(4 * values.len());
            input.write_f32(&values);
            let mut output = AlignedBuffer::new(4 * want.len());
            output.write_f32(&vec![f32::NAN; want.len()]);
            let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
            jit.run(&[&input], &mut [&mut output], &mut workspace)
                .expect("ran");
            same_f32(&output.read_f32(), &want, &format!("refused {refused}"))
                .expect("compiled equals interpreted");
        }
    }
}

/// A 3×3 block is three chunks × `block_vectors` dot products, six with the second dot
/// product of weight zero points: `vpdpbusd` with VNNI, `pmaddwd` pairs without (never
/// `pmaddubsw`), `sdot` / `usdot` on aarch64.
#[test]
fn inner_loop_is_one_or_two_dot_products_per_chunk() {
    let case = depthwise(1, 8, [20, 48], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let g = case.geometry().expect("valid geometry");
    let w: Vec<i8> = (0..72).map(|i| (i * 13 % 256) as u8 as i8).collect();
    for (zero_points, dots) in [(vec![0], 1), (vec![-100], 2)] {
        let params = DynamicConvParams {
            geometry: g,
            weight: &w,
            weight_scales: &[0.01],
            weight_zero_points: &zero_points,
            bias: &[0.5; 8],
            residual: true,
            activation: Some(Activation::Relu),
        };
        for (name, wanted, per_dot) in [
            ("x86_64-int8", "vpdpbusd", 1),
            ("x86_64-int8-vnni", "pmaddwd", 2),
            ("aarch64-int8", "sdot", 1),
            ("aarch64-int8+i8mm", "usdot", 1),
        ] {
            let target = Target::parse(name).expect("target parses");
            let lowering = lower_dynamic_qdepthwise(&target, &params).expect("lowers");
            let code = disassemble(&target, &lowering);
            let dot = DotProduct::for_target(&target);
            // Whole words (`sdot` must not count `usdot`), with or without the VEX `v`.
            let vex = format!("v{wanted}");
            let count = code
                .split_whitespace()
                .filter(|w| *w == wanted || *w == vex)
                .count();
            let expected = 3 * block_vectors(dot) * dots * per_dot;
            assert!(
                count >= expected,
                "{name}: {count} {wanted}, fewer than {expected}"
            );
            assert!(!code.contains("pmaddubsw"), "16-bit saturating sums");
        }
    }
}

/// Best-of-20 seconds of `lowering` with inputs of `sizes` bytes (a fixed pattern; f32
/// inputs get small normal floats).
fn time_node(
    target: &Target,
    lowering: &NodeLowering,
    sizes: &[(usize, bool)],
    output: usize,
) -> f64 {
    let jit = compile_node(target, lowering, sizes.len(), 1).expect("compiles");
    let inputs: Vec<AlignedBuffer> = sizes
        .iter()
        .map(|&(bytes, floats)| {
            let mut buffer = AlignedBuffer::new(bytes);
            if floats {
                let values: Vec<f32> = (0..bytes / 4).map(|i| (i % 17) as f32 * 0.01).collect();
                buffer.write_f32(&values);
            } else {
                let data = buffer.as_bytes_mut();
                data.iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i * 37 % 251) as u8);
            }
            buffer
        })
        .collect();
    let refs: Vec<&AlignedBuffer> = inputs.iter().collect();
    let mut y = AlignedBuffer::new(output);
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = std::time::Instant::now();
        jit.run(&refs, &mut [&mut y], &mut workspace).expect("runs");
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

/// Not a timed assertion: milliseconds of MobileNetV2-like 3×3 depthwise layers (+ReLU6) as
/// this kernel (weight zero points 0, and 3 with weights spanning s8: the second dot
/// product; blocks of 4, 8 and 12 vectors, `*` the default), the grouped implicit GEMM it
/// replaces, and the fp32 depthwise kernel. Run with
/// `cargo test --release -p qcc-codegen dynamic_depthwise_speed_report -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn dynamic_depthwise_speed_report() {
    let layers = [
        (
            "32ch 112x112 s1",
            depthwise(1, 32, [112, 112], [3, 3], [1, 1], [1, 1], [1; 4], 1),
        ),
        (
            "96ch 112x112 s2",
            depthwise(1, 96, [112, 112], [3, 3], [2, 2], [1, 1], [1; 4], 2),
        ),
        (
            "144ch 56x56 s1",
            depthwise(1, 144, [56, 56], [3, 3], [1, 1], [1, 1], [1; 4], 3),
        ),
        (
            "576ch 14x14 s1",
            depthwise(1, 576, [14, 14], [3, 3], [1, 1], [1, 1], [1; 4], 4),
        ),
    ];
    let relu6 = Some(Activation::Clip { min: 0.0, max: 6.0 });
    for target in [vnni(), no_vnni()] {
        for (name, case) in &layers {
            let g = case.geometry().expect("valid geometry");
            let channels = g.in_channels;
            let mut rng = Bytes(5);
            let w: Vec<i8> = (0..channels * 9).map(|_| rng.i8()).collect();
            let bias = vec![0.25f32; channels];
            let (input, output) = (channels * g.in_h * g.in_w, channels * g.out_h * g.out_w);
            let sizes = [
                (input, false),
                (4, true),
                (1, false),
                (9 * channels, false),
                (4 * channels, true),
            ];
            let mut line = format!("{} depthwise 3x3 {name}:", target.name());
            for zero_point in [0, 3] {
                let params = DynamicConvParams {
                    geometry: g,
                    weight: &w,
                    weight_scales: &[0.01],
                    weight_zero_points: &[zero_point],
                    bias: &bias,
                    residual: false,
                    activation: relu6,
                };
                let grouped = lower_dynamic_qconv(&target, &params).expect("grouped lowers");
                let grouped = time_node(&target, &grouped, &sizes, 4 * output);
                line.push_str(&format!(
                    "\n  zw {zero_point}: grouped gemm {:.3} ms; dynamic depthwise",
                    grouped * 1e3
                ));
                let dot = DotProduct::for_target(&target);
                let gather = Gather::for_geometry(&g);
                for vectors in [4, 8, 12] {
                    let lowering =
                        lower_dynamic_qdepthwise_with(target.arch(), dot, gather, vectors, &params)
                            .expect("lowers");
                    let seconds = time_node(&target, &lowering, &sizes, 4 * output);
                    let default = if vectors == block_vectors(dot) {
                        "*"
                    } else {
                        ""
                    };
                    line.push_str(&format!(" {vectors}v{default} {:.3} ms", seconds * 1e3));
                }
            }
            let weights: Vec<f32> = w.iter().map(|&v| f32::from(v) * 0.01).collect();
            let epilogue = crate::lower::node::Epilogue {
                residual_input: None,
                activation: relu6,
            };
            let fp32 = crate::lower::depthwise::lower_depthwise(
                target.arch(),
                &g,
                &weights,
                Some(&bias),
                epilogue,
            )
            .expect("fp32 lowers");
            let seconds = time_node(&target, &fp32, &[(4 * input, true)], 4 * output);
            line.push_str(&format!("\n  fp32 depthwise {:.3} ms", seconds * 1e3));
            println!("{line}");
        }
    }
}
