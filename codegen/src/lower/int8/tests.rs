//! The int8 kernels, JIT-compiled through `model::run_node_bytes`, against a scalar reference
//! written here: the exact i32 accumulation of `(x − zx)·w` plus the bias (wrapping), then
//! `FixedPoint::requantize` and the clamp per output element. Bit for bit, on both the VNNI
//! target (`x86_64-int8`, native here) and the fallback without VNNI (`x86_64-int8-vnni`).

use proptest::prelude::*;
use qcc_ir::requant::FixedPoint;
use qcc_ir::DType;

use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::run_node_bytes;
use crate::target::Target;

/// The disassembly of the one kernel of `lowering` for `target`, compiled as models are
/// (`opt_level=none`: the hand-scheduled order).
pub(super) fn disassemble(target: &Target, lowering: &NodeLowering) -> String {
    let options = crate::target::IsaOptions {
        opt_level: crate::target::OptLevel::None,
        ..crate::target::IsaOptions::default()
    };
    let isa = target.isa_with(&options).expect("ISA builds");
    let context = crate::lower::KernelContext {
        pointer: isa.pointer_type(),
        fma: target.fma(),
    };
    let kernel = lowering.calls[0].kernel.clone();
    crate::emit::disassemble_kernel(isa.as_ref(), &context, kernel.as_ref())
        .expect("kernel compiles")
}

pub(super) fn vnni() -> Target {
    Target::parse("x86_64-int8").expect("the VNNI target parses")
}

pub(super) fn no_vnni() -> Target {
    Target::parse("x86_64-int8-vnni").expect("the fallback target parses")
}

/// Deterministic xorshift bytes with the extremes over-represented.
pub(super) struct Bytes(pub(super) u64);

impl Bytes {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn u8(&mut self) -> u8 {
        match self.next() % 8 {
            0 => 0,
            1 => 255,
            _ => (self.next() >> 24) as u8,
        }
    }
    pub(super) fn i8(&mut self) -> i8 {
        match self.next() % 8 {
            0 => -128,
            1 => 127,
            _ => (self.next() >> 24) as i8,
        }
    }
    /// Mostly within ±2^13, sometimes anywhere in i32 (the accumulator then wraps).
    pub(super) fn bias(&mut self) -> i32 {
        match self.next() % 16 {
            0 => (self.next() >> 32) as i32,
            _ => ((self.next() >> 20) as i32) >> 18,
        }
    }
}

/// The requantization, zero points and clamp of one case.
#[derive(Clone, Debug)]
pub(super) struct Quant {
    pub(super) zx: u8,
    pub(super) output: OutputQuant,
    /// Exponents `e` of the multipliers `2^-e·(1 + fraction)`, one per channel or one.
    pub(super) exponents: Vec<(f64, f64)>,
    pub(super) with_bias: bool,
}

impl Quant {
    pub(super) fn fixed_points(&self) -> Vec<FixedPoint> {
        self.exponents
            .iter()
            .map(|&(e, f)| FixedPoint::from_real(2f64.powf(-e) * (1.0 + f)).expect("in range"))
            .collect()
    }
}

