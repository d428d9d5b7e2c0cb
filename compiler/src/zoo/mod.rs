//! Standard CNN architectures with seeded random weights, for tests and benchmarks that need
//! real model shapes without downloading weights.
//!
//! Conventions shared by every model:
//! * one input `input`, f32 `[batch, 3, H, W]` (224 for the ImageNet models, 32 for
//!   `tiny-cnn`);
//! * the graph ends with `Flatten` and a `Gemm` whose output `logits` is the graph output: raw
//!   logits, not probabilities, because a softmax squashes the differences that quantization
//!   comparisons want to see (`tiny-cnn` also outputs `probs`, to exercise Softmax);
//! * batch norms are separate nodes after each convolution, as frameworks export them before
//!   folding, with statistics chosen so that activations stay in range (see [`builder`]).

pub mod builder;
mod densenet;
mod efficientnet;
mod mobilenet;
mod resnet;
mod tiny;
mod vgg;

pub use builder::{Act, Builder, ConvSpec, Init};
use qcc_ir::{Graph, Op};

/// Every model the zoo builds, with a one-line description.
pub const MODELS: &[(&str, &str)] = &[
    (
        "mobilenetv2",
        "MobileNetV2 (torchvision), 224x224, inverted residuals, ReLU6, 3.5M params",
    ),
    (
        "resnet18",
        "ResNet-18 (torchvision), 224x224, basic blocks, 11.7M params",
    ),
    (
        "resnet50",
        "ResNet-50 (torchvision v1.5), 224x224, bottleneck blocks, 25.6M params",
    ),
    (
        "densenet121",
        "DenseNet-121 (torchvision), 224x224, growth 32, 6/12/24/16, 8.0M params",
    ),
    (
        "efficientnet-lite0",
        "EfficientNet-Lite0, 224x224, MBConv without SE, ReLU6, 4.65M params",
    ),
    (
        "vgg19",
        "VGG-19 (torchvision, no BN), 224x224, 3 FC layers with Dropout, 143.7M params",
    ),
    (
        "tiny-cnn",
        "test CNN, 32x32: conv+BN+ReLU, residual, depthwise, pools, Gemm, Softmax",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZooOptions {
    /// Seeds every weight; the same seed gives bit-identical models.
    pub seed: u64,
    /// The fixed batch size of the input (ONNX export can still mark it dynamic).
    pub batch: usize,
}

impl Default for ZooOptions {
    fn default() -> ZooOptions {
        ZooOptions { seed: 0, batch: 1 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("unknown model '{0}' (`qcc zoo --list` lists the models)")]
    UnknownModel(String),
    #[error("batch must be at least 1")]
    ZeroBatch,
    #[error("building the graph: {0}")]
    Graph(#[from] qcc_ir::GraphError),
    #[error("architecture: {0}")]
    Architecture(String),
    #[error("calibrating batch norms with the interpreter: {0}")]
    Calibration(String),
}

/// Builds a zoo model, with batch-norm statistics calibrated by the reference interpreter
/// (see [`builder`]); an interpreter failure is an error, not a silent change of weights.
pub fn build(name: &str, opts: &ZooOptions) -> Result<Graph, ZooError> {
    build_with(name, opts, Init::Calibrated)
}

/// Builds a zoo model with an explicit initialisation.
pub fn build_with(name: &str, opts: &ZooOptions, init: Init) -> Result<Graph, ZooError> {
    if opts.batch == 0 {
        return Err(ZooError::ZeroBatch);
    }
    let (seed, batch) = (opts.seed, opts.batch);
    match name {
        "mobilenetv2" => mobilenet::mobilenet_v2(seed, batch, init),
        "resnet18" => resnet::resnet18(seed, batch, init),
        "resnet50" => resnet::resnet50(seed, batch, init),
        "densenet121" => densenet::densenet121(seed, batch, init),
        "efficientnet-lite0" => efficientnet::efficientnet_lite0(seed, batch, init),
        // VGG has no batch norm: nothing to calibrate (and 20 GFLOPs are slow to interpret).
        "vgg19" => vgg::vgg19(seed, batch),
        "tiny-cnn" => tiny::tiny_cnn(seed, batch, init),
        _ => Err(ZooError::UnknownModel(name.to_string())),
    }
}

/// Learnable parameters as PyTorch counts them: convolution and Gemm weights and biases, and
/// batch-norm scales and shifts (running statistics are buffers, not parameters).
pub fn parameter_count(g: &Graph) -> usize {
    let mut n = 0;
    for id in g.petgraph().node_indices() {
        let node = g.node(id);
        let slots: &[usize] = match node.op {
            Op::Conv(_) | Op::Gemm(_) | Op::BatchNorm { .. } => &[1, 2],
            _ => &[],
        };
        for &s in slots {
            if let Some(t) = node.inputs.get(s).and_then(|&v| g.constant(v)) {
                n += t.numel();
            }
        }
    }
    n
}

/// How many nodes of each op (by ONNX name) the graph holds, sorted by name.
pub fn op_counts(g: &Graph) -> Vec<(&'static str, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for id in g.petgraph().node_indices() {
        *counts.entry(g.node(id).op.name()).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests;
