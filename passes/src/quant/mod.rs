//! Post-training quantization: calibration statistics, range methods, hardware profiles and
//! the choice of quantization parameters.
//!
//! The pieces, in the order a quantizing compile uses them:
//!
//! - [`stats`]: what calibration records. A [`TensorStats`] accumulates f32 batches of one
//!   tensor in bounded memory (count, exact min and max, a signed histogram of 4096 bins whose
//!   width is a power of two); [`ChannelRanges`] holds per-channel min/max of a weight;
//!   [`CalibrationStats`] maps tensor names to both and reads and writes the stats file.
//! - [`range`]: how a clip range is chosen from the statistics: [`RangeMethod`] is `minmax`,
//!   `percentile[=P]`, `mse` or `kl` (TensorRT's entropy calibration), chosen separately for
//!   weights and activations ([`RangeMethods`]); [`choose_range`] gives a [`ClipRange`].
//! - [`profile`]: hardware profiles as data ([`Profile`]): granularity, symmetry, integer
//!   types and scale format of weights and activations, which ops run in int8 and how a
//!   residual Add is handled. `tensorrt`, `fbgemm`, `tvm`, `snpe`, `acl`, `x86-vnni`, `arm`.
//! - [`params`]: [`qcc_ir::QParams`] from a range and a profile ([`activation_qparams`],
//!   [`weight_qparams`]), the int32 bias parameters and the per-output-channel requantization
//!   multipliers of a conv or gemm ([`requant_multipliers`]).
//!
//! Because the stats file stores statistics rather than scales, changing the profile or the
//! range method needs no new calibration run.
//!
//! # The stats file (JSON, version 1)
//!
//! ```text
//! {
//!   "format": "qcc-calibration-stats",     // always this string
//!   "version": 1,                          // readers reject versions they do not know
//!   "model": "resnet18.onnx",              // file name of the calibrated model
//!   "samples": 64,                         // calibration samples observed
//!   "synthetic_inputs": false,             // true: seeded random inputs, not real data
//!   "tensors": {                           // activation name -> statistics (sorted by name)
//!     "conv1_out": {
//!       "count": 802816,                   // finite values observed
//!       "non_finite": 0,                   // NaN and ±inf values seen and left out
//!       "min": -3.25, "max": 7.5,          // exact; null when count is 0
//!       "histogram": {
//!         "bins": 4096,                    // a power of two; half below zero, half above
//!         "bin_width_log2": -8,            // bin width 2^-8; bin j covers
//!                                          //   [(j - bins/2)·w, (j - bins/2 + 1)·w)
//!         "first_bin": 1216,               // index of counts[0]; bins outside are empty
//!         "counts": [3, 0, 17, ...]
//!       }
//!     }
//!   },
//!   "weights": {                           // weight name -> per-channel ranges
//!     "conv1.weight": { "axis": 0, "min": [-0.5, ...], "max": [0.4, ...] }
//!   }
//! }
//! ```
//!
//! The bin width is the smallest power of two (not below 2^-100) for which
//! `bins/2 · width > max |x|`. Since the grids of successive widths nest, a histogram
//! re-binned when the range grows, or two histograms merged, hold exactly the counts of a
//! histogram built from all the values at once: merging calibration runs is exact.

pub mod bias;
pub mod dynamic;
pub mod expand;
pub mod insert;
pub mod integer;
pub mod io;
pub mod params;
pub mod profile;
pub mod range;
pub mod stats;

pub use bias::QuantizeFloatBias;
pub use dynamic::{quantize_dynamic, DynamicOptions, QuantizeDynamic};
pub use expand::{is_prequantized, ExpandQLinear, FoldDequantizedWeights};
pub use insert::{insert_qdq, InsertQdq, InsertSummary, QuantizeOptions};
pub use integer::{realize_integer_products, RealizeIntegerProducts};
pub use io::{api_qparams, QuantizedIo};
pub use params::{
    activation_qparams, bias_qparams, qparams_for_range, requant_multipliers,
    round_scale_up_to_power_of_two, scale_and_zero_point, weight_qparams,
};
pub use profile::{
    Granularity, Profile, QuantType, QuantizedOps, ResidualAdd, ScaleFormat, Symmetry, TensorScheme,
};
pub use range::{choose_range, ClipRange, RangeMethod, RangeMethods};
pub use stats::{CalibrationStats, ChannelRanges, Histogram, TensorStats};

/// How an int8 build quantizes.
#[derive(Clone, Debug)]
pub enum Quantization {
    /// Calibrated Q/DQ placement: the `quantize` pass before fusion, realized by it.
    Static(QuantizeOptions),
    /// Activation ranges measured at run time: the `quantize-dynamic` pass after fusion.
    Dynamic(DynamicOptions),
}

impl Quantization {
    /// The hardware profile either mode follows.
    pub fn profile(&self) -> &Profile {
        match self {
            Quantization::Static(q) => &q.profile,
            Quantization::Dynamic(d) => &d.profile,
        }
    }
}

use qcc_ir::quant::QParamsError;
use qcc_ir::requant::FixedPointError;

/// Everything that can go wrong choosing quantization parameters; messages name the tensor,
/// profile or method at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("unknown quantization profile '{name}' (known profiles: {known})")]
    UnknownProfile { name: String, known: String },
    #[error("no default quantization profile for architecture '{0}' (known: x86_64, aarch64)")]
    UnknownArch(String),
    #[error("bad range method '{text}': {reason}")]
    BadRangeMethod { text: String, reason: String },
    #[error("quantization to {0} bits is not supported (2 to 16)")]
    BadBits(u32),
    #[error("histogram bin count {0} must be a power of two from 64 to 65536")]
    BadBins(usize),
    #[error("cannot merge histograms of {left} and {right} bins")]
    BinsMismatch { left: usize, right: usize },
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },
    #[error("weight of shape {dims:?} has {len} values")]
    ShapeMismatch { dims: Vec<usize>, len: usize },
    #[error("channel axis {axis} is out of range for a weight of rank {rank}")]
    BadAxis { axis: usize, rank: usize },
    #[error("weight value at index {index} is {value} (not finite)")]
    NonFiniteWeight { index: usize, value: f32 },
    #[error("stats file: {0}")]
    StatsFile(String),
    #[error("cannot merge statistics of model '{left}' with statistics of model '{right}'")]
    ModelMismatch { left: String, right: String },
    #[error(transparent)]
    QParams(#[from] QParamsError),
    #[error("requantization multiplier of output channel {channel}: {source}")]
    Requant {
        channel: usize,
        source: FixedPointError,
    },
    #[error("{0}")]
    Mismatch(String),
}

impl QuantError {
    /// Prefixes an error with the tensor it concerns (keeps an existing prefix).
    pub fn for_tensor(self, tensor: &str) -> QuantError {
        match self {
            QuantError::Tensor { .. } => self,
            other => QuantError::Tensor {
                tensor: tensor.to_string(),
                message: other.to_string(),
            },
        }
    }
}
