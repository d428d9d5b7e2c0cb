//! Hardware profiles as data: what each deployment library expects of a quantized model.
//!
//! The MQBench study's point is that every library wants a different quantizer. A
//! [`Profile`] names those choices, so that Q/DQ placement and parameter selection read them
//! instead of hard-coding one scheme:
//!
//! | profile    | weights                  | activations          | scales | int8 ops   | residual Add      |
//! |------------|--------------------------|----------------------|--------|------------|-------------------|
//! | `tensorrt` | s8 symmetric per-channel | s8 symmetric         | fp32   | all        | one input in i32  |
//! | `fbgemm`   | s8 asymmetric per-channel| u8 asymmetric        | fp32   | all        | both quantized    |
//! | `tvm`      | s8 symmetric per-tensor  | s8 symmetric         | 2^k    | all        | both quantized    |
//! | `snpe`     | u8 asymmetric per-tensor | u8 asymmetric        | fp32   | all        | both quantized    |
//! | `acl`      | s8 symmetric per-channel | u8 asymmetric        | fp32   | Conv, Gemm | stays fp32        |
//! | `x86-vnni` | s8 symmetric per-channel | u8 asymmetric        | fp32   | all        | both quantized    |
//! | `arm`      | s8 symmetric per-channel | s8 (u8 with i8mm) asymmetric | fp32 | all | both quantized |
//!
//! Activations are always per tensor. "All" means every op that has an int8 kernel; the
//! realization pass decides which those are. `x86-vnni` follows `vpdpbusd` (u8 × s8);
//! `arm` follows `sdot` (s8 × s8) and, when the target has i8mm, `usdot` (u8 × s8).

use super::QuantError;
use qcc_ir::{DType, Op};
use std::fmt;

/// One scale per tensor or one per output channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    PerTensor,
    PerChannel,
}

/// Symmetric: zero maps to the middle of the integer range and the range is `[-t, t]`;
/// asymmetric: a zero point places `[lo, hi]` anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Symmetry {
    Symmetric,
    Asymmetric,
}

/// The 8-bit integer type a tensor is quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    I8,
    U8,
}

impl QuantType {
    pub fn dtype(self) -> DType {
        match self {
            QuantType::I8 => DType::I8,
            QuantType::U8 => DType::U8,
        }
    }

    /// The inclusive integer range.
    pub fn range(self) -> (i32, i32) {
        match self {
            QuantType::I8 => (-128, 127),
            QuantType::U8 => (0, 255),
        }
    }

    pub fn bits(self) -> u32 {
        8
    }
}

/// Scales as any f32, or rounded up to powers of two (requantization is then a shift).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleFormat {
    Float32,
    PowerOfTwo,
}

/// Which ops run in int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantizedOps {
    /// Every op that has an int8 kernel (the realization pass knows which).
    EveryOpWithInt8Kernel,
    /// Conv, Gemm and MatMul only; everything else stays fp32 between DQ and Q.
    ConvAndGemmOnly,
}

impl QuantizedOps {
    /// Whether the profile lets `op` run in int8 (an op with no int8 kernel still stays
    /// fp32; that is for the realization pass to decide).
    pub fn admits(self, op: &Op) -> bool {
        match self {
            QuantizedOps::EveryOpWithInt8Kernel => true,
            QuantizedOps::ConvAndGemmOnly => {
                matches!(op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul)
            }
        }
    }
}

/// How the Add that closes a residual block is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResidualAdd {
    /// Both inputs are quantized (Q/DQ on each); the Add runs on int8 with requantization.
    QuantizeBothInputs,
    /// The skip input is added in int32 into the accumulator of the conv producing the other
    /// input, before that conv's requantization (TensorRT's fusion).
    AccumulateIntoConv,
    /// The Add stays fp32 (profiles that quantize only Conv and Gemm).
    KeepFloat,
}

/// How one kind of tensor (weights or activations) is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorScheme {
    pub granularity: Granularity,
    pub symmetry: Symmetry,
    pub dtype: QuantType,
}