pub(super) fn quant_strategy(channels: usize) -> impl Strategy<Value = Quant> {
    let zx = prop_oneof![Just(0u8), Just(255u8), any::<u8>()];
    let dtype = prop_oneof![Just(DType::U8), Just(DType::I8)];
    let per_channel = any::<bool>();
    // Mostly multipliers that leave outputs unsaturated for these sizes (2^-8..2^-16), also
    // 2^-30 (n = 61) up to ~3 (n = 29): both epilogue paths.
    let exponent = (
        prop_oneof![3 => 8.0f64..16.0, 1 => -1.5f64..30.0],
        0.0f64..1.0,
    );
    (
        zx,
        dtype,
        any::<u8>(),
        per_channel,
        prop::collection::vec(exponent, channels),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(
            move |(zx, dtype, zp_byte, per_channel, mut exponents, with_bias, clamp)| {
                let zero_point = match dtype {
                    DType::I8 => i32::from(zp_byte as i8),
                    _ => i32::from(zp_byte),
                };
                let clamp = match clamp {
                    0 => None,
                    // ReLU: the zero point upwards.
                    1 => Some((zero_point, 255)),
                    // ReLU6-like band.
                    2 => Some((zero_point, zero_point.saturating_add(40))),
                    _ => Some((-300, 300)),
                };
                if !per_channel {
                    exponents.truncate(1);
                }
                Quant {
                    zx,
                    output: OutputQuant {
                        dtype,
                        zero_point,
                        clamp,
                    },
                    exponents,
                    with_bias,
                }
            },
        )
}

/// The policy for one accumulator: requantize, then the fused clamp.
pub(super) fn requantize(fixed: FixedPoint, acc: i32, output: &OutputQuant) -> u8 {
    let q = fixed.requantize(acc, output.zero_point, output.dtype);
    let q = match output.clamp {
        Some((lo, hi)) => q.max(lo).min(hi),
        None => q,
    };
    q as u8
}

pub(super) fn channel_fixed(fixed: &[FixedPoint], c: usize) -> FixedPoint {
    fixed[if fixed.len() == 1 { 0 } else { c }]
}

/// Direct NCHW convolution of `(x − zx)·w`, requantized per output channel.
pub(super) fn reference_conv(
    g: &ConvGeometry,
    x: &[u8],
    w: &[i8],
    bias: Option<&[i32]>,
    fixed: &[FixedPoint],
    quant: &Quant,
) -> Vec<u8> {
    let (cin_g, cout_g) = (g.in_channels / g.group, g.out_channels / g.group);
    let zx = i32::from(quant.zx);
    let mut y = Vec::with_capacity(g.batch * g.out_channels * g.out_h * g.out_w);
    for n in 0..g.batch {
        for oc in 0..g.out_channels {
            let group = oc / cout_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut acc = bias.map_or(0, |b| b[oc]);
                    for ci in 0..cin_g {
                        let c = group * cin_g + ci;
                        for kh in 0..g.kernel_h {
                            for kw in 0..g.kernel_w {
                                let ih = (oh * g.stride_h + kh * g.dilation_h) as isize
                                    - g.pad_top as isize;
                                let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                    - g.pad_left as isize;
                                let inside = (0..g.in_h as isize).contains(&ih)
                                    && (0..g.in_w as isize).contains(&iw);
                                let xv = if inside {
                                    let index = ((n * g.in_channels + c) * g.in_h + ih as usize)
                                        * g.in_w
                                        + iw as usize;
                                    i32::from(x[index])
                                } else {
                                    zx
                                };
                                let wv = w[((oc * cin_g + ci) * g.kernel_h + kh) * g.kernel_w + kw];
                                acc = acc.wrapping_add((xv - zx) * i32::from(wv));
                            }
                        }
                    }
                    y.push(requantize(channel_fixed(fixed, oc), acc, &quant.output));
                }
            }
        }
    }
    y
}

/// One convolution to check.
#[derive(Clone, Debug)]
pub(super) struct ConvCase {
    pub(super) batch: usize,
    pub(super) group: usize,
    pub(super) cin_g: usize,
    pub(super) cout_g: usize,
    pub(super) in_hw: [usize; 2],
    pub(super) kernel: [usize; 2],
    pub(super) strides: [usize; 2],
    pub(super) dilations: [usize; 2],
    /// top, left, bottom, right.
    pub(super) pads: [usize; 4],
    pub(super) seed: u64,
}

