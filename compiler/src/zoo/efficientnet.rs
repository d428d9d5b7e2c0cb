//! EfficientNet-Lite0: EfficientNet-B0's MBConv stages without squeeze-and-excitation and with
//! ReLU6 instead of Swish, as the TF-Lite "Lite" variants define them (width and depth 1.0,
//! stem 32 and head 1280 channels). Module names follow timm's `efficientnet_lite0`.
//! Padding is symmetric (`kernel / 2`), as in the PyTorch ports.

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, ValueId};

/// Gamma scale of the projection's batch norm in blocks with a skip connection.
const RESIDUAL_GAMMA: f32 = 0.3;

/// (expansion, kernel, first stride, output channels, repeats) of EfficientNet-B0's stages.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

pub fn efficientnet_lite0(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    let mut b = Builder::new("efficientnet-lite0", seed, init);
    let x = b.image_input("input", batch, 3, 224)?;
    let mut x = b.conv_bn_act(
        ["conv_stem", "bn1", "act1"],
        x,
        ConvSpec::new(32, 3, 2),
        Act::Relu6,
        1.0,
    )?;
    for (stage, (t, k, s, out, n)) in STAGES.into_iter().enumerate() {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = mbconv(&mut b, &format!("blocks.{stage}.{i}"), x, t, k, stride, out)?;
        }
    }
    let x = b.conv_bn_act(
        ["conv_head", "bn2", "act2"],
        x,
        ConvSpec::new(1280, 1, 1),
        Act::Relu6,
        1.0,
    )?;
    let x = b.global_avg_pool("global_pool", x)?;
    let x = b.flatten("flatten", x)?;
    let logits = b.linear("classifier", x, 1000, 1.0, "logits")?;
    b.finish(vec![logits])
}

/// Expansion 1x1 (absent when `t == 1`), depthwise kxk, linear projection 1x1, skip when the
/// shape is kept.
fn mbconv(
    b: &mut Builder,
    p: &str,
    x: ValueId,
    t: usize,
    k: usize,
    stride: usize,
    out: usize,
) -> Result<ValueId, ZooError> {
    let n = |s: &str| format!("{p}.{s}");
    let cin = b.channels(x);
    let hidden = cin * t;
    let skip = stride == 1 && cin == out;
    let gamma = if skip { RESIDUAL_GAMMA } else { 1.0 };
    let y = if t == 1 {
        // timm's DepthwiseSeparableConv: conv_dw/bn1, conv_pw/bn2.
        let y = b.conv_bn_act(
            [&n("conv_dw"), &n("bn1"), &n("act1")],
            x,
            ConvSpec::new(cin, k, stride).group(cin),
            Act::Relu6,
            1.0,
        )?;
        b.conv_bn_act(
            [&n("conv_pw"), &n("bn2"), ""],
            y,
            ConvSpec::new(out, 1, 1),
            Act::None,
            gamma,
        )?
    } else {
        let y = b.conv_bn_act(
            [&n("conv_pw"), &n("bn1"), &n("act1")],
            x,
            ConvSpec::new(hidden, 1, 1),
            Act::Relu6,
            1.0,
        )?;
        let dw = ConvSpec::new(hidden, k, stride).group(hidden);
        let y = b.conv_bn_act(
            [&n("conv_dw"), &n("bn2"), &n("act2")],
            y,
            dw,
            Act::Relu6,
            1.0,
        )?;
        b.conv_bn_act(
            [&n("conv_pwl"), &n("bn3"), ""],
            y,
            ConvSpec::new(out, 1, 1),
            Act::None,
            gamma,
        )?
    };
    if skip {
        b.add(&n("add"), y, x)
    } else {
        Ok(y)
    }
}
