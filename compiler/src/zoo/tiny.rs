//! `tiny-cnn`: a 32x32 network that runs in milliseconds and holds one of each pattern the
//! compiler fuses or lowers specially: conv+BN+ReLU, a residual add, a depthwise conv with
//! ReLU6, a pointwise conv, a conv with bias and no batch norm, max, average and global
//! average pooling, a concat, Flatten+Gemm and Softmax.
//!
//! Outputs: `logits` (the Gemm) and `probs` (Softmax of the logits along the classes).

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, Op};

pub const CLASSES: usize = 10;

pub fn tiny_cnn(seed: u64, batch: usize, init: Init) -> Result<Graph, ZooError> {
    let mut b = Builder::new("tiny-cnn", seed, init);
    let x = b.image_input("input", batch, 3, 32)?;
    // 16x32x32
    let stem = b.conv_bn_act(
        ["stem.conv", "stem.bn", "stem.relu"],
        x,
        ConvSpec::new(16, 3, 1),
        Act::Relu,
        1.0,
    )?;
    let y = b.conv_bn_act(
        ["block.conv1", "block.bn1", "block.relu1"],
        stem,
        ConvSpec::new(16, 3, 1),
        Act::Relu,
        1.0,
    )?;
    let y = b.conv("block.conv2", y, ConvSpec::new(16, 3, 1), 1.0)?;
    let y = b.batch_norm("block.bn2", y, 0.5)?;
    let y = b.add("block.add", y, stem)?;
    let y = b.act("block.relu2", y, Act::Relu)?;
    // 16x16x16, then 32x16x16
    let dw = ConvSpec::new(16, 3, 2).group(16);
    let y = b.conv_bn_act(["dw.conv", "dw.bn", "dw.relu6"], y, dw, Act::Relu6, 1.0)?;
    let y = b.conv_bn_act(
        ["pw.conv", "pw.bn", "pw.relu"],
        y,
        ConvSpec::new(32, 1, 1),
        Act::Relu,
        1.0,
    )?;
    // 32x8x8
    let pooled = b.max_pool("maxpool", y, 2, 2, 0)?;
    let side = b.conv("side.conv", pooled, ConvSpec::new(32, 1, 1).bias(), 2.0)?;
    let side = b.act("side.relu", side, Act::Relu)?;
    // 64x8x8, then 64x4x4
    let y = b.concat("concat", vec![pooled, side])?;
    let y = b.avg_pool("avgpool", y, 2, 2)?;
    let y = b.global_avg_pool("gap", y)?;
    let y = b.flatten("flatten", y)?;
    let logits = b.linear("fc", y, CLASSES, 1.0, "logits")?;
    let probs = b.op_named(
        "softmax",
        Op::Softmax {
            axis: 1,
            coerce_2d: false,
        },
        vec![logits],
        "probs",
    )?;
    b.finish(vec![logits, probs])
}