impl ConvCase {
    /// The geometry, or `None` when the window does not fit the padded input.
    pub(super) fn geometry(&self) -> Option<ConvGeometry> {
        let out = |i: usize, p: usize, k: usize, d: usize, s: usize| {
            (i + p).checked_sub((k - 1) * d + 1).map(|q| q / s + 1)
        };
        let [top, left, bottom, right] = self.pads;
        Some(ConvGeometry {
            batch: self.batch,
            in_channels: self.cin_g * self.group,
            in_h: self.in_hw[0],
            in_w: self.in_hw[1],
            out_channels: self.cout_g * self.group,
            out_h: out(
                self.in_hw[0],
                top + bottom,
                self.kernel[0],
                self.dilations[0],
                self.strides[0],
            )?,
            out_w: out(
                self.in_hw[1],
                left + right,
                self.kernel[1],
                self.dilations[1],
                self.strides[1],
            )?,
            kernel_h: self.kernel[0],
            kernel_w: self.kernel[1],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            pad_top: top,
            pad_left: left,
            pad_bottom: bottom,
            pad_right: right,
            group: self.group,
        })
    }
}

/// Lowers and runs a convolution on `target`, returns (kernel output, reference).
pub(super) fn run_conv(
    target: &Target,
    g: &ConvGeometry,
    x: &[u8],
    w: &[i8],
    bias: Option<&[i32]>,
    quant: &Quant,
) -> (Vec<u8>, Vec<u8>) {
    let fixed = quant.fixed_points();
    let params = QConvParams {
        geometry: *g,
        weight: w,
        bias,
        requant: &fixed,
        input_zero_point: i32::from(quant.zx),
        weight_zero_points: None,
        residual: None,
        output: quant.output,
    };
    let lowering = lower_qconv(target, &params).expect("int8 Conv lowers");
    let out_len = g.batch * g.out_channels * g.out_h * g.out_w;
    let got = run_node_bytes(target, &lowering, &[x], &[out_len]).expect("node runs");
    let want = reference_conv(g, x, w, bias, &fixed, quant);
    (got.into_iter().next().unwrap_or_default(), want)
}

fn check_conv(target: &Target, case: &ConvCase, quant: &Quant) -> Result<(), TestCaseError> {
    let Some(g) = case.geometry() else {
        return Ok(());
    };
    let mut bytes = Bytes(case.seed | 1);
    let x: Vec<u8> = (0..g.batch * g.in_channels * g.in_h * g.in_w)
        .map(|_| bytes.u8())
        .collect();
    let w: Vec<i8> = (0..g.out_channels * g.reduction())
        .map(|_| bytes.i8())
        .collect();
    let bias: Vec<i32> = (0..g.out_channels).map(|_| bytes.bias()).collect();
    let bias = quant.with_bias.then_some(&bias[..]);
    let (got, want) = run_conv(target, &g, &x, &w, bias, quant);
    same_bytes(&got, &want, &format!("{g:?}\n{quant:?}"))
}

/// Equality with the first difference and the count of differences in the message.
pub(super) fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    let wrong: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if let Some(&first) = wrong.first() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} of {} outputs differ; first at {first}: kernel {}, reference {}",
            wrong.len(),
            got.len(),
            got[first],
            want[first]
        )));
    }
    Ok(())
}

pub(super) fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=3, prop_oneof![Just(1usize), Just(2), Just(3)]),
        (1usize..=9, 1usize..=9),
        ([1usize..=9, 1usize..=14], [1usize..=3, 1usize..=3]),
        ([1usize..=3, 1usize..=3], [1usize..=2, 1usize..=2]),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        any::<u64>(),
    )
        .prop_map(
            |(
                (batch, group),
                (cin_g, cout_g),
                (in_hw, kernel),
                (strides, dilations),
                pads,
                seed,
            )| {
                ConvCase {
                    batch,
                    group,
                    cin_g,
                    cout_g,
                    in_hw,
                    kernel,
                    strides,
                    dilations,
                    pads,
                    seed,
                }
            },
        )
}

