//! ResNet-18 and ResNet-50 as torchvision defines them (v1.5: the bottleneck's stride sits on
//! its 3x3 convolution), with torchvision's module names.

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, ValueId};

/// Gamma scale of the last batch norm in each residual branch: the branch then adds a
/// fraction of a unit of variance to the stream, which stays bounded over 16 blocks.
const RESIDUAL_GAMMA: f32 = 0.3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

pub fn resnet18(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    resnet("resnet18", Block::Basic, [2, 2, 2, 2], seed, batch, init)
}

pub fn resnet50(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    resnet(
        "resnet50",
        Block::Bottleneck,
        [3, 4, 6, 3],
        seed,
        batch,
        init,
    )
}

fn resnet(
    name: &str,
    block: Block,
    layers: [usize; 4],
    seed: u64,
    batch: usize,
    init: Init,
) -> Result<Graph, ZooError> {
    let mut b = Builder::new(name, seed, init);
    let x = b.image_input("input", batch, 3, 224)?;
    let x = b.conv_bn_act(
        ["conv1", "bn1", "relu"],
        x,
        ConvSpec::new(64, 7, 2),
        Act::Relu,
        1.0,
    )?;
    let mut x = b.max_pool("maxpool", x, 3, 2, 1)?;
    for (i, (&blocks, width)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        for j in 0..blocks {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{j}", i + 1);
            x = match block {
                Block::Basic => basic_block(&mut b, &prefix, x, width, stride)?,
                Block::Bottleneck => bottleneck(&mut b, &prefix, x, width, stride)?,
            };
        }
    }
    let x = b.global_avg_pool("avgpool", x)?;
    let x = b.flatten("flatten", x)?;
    let logits = b.linear("fc", x, 1000, 1.0, "logits")?;
    b.finish(vec![logits])
}

/// The identity, or torchvision's `downsample` (1x1 conv with stride, then batch norm) when the
/// block changes the shape.
fn shortcut(
    b: &mut Builder,
    prefix: &str,
    x: ValueId,
    out: usize,
    stride: usize,
) -> Result<ValueId, ZooError> {
    if stride == 1 && b.channels(x) == out {
        return Ok(x);
    }
    let names = [
        format!("{prefix}.downsample.0"),
        format!("{prefix}.downsample.1"),
    ];
    let y = b.conv(&names[0], x, ConvSpec::new(out, 1, stride), 1.0)?;
    // The projection carries the stream itself from here on: unit scale.
    b.batch_norm(&names[1], y, 1.0)
}

/// conv3x3-bn-relu, conv3x3-bn, add the shortcut, relu.
fn basic_block(
    b: &mut Builder,
    p: &str,
    x: ValueId,
    width: usize,
    stride: usize,
) -> Result<ValueId, ZooError> {
    let n = |s: &str| format!("{p}.{s}");
    let y = b.conv_bn_act(
        [&n("conv1"), &n("bn1"), &n("relu1")],
        x,
        ConvSpec::new(width, 3, stride),
        Act::Relu,
        1.0,
    )?;
    let y = b.conv(&n("conv2"), y, ConvSpec::new(width, 3, 1), 1.0)?;
    let y = b.batch_norm(&n("bn2"), y, RESIDUAL_GAMMA)?;
    let s = shortcut(b, p, x, width, stride)?;
    let y = b.add(&n("add"), y, s)?;
    b.act(&n("relu2"), y, Act::Relu)
}

/// conv1x1-bn-relu, conv3x3(stride)-bn-relu, conv1x1(4x width)-bn, add the shortcut, relu.
fn bottleneck(
    b: &mut Builder,
    p: &str,
    x: ValueId,
    width: usize,
    stride: usize,
) -> Result<ValueId, ZooError> {
    let n = |s: &str| format!("{p}.{s}");
    let out = width * Block::Bottleneck.expansion();
    let y = b.conv_bn_act(
        [&n("conv1"), &n("bn1"), &n("relu1")],
        x,
        ConvSpec::new(width, 1, 1),
        Act::Relu,
        1.0,
    )?;
    let y = b.conv_bn_act(
        [&n("conv2"), &n("bn2"), &n("relu2")],
        y,
        ConvSpec::new(width, 3, stride),
        Act::Relu,
        1.0,
    )?;
    let y = b.conv(&n("conv3"), y, ConvSpec::new(out, 1, 1), 1.0)?;
    let y = b.batch_norm(&n("bn3"), y, RESIDUAL_GAMMA)?;
    let s = shortcut(b, p, x, out, stride)?;
    let y = b.add(&n("add"), y, s)?;
    b.act(&n("relu3"), y, Act::Relu)
}
