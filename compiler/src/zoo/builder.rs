//! A small graph builder for the zoo: convolutions, batch norms, activations, pools and fully
//! connected layers with seeded weights, named the way PyTorch names modules
//! (`layer1.0.conv1`, weights `layer1.0.conv1.weight`), so that architecture files read like
//! their torchvision counterparts.
//!
//! # Initialisation
//!
//! Random weights must keep activations in range through 50+ layers, or the outputs say
//! nothing in later quantization tests. Two ingredients:
//!
//! * Convolution and linear weights are He-normal: `std = sqrt(gain / fan_in)`, with gain 2
//!   when a ReLU follows (it halves the second moment, the gain doubles it back) and 1 for
//!   linear layers (projections, classifiers). Biases are small normals.
//! * Batch norms are in inference mode, so their running statistics decide the scale. With
//!   [`Init::Calibrated`] the builder runs the reference interpreter on a seeded random input
//!   *while* it builds (every node is evaluated as soon as it is added), and sets each batch
//!   norm's running mean and variance to the per-channel statistics its input actually has:
//!   every batch norm then standardises its input, as in data-dependent init (LSUV). Because
//!   upstream batch norms are already set when a later one is measured, one pass suffices.
//!   With [`Init::ClosedForm`] the running mean is near 0 and the variance near the second
//!   moment He-init predicts, which keeps scales bounded but does not centre channels.
//!
//! Gamma is drawn around 1 and beta around 0. Residual networks pass a small `gamma_scale` for
//! the last batch norm of each block so that the residual stream grows slowly with depth.

use crate::rng::SeededRng;
use qcc_ir::eval::eval_op;
use qcc_ir::{
    Activation, BinaryOp, ConvAttrs, DType, GemmAttrs, Graph, Op, Padding, PoolAttrs, Tensor,
    TensorType, ValueId,
};
use std::collections::HashMap;

use super::ZooError;

/// How batch-norm statistics are chosen (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Measured by running the interpreter on a seeded random input during construction.
    Calibrated,
    /// Fixed near the values He-init predicts; no interpreter needed.
    ClosedForm,
}

/// What follows a convolution's batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// `Clip(0, 6)`, as MobileNet and the EfficientNet-Lite models use.
    Relu6,
}

/// A convolution's shape: output channels, square kernel, stride, symmetric padding, groups.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub group: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A convolution without bias and with "same" padding for odd kernels (`kernel / 2`).
    pub fn new(out: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            out,
            kernel,
            stride,
            pad: kernel / 2,
            group: 1,
            bias: false,
        }
    }
    pub fn group(self, group: usize) -> ConvSpec {
        ConvSpec { group, ..self }
    }
    pub fn bias(self) -> ConvSpec {
        ConvSpec { bias: true, ..self }
    }
}

/// FNV-1a, to derive one random stream per tensor name: a tensor's values then depend only on
/// the seed and its name, not on the order in which the builder creates tensors.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

pub struct Builder {
    pub g: Graph,
    seed: u64,
    init: Init,
    /// With `Init::Calibrated`: the value every node produced on the calibration input.
    calib: HashMap<ValueId, Tensor>,
}

impl Builder {
    pub fn new(name: &str, seed: u64, init: Init) -> Builder {
        Builder {
            g: Graph::new(name),
            seed,
            init,
            calib: HashMap::new(),
        }
    }

    /// The random stream for the tensor called `name`.
    pub fn rng(&self, name: &str) -> SeededRng {
        let mut mix = SeededRng::new(self.seed);
        SeededRng::new(mix.next_u64() ^ name_hash(name))
    }

    fn normals(&self, name: &str, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let mut r = self.rng(name);
        (0..n).map(|_| mean + std * r.normal()).collect()
    }

    /// An f32 image input `[batch, channels, size, size]`. The calibration run sees a single
    /// image of the same size, so the weights do not depend on the batch.
    pub fn image_input(
        &mut self,
        name: &str,
        batch: usize,
        channels: usize,
        size: usize,
    ) -> Result<ValueId, ZooError> {
        let id = self.g.add_input(
            name,
            TensorType::new(DType::F32, vec![batch, channels, size, size]),
        )?;
        if self.init == Init::Calibrated {
            let dims = [1, channels, size, size];
            let data = self.normals("calibration.input", dims.iter().product(), 0.0, 1.0);
            self.calib.insert(id, Tensor::from_f32(&dims, data));
        }
        Ok(id)
    }

    pub fn constant(
        &mut self,
        name: &str,
        dims: &[usize],
        data: Vec<f32>,
    ) -> Result<ValueId, ZooError> {
        Ok(self.g.add_constant(name, Tensor::from_f32(dims, data))?)
    }

