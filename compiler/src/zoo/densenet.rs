//! DenseNet-121 as torchvision defines it (growth rate 32, bottleneck width 4 x 32, blocks of
//! 6/12/24/16 layers, transitions halving the channels and average-pooling), with torchvision's
//! module names. Layers are pre-activation: batch norm, ReLU, then convolution.
//!
//! torchvision concatenates all earlier feature maps in front of every layer; here each layer
//! appends its output to a running concatenation, which gives every layer the same input.

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, ValueId};

const GROWTH: usize = 32;
const BOTTLENECK: usize = 4;
const BLOCKS: [usize; 4] = [6, 12, 24, 16];

pub fn densenet121(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    let mut b = Builder::new("densenet121", seed, init);
    let x = b.image_input("input", batch, 3, 224)?;
    let names = ["features.conv0", "features.norm0", "features.relu0"];
    let x = b.conv_bn_act(names, x, ConvSpec::new(64, 7, 2), Act::Relu, 1.0)?;
    let mut x = b.max_pool("features.pool0", x, 3, 2, 1)?;
    for (i, &layers) in BLOCKS.iter().enumerate() {
        let block = format!("features.denseblock{}", i + 1);
        for j in 0..layers {
            x = dense_layer(&mut b, &format!("{block}.denselayer{}", j + 1), x)?;
        }
        if i + 1 < BLOCKS.len() {
            x = transition(&mut b, &format!("features.transition{}", i + 1), x)?;
        }
    }
    let x = b.batch_norm("features.norm5", x, 1.0)?;
    let x = b.act("relu", x, Act::Relu)?;
    let x = b.global_avg_pool("avgpool", x)?;
    let x = b.flatten("flatten", x)?;
    let logits = b.linear("classifier", x, 1000, 1.0, "logits")?;
    b.finish(vec![logits])
}

/// norm1-relu1-conv1 (1x1 to 128), norm2-relu2-conv2 (3x3 to 32), appended to the input.
fn dense_layer(b: &mut Builder, p: &str, x: ValueId) -> Result<ValueId, ZooError> {
    let n = |s: &str| format!("{p}.{s}");
    let y = b.batch_norm(&n("norm1"), x, 1.0)?;
    let y = b.act(&n("relu1"), y, Act::Relu)?;
    let y = b.conv(
        &n("conv1"),
        y,
        ConvSpec::new(BOTTLENECK * GROWTH, 1, 1),
        2.0,
    )?;
    let y = b.batch_norm(&n("norm2"), y, 1.0)?;
    let y = b.act(&n("relu2"), y, Act::Relu)?;
    let y = b.conv(&n("conv2"), y, ConvSpec::new(GROWTH, 3, 1), 2.0)?;
    b.concat(&n("concat"), vec![x, y])
}

/// norm-relu-conv (1x1, half the channels), then 2x2 average pooling with stride 2.
fn transition(b: &mut Builder, p: &str, x: ValueId) -> Result<ValueId, ZooError> {
    let n = |s: &str| format!("{p}.{s}");
    let out = b.channels(x) / 2;
    let y = b.batch_norm(&n("norm"), x, 1.0)?;
    let y = b.act(&n("relu"), y, Act::Relu)?;
    let y = b.conv(&n("conv"), y, ConvSpec::new(out, 1, 1), 2.0)?;
    b.avg_pool(&n("pool"), y, 2, 2)
}