/// A hardware profile: every choice a quantizer makes for one deployment library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// The name given to `--profile`.
    pub name: &'static str,
    pub weights: TensorScheme,
    /// Always per tensor.
    pub activations: TensorScheme,
    pub scale_format: ScaleFormat,
    pub quantized_ops: QuantizedOps,
    pub residual_add: ResidualAdd,
}

const S8_SYMMETRIC_PER_CHANNEL: TensorScheme = TensorScheme {
    granularity: Granularity::PerChannel,
    symmetry: Symmetry::Symmetric,
    dtype: QuantType::I8,
};

const fn per_tensor(symmetry: Symmetry, dtype: QuantType) -> TensorScheme {
    TensorScheme {
        granularity: Granularity::PerTensor,
        symmetry,
        dtype,
    }
}

impl Profile {
    /// The names [`Profile::parse`] knows, in the order of the issue.
    pub const NAMES: [&'static str; 7] = [
        "tensorrt", "fbgemm", "tvm", "snpe", "acl", "x86-vnni", "arm",
    ];

    pub const TENSORRT: Profile = Profile {
        name: "tensorrt",
        weights: S8_SYMMETRIC_PER_CHANNEL,
        activations: per_tensor(Symmetry::Symmetric, QuantType::I8),
        scale_format: ScaleFormat::Float32,
        quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
        residual_add: ResidualAdd::AccumulateIntoConv,
    };

    pub const FBGEMM: Profile = Profile {
        name: "fbgemm",
        weights: TensorScheme {
            granularity: Granularity::PerChannel,
            symmetry: Symmetry::Asymmetric,
            dtype: QuantType::I8,
        },
        activations: per_tensor(Symmetry::Asymmetric, QuantType::U8),
        scale_format: ScaleFormat::Float32,
        quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
        residual_add: ResidualAdd::QuantizeBothInputs,
    };

    pub const TVM: Profile = Profile {
        name: "tvm",
        weights: per_tensor(Symmetry::Symmetric, QuantType::I8),
        activations: per_tensor(Symmetry::Symmetric, QuantType::I8),
        scale_format: ScaleFormat::PowerOfTwo,
        quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
        residual_add: ResidualAdd::QuantizeBothInputs,
    };

    pub const SNPE: Profile = Profile {
        name: "snpe",
        weights: per_tensor(Symmetry::Asymmetric, QuantType::U8),
        activations: per_tensor(Symmetry::Asymmetric, QuantType::U8),
        scale_format: ScaleFormat::Float32,
        quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
        residual_add: ResidualAdd::QuantizeBothInputs,
    };

    pub const ACL: Profile = Profile {
        name: "acl",
        weights: S8_SYMMETRIC_PER_CHANNEL,
        activations: per_tensor(Symmetry::Asymmetric, QuantType::U8),
        scale_format: ScaleFormat::Float32,
        quantized_ops: QuantizedOps::ConvAndGemmOnly,
        residual_add: ResidualAdd::KeepFloat,
    };

    pub const X86_VNNI: Profile = Profile {
        name: "x86-vnni",
        weights: S8_SYMMETRIC_PER_CHANNEL,
        activations: per_tensor(Symmetry::Asymmetric, QuantType::U8),
        scale_format: ScaleFormat::Float32,
        quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
        residual_add: ResidualAdd::QuantizeBothInputs,
    };

    /// `arm` for a target with or without i8mm: `sdot` multiplies s8 by s8, so activations
    /// are s8 (asymmetric; the zero point is compensated with the weight sums); `usdot`
    /// (i8mm) multiplies u8 by s8, so activations are u8, as on x86.
    pub const fn arm(has_i8mm: bool) -> Profile {
        let activation_type = if has_i8mm {
            QuantType::U8
        } else {
            QuantType::I8
        };
        Profile {
            name: "arm",
            weights: S8_SYMMETRIC_PER_CHANNEL,
            activations: per_tensor(Symmetry::Asymmetric, activation_type),
            scale_format: ScaleFormat::Float32,
            quantized_ops: QuantizedOps::EveryOpWithInt8Kernel,
            residual_add: ResidualAdd::QuantizeBothInputs,
        }
    }