    /// He-normal weights for a layer with `fan_in` inputs per output (see the module docs).
    pub fn he_normal(
        &mut self,
        name: &str,
        dims: &[usize],
        fan_in: usize,
        gain: f32,
    ) -> Result<ValueId, ZooError> {
        let std = (gain / fan_in as f32).sqrt();
        let data = self.normals(name, dims.iter().product(), 0.0, std);
        self.constant(name, dims, data)
    }

    /// Adds a one-output node whose output value is named like the node, and evaluates it on
    /// the calibration input when calibrating.
    pub fn op(&mut self, name: &str, op: Op, inputs: Vec<ValueId>) -> Result<ValueId, ZooError> {
        self.op_named(name, op, inputs, name)
    }

    pub fn op_named(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
        output: &str,
    ) -> Result<ValueId, ZooError> {
        let calib_out = if self.init == Init::Calibrated {
            let mut args = Vec::with_capacity(inputs.len());
            for v in &inputs {
                let t = self.g.constant(*v).or_else(|| self.calib.get(v));
                args.push(t.ok_or_else(|| {
                    ZooError::Calibration(format!(
                        "node '{name}': an input has no calibration value"
                    ))
                })?);
            }
            let mut outs = eval_op(&op, &args).map_err(|e| {
                ZooError::Calibration(format!("node '{name}' ({}): {e}", op.name()))
            })?;
            Some(outs.swap_remove(0))
        } else {
            None
        };
        let node = self
            .g
            .add_node(name, op, inputs, vec![output.to_string()])?;
        let out = self.g.node(node).outputs[0];
        if let Some(t) = calib_out {
            self.calib.insert(out, t);
        }
        Ok(out)
    }

    pub fn channels(&self, x: ValueId) -> usize {
        self.g.value(x).ty.dims().get(1).copied().unwrap_or(0)
    }

