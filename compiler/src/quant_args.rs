//! The quantization options of `qcc compile`, `run`, `bench` and `compare`, and how they
//! become a [`Quantization`]: the static `quantize` pass's options or the dynamic one's.
//!
//! An int8 target needs calibration statistics: `--stats FILE` (from `qcc calibrate`) or
//! `--calibrate DATA` (calibrate now, on the same kind of data `qcc calibrate --data` takes).
//! The profile defaults to the target architecture's (`x86-vnni` on x86-64, `arm` on
//! aarch64, with `usdot` when the target has i8mm). These options on a float target are an
//! error rather than silently ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qcc_codegen::target::{Feature, Precision};
use qcc_codegen::Target;
use qcc_passes::quant::{
    CalibrationStats, DynamicOptions, Profile, Quantization, QuantizeOptions, RangeMethod,
    RangeMethods,
};

use crate::calibration_data::DataSource;
use crate::driver::{self, DriverError};

/// `--mode`: when activations get their quantization parameters.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuantMode {
    /// From calibration statistics, at compile time (int8 in, int8 out of every layer).
    #[default]
    Static,
    /// From each input's range at run time (weights int8, each layer's output f32): no
    /// statistics needed.
    Dynamic,
}

/// `--io`: what the compiled model takes and returns.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// The model's own f32 inputs and outputs, quantized and dequantized inside.
    #[default]
    Float,
    /// Inputs and outputs quantized at the model's boundary are exposed as u8, with their
    /// scale and zero point in the header (static mode).
    Int8,
}

#[derive(clap::Args, Clone, Debug)]
pub struct QuantArgs {
    /// static: activation ranges from calibration statistics; dynamic: measured per tensor
    /// at run time (no statistics; convolutions and matrix products in int8, the rest fp32).
    #[arg(long, value_enum, default_value_t = QuantMode::Static)]
    pub mode: QuantMode,
    /// int8: the model takes and returns its quantized (u8) tensors where its boundary is
    /// quantized; float (default): f32, quantized inside.
    #[arg(long, value_enum, default_value_t = IoMode::Float)]
    pub io: IoMode,
    /// Calibration statistics from `qcc calibrate` (int8 targets).
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Calibrate now on these samples (a .npy whose first axis is the sample, or a directory
    /// of .npy files) instead of reading --stats.
    #[arg(long, value_name = "DATA", conflicts_with = "stats")]
    pub calibrate: Option<PathBuf>,
    /// With --calibrate: read at most N samples.
    #[arg(long, value_name = "N", requires = "calibrate")]
    pub calibrate_samples: Option<usize>,
    /// Hardware profile: tensorrt, fbgemm, tvm, snpe, acl, x86-vnni, arm (default: the
    /// target's).
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// Keep nodes whose name matches PATTERN (`*` matches any run of characters) in fp32;
    /// repeatable. A pattern that matches nothing is an error.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Range method for weights: minmax, percentile[=P], mse, kl.
    #[arg(long, value_name = "METHOD", default_value = DEFAULT_WEIGHT_RANGE)]
    pub weight_range: String,
    /// Range method for activations: minmax, percentile[=P], mse, kl. `mse` (the clip range
    /// with the least expected quantization error) agreed with fp32 more often than `minmax`
    /// on every trained model of ACCURACY.md.
    #[arg(long, value_name = "METHOD", default_value = DEFAULT_ACTIVATION_RANGE)]
    pub activation_range: String,
}

/// The default range methods of the command line.
pub const DEFAULT_WEIGHT_RANGE: &str = "minmax";
pub const DEFAULT_ACTIVATION_RANGE: &str = "mse";

impl Default for QuantArgs {
    /// What the command line gives when no quantization option is passed.
    fn default() -> QuantArgs {
        QuantArgs {
            mode: QuantMode::Static,
            io: IoMode::Float,
            stats: None,
            calibrate: None,
            calibrate_samples: None,
            profile: None,
            exclude: Vec::new(),
            weight_range: DEFAULT_WEIGHT_RANGE.to_string(),
            activation_range: DEFAULT_ACTIVATION_RANGE.to_string(),
        }
    }
}

impl QuantArgs {
    fn any_given(&self) -> bool {
        self.mode != QuantMode::Static
            || self.io != IoMode::Float
            || self.stats.is_some()
            || self.calibrate.is_some()
            || self.profile.is_some()
            || !self.exclude.is_empty()
    }

    /// The profile for `target`: `--profile` or the architecture's default.
    pub fn profile(&self, target: &Target) -> Result<Profile, DriverError> {
        let has_i8mm = target.has(Feature::I8mm);
        let profile = match &self.profile {
            Some(name) => Profile::parse_for(name, has_i8mm),
            None => Profile::default_for(target.arch().name(), has_i8mm),
        };
        profile.map_err(|e| DriverError::Other(format!("--profile: {e}")))
    }

    /// A model that arrived quantized (Q/DQ, QLinear or ConvInteger/MatMulInteger ops) is
    /// compiled with its own parameters: statistics and a profile would be ignored, so giving
    /// them is an error.
    pub fn check_prequantized(&self, model: &Path, target: &Target) -> Result<(), DriverError> {
        if self.any_given() {
            return Err(DriverError::Other(format!(
                "{} is already quantized (it has QuantizeLinear/DequantizeLinear, QLinear \
                 ops or onnxruntime's dynamic integer ops): it compiles with its own \
                 parameters; drop --mode, --io, --stats, --calibrate, --profile and --exclude",
                model.display()
            )));
        }
        if target.precision() != Precision::Int8 {
            eprintln!(
                "qcc: warning: {} is quantized; on {} its integer layers still run as int8 \
                 kernels where they were realized",
                model.display(),
                target.name()
            );
        }
        Ok(())
    }