    /// The profile named `name`; `arm` is the portable `sdot` scheme (see
    /// [`Profile::parse_for`] to take i8mm into account).
    pub fn parse(name: &str) -> Result<Profile, QuantError> {
        Profile::parse_for(name, false)
    }

    /// The profile named `name` for a target that has (or lacks) Arm's i8mm.
    pub fn parse_for(name: &str, has_i8mm: bool) -> Result<Profile, QuantError> {
        Ok(match name {
            "tensorrt" => Profile::TENSORRT,
            "fbgemm" => Profile::FBGEMM,
            "tvm" => Profile::TVM,
            "snpe" => Profile::SNPE,
            "acl" => Profile::ACL,
            "x86-vnni" => Profile::X86_VNNI,
            "arm" => Profile::arm(has_i8mm),
            _ => {
                return Err(QuantError::UnknownProfile {
                    name: name.to_string(),
                    known: Profile::NAMES.join(", "),
                })
            }
        })
    }

    /// The default profile of an int8 target's architecture (`x86_64`, `aarch64`).
    pub fn default_for(arch_name: &str, has_i8mm: bool) -> Result<Profile, QuantError> {
        match arch_name {
            "x86_64" => Ok(Profile::X86_VNNI),
            "aarch64" => Ok(Profile::arm(has_i8mm)),
            _ => Err(QuantError::UnknownArch(arch_name.to_string())),
        }
    }

    /// Every profile (`arm` without i8mm).
    pub fn all() -> Vec<Profile> {
        Profile::NAMES
            .iter()
            .filter_map(|name| Profile::parse(name).ok())
            .collect()
    }
}

impl fmt::Display for TensorScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = match self.dtype {
            QuantType::I8 => "s8",
            QuantType::U8 => "u8",
        };
        let symmetry = match self.symmetry {
            Symmetry::Symmetric => "symmetric",
            Symmetry::Asymmetric => "asymmetric",
        };
        let granularity = match self.granularity {
            Granularity::PerTensor => "per-tensor",
            Granularity::PerChannel => "per-channel",
        };
        write!(f, "{dtype} {symmetry} {granularity}")
    }
}

