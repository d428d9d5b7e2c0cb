//! VGG-19 as torchvision's `vgg19` defines it: configuration "E" (16 convolutions with bias and
//! ReLU, five max pools), no batch norm, and the classifier Linear-ReLU-Dropout twice then
//! Linear. Dropout nodes are kept (inference identities, as in an export that keeps them).
//! torchvision's adaptive average pool to 7x7 is the identity at 224x224 and is left out.
//!
//! Without batch norms nothing rescales activations, so the initialisation alone must keep
//! them in range: He-normal weights (gain 2) preserve the second moment through conv+ReLU.

use super::builder::{Act, Builder, ConvSpec, Init};
use super::ZooError;
use qcc_ir::{Graph, Op};

/// Output channels of each convolution; 0 is a 2x2 max pool.
const CONFIG_E: [usize; 21] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

pub fn vgg19(seed: u64, batch: usize) -> Result<Graph, ZooError> {
    let mut b = Builder::new("vgg19", seed, Init::ClosedForm);
    let mut x = b.image_input("input", batch, 3, 224)?;
    for (i, &c) in CONFIG_E.iter().enumerate() {
        let name = format!("features.{}", module_index(i));
        x = if c == 0 {
            b.max_pool(&name, x, 2, 2, 0)?
        } else {
            let y = b.conv(&name, x, ConvSpec::new(c, 3, 1).bias(), 2.0)?;
            b.act(&format!("features.{}", module_index(i) + 1), y, Act::Relu)?
        };
    }
    let x = b.flatten("flatten", x)?;
    let x = b.linear("classifier.0", x, 4096, 2.0, "classifier.0")?;
    let x = b.act("classifier.1", x, Act::Relu)?;
    let x = b.op("classifier.2", Op::Dropout { mask_output: false }, vec![x])?;
    let x = b.linear("classifier.3", x, 4096, 2.0, "classifier.3")?;
    let x = b.act("classifier.4", x, Act::Relu)?;
    let x = b.op("classifier.5", Op::Dropout { mask_output: false }, vec![x])?;
    let logits = b.linear("classifier.6", x, 1000, 1.0, "logits")?;
    b.finish(vec![logits])
}

/// torchvision's index in `features`: a convolution and its ReLU take two slots, a pool one.
fn module_index(config_position: usize) -> usize {
    CONFIG_E[..config_position]
        .iter()
        .map(|&c| if c == 0 { 1 } else { 2 })
        .sum()
}