    /// How to quantize `model` for `target`: `None` for a float target (an error if
    /// quantization options were given anyway).
    pub fn options(
        &self,
        model: &Path,
        target: &Target,
    ) -> Result<Option<Quantization>, DriverError> {
        if target.precision() != Precision::Int8 {
            if self.any_given() {
                return Err(DriverError::Other(format!(
                    "--mode, --io, --stats, --calibrate, --profile and --exclude are for \
                     int8 targets; {} computes in {}",
                    target.name(),
                    target.precision().name()
                )));
            }
            return Ok(None);
        }
        let method = |flag: &str, text: &str| {
            RangeMethod::parse(text).map_err(|e| DriverError::Other(format!("--{flag}: {e}")))
        };
        if self.mode == QuantMode::Dynamic {
            if self.stats.is_some() || self.calibrate.is_some() {
                return Err(DriverError::Other(
                    "--mode dynamic measures activation ranges at run time: drop --stats and \
                     --calibrate"
                        .into(),
                ));
            }
            if self.io != IoMode::Float {
                return Err(DriverError::Other(
                    "--io int8 needs static quantization: with --mode dynamic every layer \
                     takes and returns f32"
                        .into(),
                ));
            }
            return Ok(Some(Quantization::Dynamic(DynamicOptions {
                profile: self.profile(target)?,
                weight_method: method("weight-range", &self.weight_range)?,
                exclude: self.exclude.clone(),
            })));
        }
        self.static_options(model, target)
            .map(|q| Some(Quantization::Static(q)))
    }

    /// The `quantize` pass's options (static mode) for an int8 `target`.
    pub fn static_options(
        &self,
        model: &Path,
        target: &Target,
    ) -> Result<QuantizeOptions, DriverError> {
        if self.mode != QuantMode::Static {
            return Err(DriverError::Other(
                "this command quantizes statically (calibrated Q/DQ); drop --mode dynamic".into(),
            ));
        }
        let stats = match (&self.stats, &self.calibrate) {
            (Some(path), _) => read_stats(path)?,
            (None, Some(data)) => {
                let graph = driver::load_model(model, 1)?;
                let source = DataSource::Path(data.clone());
                crate::calibrate::calibrate(model, &graph, &source, self.calibrate_samples, true)?
            }
            (None, None) => {
                return Err(DriverError::Other(format!(
                    "target {} needs calibration statistics: --stats FILE (from `qcc \
                     calibrate {} --data DATA -o FILE`) or --calibrate DATA",
                    target.name(),
                    model.display()
                )))
            }
        };
        if stats.synthetic_inputs {
            eprintln!(
                "qcc: warning: the calibration statistics come from seeded random inputs; \
                 int8 accuracy on real data is unknown"
            );
        }
        let method = |flag: &str, text: &str| {
            RangeMethod::parse(text).map_err(|e| DriverError::Other(format!("--{flag}: {e}")))
        };
        Ok(QuantizeOptions {
            profile: self.profile(target)?,
            stats: Arc::new(stats),
            methods: RangeMethods {
                weights: method("weight-range", &self.weight_range)?,
                activations: method("activation-range", &self.activation_range)?,
            },
            exclude: self.exclude.clone(),
            quantized_io: self.io == IoMode::Int8,
        })
    }
}

/// Reads a stats file written by `qcc calibrate`.
pub fn read_stats(path: &Path) -> Result<CalibrationStats, DriverError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DriverError::Other(format!("--stats {}: {e}", path.display())))?;
    CalibrationStats::from_json(&text)
        .map_err(|e| DriverError::Other(format!("--stats {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int8() -> Target {
        Target::parse("x86_64-int8").expect("target")
    }

    #[test]
    fn dynamic_mode_needs_no_statistics_and_refuses_them_and_quantized_io() {
        let model = Path::new("m.onnx");
        let args = QuantArgs {
            mode: QuantMode::Dynamic,
            ..QuantArgs::default()
        };
        match args.options(model, &int8()) {
            Ok(Some(Quantization::Dynamic(d))) => assert_eq!(d.profile.name, "x86-vnni"),
            other => panic!("expected dynamic options, got {other:?}"),
        }
        let with_stats = QuantArgs {
            stats: Some(PathBuf::from("s.json")),
            ..args.clone()
        };
        let err = with_stats.options(model, &int8()).unwrap_err().to_string();
        assert!(err.contains("--stats"), "{err}");
        let with_io = QuantArgs {
            io: IoMode::Int8,
            ..args
        };
        let err = with_io.options(model, &int8()).unwrap_err().to_string();
        assert!(err.contains("--io int8"), "{err}");
    }

    #[test]
    fn mode_and_io_on_a_float_target_are_errors() {
        let fp32 = Target::parse("x86_64-fp32").expect("target");
        for args in [
            QuantArgs {
                mode: QuantMode::Dynamic,
                ..QuantArgs::default()
            },
            QuantArgs {
                io: IoMode::Int8,
                ..QuantArgs::default()
            },
        ] {
            let err = args
                .options(Path::new("m.onnx"), &fp32)
                .unwrap_err()
                .to_string();
            assert!(err.contains("int8 targets"), "{err}");
        }
    }
}