impl fmt::Display for Profile {
    /// One line for `--help` and reports: `x86-vnni: weights s8 symmetric per-channel, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scales = match self.scale_format {
            ScaleFormat::Float32 => "fp32 scales",
            ScaleFormat::PowerOfTwo => "power-of-two scales",
        };
        let ops = match self.quantized_ops {
            QuantizedOps::EveryOpWithInt8Kernel => "every op with an int8 kernel in int8",
            QuantizedOps::ConvAndGemmOnly => "only Conv/Gemm in int8",
        };
        let add = match self.residual_add {
            ResidualAdd::QuantizeBothInputs => "residual Add inputs both quantized",
            ResidualAdd::AccumulateIntoConv => "residual Add accumulated into the conv in i32",
            ResidualAdd::KeepFloat => "residual Add in fp32",
        };
        write!(
            f,
            "{}: weights {}, activations {}, {scales}, {ops}, {add}",
            self.name, self.weights, self.activations
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qcc_ir::{ConvAttrs, Padding};

    #[test]
    fn every_name_parses_to_the_profile_of_that_name() {
        for name in Profile::NAMES {
            let profile = Profile::parse(name).unwrap();
            assert_eq!(profile.name, name);
            // Activations are per tensor in every profile.
            assert_eq!(profile.activations.granularity, Granularity::PerTensor);
        }
        assert_eq!(Profile::all().len(), Profile::NAMES.len());
    }

    #[test]
    fn unknown_profile_lists_the_known_names() {
        let message = Profile::parse("tensorflow").unwrap_err().to_string();
        assert!(message.contains("'tensorflow'"), "{message}");
        for name in Profile::NAMES {
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn profiles_match_the_issue() {
        let trt = Profile::parse("tensorrt").unwrap();
        assert_eq!(trt.weights, S8_SYMMETRIC_PER_CHANNEL);
        assert_eq!(trt.activations.symmetry, Symmetry::Symmetric);
        assert_eq!(trt.residual_add, ResidualAdd::AccumulateIntoConv);
        let fbgemm = Profile::parse("fbgemm").unwrap();
        assert_eq!(fbgemm.weights.symmetry, Symmetry::Asymmetric);
        assert_eq!(fbgemm.weights.granularity, Granularity::PerChannel);
        assert_eq!(fbgemm.activations.dtype, QuantType::U8);
        let tvm = Profile::parse("tvm").unwrap();
        assert_eq!(tvm.scale_format, ScaleFormat::PowerOfTwo);
        assert_eq!(tvm.weights.granularity, Granularity::PerTensor);
        assert_eq!(tvm.residual_add, ResidualAdd::QuantizeBothInputs);
        let snpe = Profile::parse("snpe").unwrap();
        assert_eq!(snpe.weights.symmetry, Symmetry::Asymmetric);
        assert_eq!(snpe.weights.granularity, Granularity::PerTensor);
        let acl = Profile::parse("acl").unwrap();
        assert_eq!(acl.quantized_ops, QuantizedOps::ConvAndGemmOnly);
        assert_eq!(acl.activations.symmetry, Symmetry::Asymmetric);
        let vnni = Profile::parse("x86-vnni").unwrap();
        assert_eq!(vnni.activations.dtype, QuantType::U8);
        assert_eq!(vnni.weights, S8_SYMMETRIC_PER_CHANNEL);
        // Only tvm uses power-of-two scales, only tensorrt the i32 residual.
        for p in Profile::all() {
            assert_eq!(p.scale_format == ScaleFormat::PowerOfTwo, p.name == "tvm");
            assert_eq!(
                p.residual_add == ResidualAdd::AccumulateIntoConv,
                p.name == "tensorrt"
            );
        }
    }

    #[test]
    fn arm_follows_the_dot_product_instruction() {
        // sdot: s8 x s8; usdot (i8mm): u8 x s8. Weights are s8 either way.
        assert_eq!(Profile::arm(false).activations.dtype, QuantType::I8);
        assert_eq!(Profile::arm(true).activations.dtype, QuantType::U8);
        assert_eq!(Profile::arm(true).weights.dtype, QuantType::I8);
        assert_eq!(Profile::parse("arm").unwrap(), Profile::arm(false));
        assert_eq!(Profile::parse_for("arm", true).unwrap(), Profile::arm(true));
        // The flag only changes arm.
        assert_eq!(
            Profile::parse_for("x86-vnni", true).unwrap(),
            Profile::X86_VNNI
        );
    }

    #[test]
    fn default_profiles_per_architecture() {
        assert_eq!(
            Profile::default_for("x86_64", false).unwrap().name,
            "x86-vnni"
        );
        assert_eq!(
            Profile::default_for("aarch64", true).unwrap(),
            Profile::arm(true)
        );
        assert_eq!(
            Profile::default_for("aarch64", false).unwrap(),
            Profile::arm(false)
        );
        assert!(matches!(
            Profile::default_for("riscv64", false),
            Err(QuantError::UnknownArch(_))
        ));
    }

    #[test]
    fn quantized_ops_admit_conv_and_gemm_or_everything() {
        let conv = Op::Conv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::SameUpper,
            group: 1,
        });
        let relu = Op::Activation(qcc_ir::Activation::Relu);
        assert!(QuantizedOps::ConvAndGemmOnly.admits(&conv));
        assert!(QuantizedOps::ConvAndGemmOnly.admits(&Op::MatMul));
        assert!(!QuantizedOps::ConvAndGemmOnly.admits(&relu));
        assert!(!QuantizedOps::ConvAndGemmOnly.admits(&Op::GlobalAveragePool));
        assert!(QuantizedOps::EveryOpWithInt8Kernel.admits(&relu));
    }

    #[test]
    fn display_says_what_the_profile_does() {
        let line = Profile::TENSORRT.to_string();
        assert_eq!(
            line,
            "tensorrt: weights s8 symmetric per-channel, activations s8 symmetric per-tensor, \
             fp32 scales, every op with an int8 kernel in int8, residual Add accumulated into \
             the conv in i32"
        );
        assert!(Profile::ACL.to_string().contains("only Conv/Gemm in int8"));
    }
}