    /// A convolution with He-normal weights `name.weight` (and bias `name.bias`); `gain` is 2
    /// when a ReLU follows, 1 otherwise.
    pub fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        spec: ConvSpec,
        gain: f32,
    ) -> Result<ValueId, ZooError> {
        let cin = self.channels(x);
        if spec.group == 0 || !cin.is_multiple_of(spec.group) {
            return Err(ZooError::Architecture(format!(
                "conv '{name}': {cin} channels do not split into {} groups",
                spec.group
            )));
        }
        let k = spec.kernel;
        let fan_in = cin / spec.group * k * k;
        let w = self.he_normal(
            &format!("{name}.weight"),
            &[spec.out, cin / spec.group, k, k],
            fan_in,
            gain,
        )?;
        let mut inputs = vec![x, w];
        if spec.bias {
            let b = self.normals(&format!("{name}.bias"), spec.out, 0.0, 0.01);
            inputs.push(self.constant(&format!("{name}.bias"), &[spec.out], b)?);
        }
        let attrs = ConvAttrs {
            kernel: vec![k, k],
            strides: vec![spec.stride; 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![spec.pad; 4]),
            group: spec.group,
        };
        self.op(name, Op::Conv(attrs), inputs)
    }

    /// An inference-mode batch norm with PyTorch's parameter names and epsilon (1e-5).
    pub fn batch_norm(
        &mut self,
        name: &str,
        x: ValueId,
        gamma_scale: f32,
    ) -> Result<ValueId, ZooError> {
        let c = self.channels(x);
        let gamma: Vec<f32> = self
            .normals(&format!("{name}.weight"), c, 1.0, 0.1)
            .into_iter()
            .map(|g| g * gamma_scale)
            .collect();
        let beta = self.normals(&format!("{name}.bias"), c, 0.0, 0.1);
        let (mean, var) = match self.calib.get(&x) {
            Some(t) if self.init == Init::Calibrated => channel_stats(name, t)?,
            _ => {
                // He-init keeps the second moment near 1; jitter makes the statistics non-trivial.
                let mean = self.normals(&format!("{name}.running_mean"), c, 0.0, 0.1);
                let var = self
                    .normals(&format!("{name}.running_var"), c, 0.0, 0.2)
                    .into_iter()
                    .map(f32::exp)
                    .collect();
                (mean, var)
            }
        };
        let ids = [
            self.constant(&format!("{name}.weight"), &[c], gamma)?,
            self.constant(&format!("{name}.bias"), &[c], beta)?,
            self.constant(&format!("{name}.running_mean"), &[c], mean)?,
            self.constant(&format!("{name}.running_var"), &[c], var)?,
        ];
        let mut inputs = vec![x];
        inputs.extend(ids);
        self.op(name, Op::BatchNorm { epsilon: 1e-5 }, inputs)
    }

    pub fn act(&mut self, name: &str, x: ValueId, act: Act) -> Result<ValueId, ZooError> {
        match act {
            Act::None => Ok(x),
            Act::Relu => self.op(name, Op::Activation(Activation::Relu), vec![x]),
            Act::Relu6 => self.op(
                name,
                Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }),
                vec![x],
            ),
        }
    }

    /// Convolution, batch norm and activation, named `{prefix}.{conv,bn,act}` after the given
    /// suffixes (e.g. `("0", "1", "2")` for torchvision's `Conv2dNormActivation`).
    pub fn conv_bn_act(
        &mut self,
        names: [&str; 3],
        x: ValueId,
        spec: ConvSpec,
        act: Act,
        gamma_scale: f32,
    ) -> Result<ValueId, ZooError> {
        let gain = if act == Act::None { 1.0 } else { 2.0 };
        let y = self.conv(names[0], x, spec, gain)?;
        let y = self.batch_norm(names[1], y, gamma_scale)?;
        self.act(names[2], y, act)
    }

    pub fn add(&mut self, name: &str, a: ValueId, b: ValueId) -> Result<ValueId, ZooError> {
        self.op(name, Op::Binary(BinaryOp::Add), vec![a, b])
    }

    pub fn concat(&mut self, name: &str, xs: Vec<ValueId>) -> Result<ValueId, ZooError> {
        self.op(name, Op::Concat { axis: 1 }, xs)
    }

    fn pool_attrs(kernel: usize, stride: usize, pad: usize) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![kernel; 2],
            strides: vec![stride; 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![pad; 4]),
            ceil_mode: false,
        }
    }

    pub fn max_pool(
        &mut self,
        name: &str,
        x: ValueId,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ValueId, ZooError> {
        self.op(
            name,
            Op::MaxPool(Self::pool_attrs(kernel, stride, pad)),
            vec![x],
        )
    }

    pub fn avg_pool(
        &mut self,
        name: &str,
        x: ValueId,
        kernel: usize,
        stride: usize,
    ) -> Result<ValueId, ZooError> {
        let pool = Self::pool_attrs(kernel, stride, 0);
        self.op(
            name,
            Op::AveragePool {
                pool,
                count_include_pad: false,
            },
            vec![x],
        )
    }

    pub fn global_avg_pool(&mut self, name: &str, x: ValueId) -> Result<ValueId, ZooError> {
        self.op(name, Op::GlobalAveragePool, vec![x])
    }

    pub fn flatten(&mut self, name: &str, x: ValueId) -> Result<ValueId, ZooError> {
        self.op(name, Op::Flatten { axis: 1 }, vec![x])
    }

    /// A PyTorch `Linear` as ONNX exports it: `Gemm(x, W[out, in], b, transB=1)`; `gain` as for
    /// [`Builder::conv`]. The output value is named `output`.
    pub fn linear(
        &mut self,
        name: &str,
        x: ValueId,
        out: usize,
        gain: f32,
        output: &str,
    ) -> Result<ValueId, ZooError> {
        let fan_in = self.g.value(x).ty.dims().get(1).copied().unwrap_or(0);
        let w = self.he_normal(&format!("{name}.weight"), &[out, fan_in], fan_in, gain)?;
        let bias = self.normals(&format!("{name}.bias"), out, 0.0, 0.01);
        let b = self.constant(&format!("{name}.bias"), &[out], bias)?;
        let attrs = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        self.op_named(name, Op::Gemm(attrs), vec![x, w, b], output)
    }

    /// Ends the graph: sets its outputs and checks it.
    pub fn finish(mut self, outputs: Vec<ValueId>) -> Result<Graph, ZooError> {
        self.g.set_outputs(outputs);
        self.g.verify()?;
        Ok(self.g)
    }
}

/// Per-channel mean and variance of an `[N, C, ...]` activation. A channel that is constant on
/// the calibration input (a ReLU that never fired) gets a variance floor relative to the
/// others, so that its batch norm does not amplify other inputs by `1/sqrt(epsilon)`.
fn channel_stats(name: &str, t: &Tensor) -> Result<(Vec<f32>, Vec<f32>), ZooError> {
    let a = t
        .as_f32()
        .map_err(|e| ZooError::Calibration(format!("batch norm '{name}': {e}")))?;
    let dims = a.shape();
    if dims.len() < 2 || a.is_empty() {
        return Err(ZooError::Calibration(format!(
            "batch norm '{name}': input of shape {dims:?}"
        )));
    }
    let c = dims[1];
    let inner: usize = dims[2..].iter().product();
    let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
    for (i, &v) in a.iter().enumerate() {
        let ch = (i / inner) % c;
        sum[ch] += v as f64;
        sq[ch] += (v as f64) * (v as f64);
    }
    let count = (a.len() / c) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let var: Vec<f64> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / count - m * m).max(0.0))
        .collect();
    let floor = (var.iter().sum::<f64>() / c as f64 * 1e-2).max(1e-6);
    Ok((
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&v| v.max(floor) as f32).collect(),
    ))
}
