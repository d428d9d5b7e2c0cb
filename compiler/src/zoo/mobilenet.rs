//! MobileNetV2 as torchvision defines it (width 1.0), with torchvision's module names: inverted
//! residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1 projection) and ReLU6 as
//! `Clip(0, 6)`.

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, ValueId};

/// Gamma scale of the projection's batch norm in blocks with a residual connection (see
/// `resnet::RESIDUAL_GAMMA`).
const RESIDUAL_GAMMA: f32 = 0.3;

/// (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

pub fn mobilenet_v2(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    let mut b = Builder::new("mobilenetv2", seed, init);
    let x = b.image_input("input", batch, 3, 224)?;
    let mut x = b.conv_bn_act(
        ["features.0.0", "features.0.1", "features.0.2"],
        x,
        ConvSpec::new(32, 3, 2),
        Act::Relu6,
        1.0,
    )?;
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, &format!("features.{index}"), x, t, c, stride)?;
            index += 1;
        }
    }
    let p = format!("features.{index}");
    let names = [format!("{p}.0"), format!("{p}.1"), format!("{p}.2")];
    let x = b.conv_bn_act(
        [&names[0], &names[1], &names[2]],
        x,
        ConvSpec::new(1280, 1, 1),
        Act::Relu6,
        1.0,
    )?;
    let x = b.global_avg_pool("avgpool", x)?;
    let x = b.flatten("flatten", x)?;
    let logits = b.linear("classifier.1", x, 1000, 1.0, "logits")?;
    b.finish(vec![logits])
}

/// torchvision's `InvertedResidual`: `conv.0` expands (skipped when `t == 1`), then the
/// depthwise conv, the projection conv and its batch norm; the input is added back when the
/// block keeps the shape.
fn inverted_residual(
    b: &mut Builder,
    p: &str,
    x: ValueId,
    t: usize,
    out: usize,
    stride: usize,
) -> Result<ValueId, ZooError> {
    let cin = b.channels(x);
    let hidden = cin * t;
    let residual = stride == 1 && cin == out;
    let mut y = x;
    let mut k = 0;
    let mut next = |b: &mut Builder, y: ValueId, spec: ConvSpec| -> Result<ValueId, ZooError> {
        let names = [
            format!("{p}.conv.{k}.0"),
            format!("{p}.conv.{k}.1"),
            format!("{p}.conv.{k}.2"),
        ];
        k += 1;
        b.conv_bn_act([&names[0], &names[1], &names[2]], y, spec, Act::Relu6, 1.0)
    };
    if t != 1 {
        y = next(b, y, ConvSpec::new(hidden, 1, 1))?;
    }
    y = next(b, y, ConvSpec::new(hidden, 3, stride).group(hidden))?;
    let (conv, bn) = if t != 1 { (2, 3) } else { (1, 2) };
    let y = b.conv(
        &format!("{p}.conv.{conv}"),
        y,
        ConvSpec::new(out, 1, 1),
        1.0,
    )?;
    let gamma = if residual { RESIDUAL_GAMMA } else { 1.0 };
    let y = b.batch_norm(&format!("{p}.conv.{bn}"), y, gamma)?;
    if residual {
        b.add(&format!("{p}.add"), x, y)
    } else {
        Ok(y)
    }
}