fn conv_with_quant() -> impl Strategy<Value = (ConvCase, Quant)> {
    conv_case().prop_flat_map(|case| {
        let channels = case.cout_g * case.group;
        (Just(case), quant_strategy(channels))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn qconv_vnni_equals_reference((case, quant) in conv_with_quant()) {
        check_conv(&vnni(), &case, &quant)?;
    }

    #[test]
    fn qconv_without_vnni_equals_reference((case, quant) in conv_with_quant()) {
        check_conv(&no_vnni(), &case, &quant)?;
    }

    /// aarch64's `sdot` kernels (flipped activations, `zx − 128` compensation) on the JIT.
    #[test]
    fn qconv_sdot_equals_reference((case, quant) in conv_with_quant()) {
        with_dot_product(DotProduct::Sdot, || check_conv(&vnni(), &case, &quant))?;
    }
}

#[test]
fn qconv_depthwise_and_pointwise_equal_reference() {
    let cases = [
        // Depthwise 3x3 with padding (the grouped fallback).
        ConvCase {
            batch: 2,
            group: 8,
            cin_g: 1,
            cout_g: 1,
            in_hw: [7, 9],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [1, 1, 1, 1],
            seed: 3,
        },
        // Pointwise, long rows: the vector im2col path, channels a multiple of 4 and not.
        ConvCase {
            batch: 2,
            group: 1,
            cin_g: 13,
            cout_g: 9,
            in_hw: [6, 11],
            kernel: [1, 1],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [0; 4],
            seed: 5,
        },
        // 3x3, 16 channels, rows wider than a panel: vector path with padding at the edges.
        ConvCase {
            batch: 1,
            group: 1,
            cin_g: 16,
            cout_g: 7,
            in_hw: [5, 30],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [1, 1, 1, 1],
            seed: 9,
        },
    ];
    let quant = Quant {
        zx: 128,
        output: OutputQuant {
            dtype: DType::U8,
            zero_point: 3,
            clamp: Some((3, 255)),
        },
        exponents: vec![(9.0, 0.3)],
        with_bias: true,
    };
    for target in [vnni(), no_vnni()] {
        for case in &cases {
            check_conv(&target, case, &quant).expect("kernel equals the reference");
            with_dot_product(DotProduct::Sdot, || check_conv(&target, case, &quant))
                .expect("the sdot kernel equals the reference");
        }
    }
}

/// Multipliers of 1/2 and more (`n < 32`: the pre-clamp and left-shift path) and tiny ones
/// (`n` up to 61), on accumulators across the whole i32 range: a pointwise convolution of
/// one input channel whose per-channel biases are the interesting accumulators.
#[test]
fn extreme_multipliers_and_accumulators_equal_reference() {
    let mut interesting: Vec<i32> = vec![0, 1, -1, i32::MAX, i32::MIN, i32::MAX - 200];
    for k in [4, 9, 10, 11, 12, 15, 20, 30] {
        for delta in [-1i64, 0, 1] {
            for sign in [-1i64, 1] {
                interesting
                    .push((sign * ((1i64 << k) + delta)).clamp(-(1 << 31), (1 << 31) - 1) as i32);
            }
        }
    }
    let case = ConvCase {
        batch: 1,
        group: 1,
        cin_g: 1,
        cout_g: interesting.len(),
        in_hw: [3, 5],
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [0; 4],
        seed: 1,
    };
    let g = case.geometry().expect("valid geometry");
    let x: Vec<u8> = vec![0, 1, 2, 127, 128, 129, 254, 255, 3, 200, 100, 50, 7, 8, 9];
    let w = vec![1i8; g.out_channels];
    for target in [vnni(), no_vnni()] {
        for real in [
            0.5,
            0.75,
            0.999_999,
            1.0,
            3.7,
            100.0,
            1023.0,
            2e6,
            1e-9,
            2f64.powi(-30),
        ] {
            for dtype in [DType::U8, DType::I8] {
                let zero_point = if dtype == DType::U8 { 255 } else { -128 };
                let quant = Quant {
                    zx: 128,
                    output: OutputQuant {
                        dtype,
                        zero_point,
                        clamp: None,
                    },
                    exponents: vec![(-real.log2(), 0.0)],
                    with_bias: true,
                };
                let (got, want) = run_conv(&target, &g, &x, &w, Some(&interesting), &quant);
                same_bytes(
                    &got,
                    &want,
                    &format!("multiplier {real} on {}", target.name()),
                )
                .expect("kernel equals the reference");
            }
        }
    }
}
