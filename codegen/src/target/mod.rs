//! Compilation targets: `ARCH-PRECISION[+feature|-feature]...` names and their Cranelift ISAs.
//!
//! A [`Target`] fixes three things: the instruction set (`x86_64` or `aarch64`, or `native`
//! for the machine running the compiler), the arithmetic the kernels use (`fp32`, `int8`,
//! `fp16`) and the set of ISA extensions the generated code may assume. Each (arch, precision)
//! pair has a default feature set; `+feature` and `-feature` suffixes, applied left to right,
//! change it. Feature names are Cranelift's ISA flag names without the `has_` prefix.
//!
//! Defaults, and why:
//! - `x86_64-*`: x86-64-v3 as Cranelift names it (`cmpxchg16b sse3 ssse3 sse41 sse42 popcnt avx
//!   avx2 fma bmi1 bmi2 lzcnt`), the level the kernels are written for (FMA on f32x4).
//! - `x86_64-int8` adds the AVX-512 VNNI family `avx512f avx512vl avx512vnni`: Cranelift
//!   folds the i8 dot-product tree into EVEX `vpdpbusd` with `avx512vnni`+`avx512vl`, which every
//!   VNNI server core has (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4, Zen 5). `avx512dq`
//!   is left out on purpose: with it Cranelift selects the slow `vpmullq` for the
//!   requantization's 64-bit multiply instead of `pmuldq` (measured: the int8 depthwise kernel
//!   runs about 25% faster without it); `+avx512dq` adds it back. The VEX form
//!   (`avx_vnni`) is opt-in (`+avx_vnni`): Cascade Lake, Ice Lake and Zen 4 lack it.
//! - `-vnni` removes every VNNI and AVX-512 feature, leaving the AVX2 level of `x86_64-fp32`: the
//!   int8 fallback without dot-product instructions runs wherever fp32 code runs. `+vnni` adds
//!   the three features `x86_64-int8` adds.
//! - `aarch64-fp32`: Armv8.0-A with Advanced SIMD (always present), no extension.
//! - `aarch64-int8`: `dotprod` (`sdot`/`udot`) and `lse`; `aarch64-fp16`: `fp16` and `lse`. Dot
//!   product and FP16 arithmetic are Armv8.2 extensions, and every Armv8.1+ core has LSE.
//!   `i8mm` (`usdot`, Armv8.6) is opt-in: `aarch64-int8+i8mm`.
//! - `native-*`: exactly what `cranelift_native` detects on the host, whatever the precision,
//!   except that `native-int8` on x86-64 leaves out `avx512dq` as `x86_64-int8` does.
//!
//! Cross targets (`x86_64`, `aarch64`) build ISAs for `ARCH-unknown-linux-gnu` (ELF output).

mod feature;
#[cfg(test)]
mod tests;

pub use feature::{Arch, Feature, FeatureSet, Precision};

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};

/// x86-64-v3 in Cranelift's flags: what every x86_64 target assumes.
const X86_64_V3: [Feature; 12] = [
    Feature::Cmpxchg16b,
    Feature::Sse3,
    Feature::Ssse3,
    Feature::Sse41,
    Feature::Sse42,
    Feature::Popcnt,
    Feature::Avx,
    Feature::Avx2,
    Feature::Fma,
    Feature::Bmi1,
    Feature::Bmi2,
    Feature::Lzcnt,
];

/// What `x86_64-int8` and `+vnni` add to x86-64-v3 (not `avx512dq`: see the module doc).
const VNNI_ADDED: [Feature; 3] = [Feature::Avx512f, Feature::Avx512vl, Feature::Avx512vnni];

/// What `-vnni` removes: every VNNI and AVX-512 feature, so that no prerequisite dangles.
const VNNI_REMOVED: [Feature; 7] = [
    Feature::Avx512f,
    Feature::Avx512vl,
    Feature::Avx512dq,
    Feature::Avx512vbmi,
    Feature::Avx512bitalg,
    Feature::Avx512vnni,
    Feature::AvxVnni,
];

/// The group name accepted as `+vnni` / `-vnni` on x86_64.
const VNNI_GROUP: &str = "vnni";

fn default_features(arch: Arch, precision: Precision) -> FeatureSet {
    match (arch, precision) {
        (Arch::X86_64, Precision::Fp32 | Precision::Fp16) => FeatureSet::of(arch, &X86_64_V3),
        (Arch::X86_64, Precision::Int8) => {
            let mut set = FeatureSet::of(arch, &X86_64_V3);
            set.insert_all(&VNNI_ADDED);
            set
        }
        (Arch::Aarch64, Precision::Fp32) => FeatureSet::empty(arch),
        (Arch::Aarch64, Precision::Int8) => FeatureSet::of(arch, &[Feature::Lse, Feature::Dotprod]),
        (Arch::Aarch64, Precision::Fp16) => FeatureSet::of(arch, &[Feature::Lse, Feature::Fp16]),
    }
}

/// Errors from parsing a target name or building its Cranelift ISA.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "target `{name}`: {reason}; expected ARCH-PRECISION[+feature|-feature]..., \
         for example x86_64-fp32 or aarch64-int8+i8mm"
    )]
    Malformed { name: String, reason: &'static str },
    #[error("target `{name}`: unknown architecture `{arch}` (valid: {valid})")]
    UnknownArch {
        name: String,
        arch: String,
        valid: String,
    },
    #[error("target `{name}`: unknown precision `{precision}` (valid: {valid})")]
    UnknownPrecision {
        name: String,
        precision: String,
        valid: String,
    },
    #[error("target `{name}`: unknown {arch} feature `{feature}` (valid: {valid})")]
    UnknownFeature {
        name: String,
        arch: Arch,
        feature: String,
        valid: String,
    },
    #[error("target `{name}`: feature `{feature}` needs `{missing}`, which is not enabled")]
    MissingPrerequisite {
        name: String,
        feature: Feature,
        missing: Feature,
    },
    #[error("target `{name}`: {precision} is not available on {arch}: {reason}")]
    UnsupportedPrecision {
        name: String,
        arch: Arch,
        precision: Precision,
        reason: &'static str,
    },
    #[error("target `{name}`: the host cannot be a target: {reason}")]
    UnsupportedHost { name: String, reason: String },
    #[error("target `{target}`: Cranelift rejected setting `{setting}`: {message}")]
    IsaSetting {
        target: String,
        setting: &'static str,
        message: String,
    },
    #[error("target `{target}`: Cranelift could not build the ISA: {message}")]
    IsaBuild { target: String, message: String },
}

/// Cranelift's optimisation level (`opt_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptLevel {
    /// Keeps instructions in source order: hand-unrolled kernels keep their schedule.
    None,
    /// Runs the mid-end optimiser, which sinks pure ops to their first use.
    Speed,
    SpeedAndSize,
}

impl OptLevel {
    fn cranelift_value(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
            OptLevel::SpeedAndSize => "speed_and_size",
        }
    }
}

/// Where the code goes, which decides position independence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emission {
    /// Relocatable object for PIE executables and shared libraries: `is_pic=true`.
    Object,
    /// In-process JIT: cranelift-jit refuses `is_pic=true` and colocated libcalls.
    Jit,
}

/// Shared (ISA-independent) Cranelift settings for [`Target::isa_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IsaOptions {
    pub opt_level: OptLevel,
    /// The CLIF verifier roughly doubles compile time: on in debug builds and tests only.
    pub verifier: bool,
    pub emission: Emission,
}

impl Default for IsaOptions {
    fn default() -> IsaOptions {
        IsaOptions {
            opt_level: OptLevel::Speed,
            verifier: cfg!(debug_assertions),
            emission: Emission::Object,
        }
    }
}

/// One entry of `qcc targets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: String,
    pub description: &'static str,
    pub features: FeatureSet,
}

/// A parsed, validated compilation target. Built only by [`Target::parse`], so its feature set
/// always matches its arch, holds every prerequisite, and suits its precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    precision: Precision,
    /// The arch is the feature set's: one source of truth.
    features: FeatureSet,
    /// Built for the host via `cranelift_native` (host triple, features relative to the host).
    native: bool,
}

impl Target {
    /// Parses `ARCH-PRECISION` followed by `+feature` / `-feature` modifiers, applied left to
    /// right to the default features of the pair (the host's features for `native`).
    pub fn parse(name: &str) -> Result<Target, TargetError> {
        let spelled = name.trim().to_ascii_lowercase();
        let malformed = |reason| TargetError::Malformed {
            name: name.to_string(),
            reason,
        };
        let (arch_part, rest) = spelled
            .split_once('-')
            .ok_or_else(|| malformed("no precision"))?;
        let precision_end = rest.find(['+', '-']).unwrap_or(rest.len());
        let (precision_part, mut modifiers) = rest.split_at(precision_end);

        let (arch, native, mut features) = if arch_part == "native" {
            let (arch, host) = host_features().map_err(|reason| TargetError::UnsupportedHost {
                name: name.to_string(),
                reason,
            })?;
            (arch, true, host)
        } else {
            let arch = Arch::from_name(arch_part).ok_or_else(|| TargetError::UnknownArch {
                name: name.to_string(),
                arch: arch_part.to_string(),
                valid: "x86_64, aarch64, native".to_string(),
            })?;
            (arch, false, FeatureSet::empty(arch))
        };
        let precision =
            Precision::from_name(precision_part).ok_or_else(|| TargetError::UnknownPrecision {
                name: name.to_string(),
                precision: precision_part.to_string(),
                valid: join_names(Precision::ALL.iter().map(|p| p.name())),
            })?;
        if !native {
            features = default_features(arch, precision);
        } else if arch == Arch::X86_64 && precision == Precision::Int8 {
            // As for `x86_64-int8`: with avx512dq the requantization multiply becomes the slow
            // `vpmullq` (see the module doc); `+avx512dq` puts it back.
            features.remove_all(&[Feature::Avx512dq]);
        }

        while let Some(sign) = modifiers.chars().next() {
            let body = &modifiers[1..];
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let feature_name = &body[..end];
            modifiers = &body[end..];
            if feature_name.is_empty() {
                return Err(malformed("empty feature name after `+` or `-`"));
            }
            let enable = sign == '+';
            if arch == Arch::X86_64 && feature_name == VNNI_GROUP {
                if enable {
                    features.insert_all(&VNNI_ADDED);
                } else {
                    features.remove_all(&VNNI_REMOVED);
                }
                continue;
            }
            let feature = Feature::from_name(arch, feature_name).ok_or_else(|| {
                let mut valid: Vec<&str> = Feature::all_for(arch).map(Feature::name).collect();
                if arch == Arch::X86_64 {
                    valid.push(VNNI_GROUP);
                }
                TargetError::UnknownFeature {
                    name: name.to_string(),
                    arch,
                    feature: feature_name.to_string(),
                    valid: valid.join(", "),
                }
            })?;
            if enable {
                features.insert(feature);
            } else {
                features.remove_all(&[feature]);
            }
        }

        check_features(name, precision, &features)?;
        Ok(Target {
            precision,
            features,
            native,
        })
    }

    /// The canonical name: `ARCH-PRECISION` plus the modifiers that turn the defaults into
    /// this target's features. `Target::parse(&t.name()) == Ok(t)`.
    pub fn name(&self) -> String {
        let arch = self.arch();
        let mut name = format!(
            "{}-{}",
            if self.native { "native" } else { arch.name() },
            self.precision
        );
        let mut base = self.baseline();
        if arch == Arch::X86_64 {
            if base.contains_any(&VNNI_REMOVED) && !self.features.contains_any(&VNNI_REMOVED) {
                name.push_str("-vnni");
                base.remove_all(&VNNI_REMOVED);
            } else if !base.contains_any(&VNNI_ADDED) && self.features.contains_all(&VNNI_ADDED) {
                name.push_str("+vnni");
                base.insert_all(&VNNI_ADDED);
            }
        }
        for feature in self.features.iter().filter(|f| !base.contains(*f)) {
            name.push('+');
            name.push_str(feature.name());
        }
        for feature in base.iter().filter(|f| !self.features.contains(*f)) {
            name.push('-');
            name.push_str(feature.name());
        }
        name
    }

    /// The features a name without modifiers would have.
    fn baseline(&self) -> FeatureSet {
        if self.native {
            // `parse` succeeded for this native target, so host detection succeeded too.
            host_features()
                .map(|(_, set)| set)
                .unwrap_or(FeatureSet::empty(self.arch()))
        } else {
            default_features(self.arch(), self.precision)
        }
    }

    pub fn arch(&self) -> Arch {
        self.features.arch()
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn features(&self) -> &FeatureSet {
        &self.features
    }

    /// Whether the generated code may use `feature` (false for another arch's features).
    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(feature)
    }

    /// Whether code for this target runs on this machine: same arch, and every feature the
    /// target assumes is one the host has (so `x86_64-fp32` runs on an AVX-512 host).
    pub fn runs_on_host(&self) -> bool {
        match host_features() {
            Ok((arch, host)) => {
                arch == self.arch() && self.features.iter().all(|f| host.contains(f))
            }
            Err(_) => false,
        }
    }

    /// Whether the target is the host, detected by `cranelift_native`.
    pub fn is_native(&self) -> bool {
        self.native
    }

    /// Width in bits of the vector registers the kernels use, for the cost model. 128 on
    /// every target: Cranelift 0.135 lowers 128-bit vector types only (SSE/AVX on xmm, NEON
    /// on q registers), even with AVX-512 enabled; wider kernels need hand-emitted code.
    pub fn vector_bits(&self) -> u32 {
        128
    }

    /// Whether a fused multiply-add on f32x4 is one instruction (`vfmadd*ps` needs `fma` on
    /// x86-64; without it Cranelift calls `fmaf` per lane). NEON's `fmla` is always present.
    pub fn fma(&self) -> bool {
        match self.arch() {
            Arch::X86_64 => self.has(Feature::Fma),
            Arch::Aarch64 => true,
        }
    }

    /// The Cranelift ISA for object files with the default options (`opt_level=speed`,
    /// `is_pic=true`, verifier in debug builds).
    pub fn isa(&self) -> Result<OwnedTargetIsa, TargetError> {
        self.isa_with(&IsaOptions::default())
    }

    /// The Cranelift ISA with every feature flag of the arch set explicitly (on or off), so
    /// presets and host detection cannot leave a flag on that the target removed.
    pub fn isa_with(&self, options: &IsaOptions) -> Result<OwnedTargetIsa, TargetError> {
        let target = self.name();
        let mut builder = if self.native {
            cranelift_native::builder().map_err(|reason| TargetError::UnsupportedHost {
                name: target.clone(),
                reason: reason.to_string(),
            })?
        } else {
            isa::lookup_by_name(self.arch().cross_triple()).map_err(|e| TargetError::IsaBuild {
                target: target.clone(),
                message: e.to_string(),
            })?
        };
        for feature in Feature::all_for(self.arch()) {
            let value = if self.has(feature) { "true" } else { "false" };
            builder
                .set(feature.cranelift_flag(), value)
                .map_err(|e| TargetError::IsaSetting {
                    target: target.clone(),
                    setting: feature.cranelift_flag(),
                    message: e.to_string(),
                })?;
        }

        let mut shared = settings::builder();
        let pic = if options.emission == Emission::Object {
            "true"
        } else {
            "false"
        };
        let shared_settings = [
            ("opt_level", options.opt_level.cranelift_value()),
            ("is_pic", pic),
            (
                "enable_verifier",
                if options.verifier { "true" } else { "false" },
            ),
            // Colocated libcalls assume a short call range the JIT cannot promise.
            ("use_colocated_libcalls", "false"),
        ];
        for (setting, value) in shared_settings {
            shared
                .set(setting, value)
                .map_err(|e| TargetError::IsaSetting {
                    target: target.clone(),
                    setting,
                    message: e.to_string(),
                })?;
        }
        builder
            .finish(settings::Flags::new(shared))
            .map_err(|e| TargetError::IsaBuild {
                target,
                message: e.to_string(),
            })
    }

    /// The targets `qcc targets` lists: the cross targets, then the host's if it has any.
    pub fn known_targets() -> Vec<TargetInfo> {
        const LISTED: [(&str, &str); 10] = [
            ("x86_64-fp32", "x86-64-v3 (AVX2, FMA), f32x4 kernels"),
            (
                "x86_64-int8",
                "x86-64-v3 + AVX-512 VNNI, int8 kernels with EVEX vpdpbusd",
            ),
            (
                "x86_64-int8-vnni",
                "x86-64-v3, int8 kernels without dot-product instructions",
            ),
            (
                "x86_64-int8+avx_vnni",
                "x86-64-v3 + AVX-512 VNNI + AVX-VNNI (VEX vpdpbusd)",
            ),
            ("aarch64-fp32", "Armv8.0-A with NEON, f32x4 kernels"),
            (
                "aarch64-int8",
                "Armv8.2-A dot product, int8 kernels with sdot (activations flipped to s8)",
            ),
            (
                "aarch64-int8+i8mm",
                "Armv8.6-A int8 matrix multiply, int8 kernels with usdot (u8 x s8)",
            ),
            ("aarch64-fp16", "Armv8.2-A FP16 arithmetic, f16x8 kernels"),
            (
                "native-fp32",
                "this machine (cranelift_native), fp32 kernels",
            ),
            (
                "native-int8",
                "this machine (cranelift_native), int8 kernels",
            ),
        ];
        let native_fp16 = [(
            "native-fp16",
            "this machine (cranelift_native), fp16 kernels",
        )];
        LISTED
            .iter()
            .chain(native_fp16.iter())
            .filter_map(|(name, description)| {
                // Native entries drop out on hosts that cannot be targets (or lack FP16).
                let target = Target::parse(name).ok()?;
                Some(TargetInfo {
                    name: target.name(),
                    description,
                    features: target.features,
                })
            })
            .collect()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(name: &str) -> Result<Target, TargetError> {
        Target::parse(name)
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// Rejects feature sets the kernels or the hardware cannot have.
fn check_features(
    name: &str,
    precision: Precision,
    features: &FeatureSet,
) -> Result<(), TargetError> {
    for feature in features.iter() {
        if let Some(missing) = feature
            .info()
            .requires
            .iter()
            .find(|r| !features.contains(**r))
        {
            return Err(TargetError::MissingPrerequisite {
                name: name.to_string(),
                feature,
                missing: *missing,
            });
        }
    }
    let arch = features.arch();
    let unsupported = |reason| TargetError::UnsupportedPrecision {
        name: name.to_string(),
        arch,
        precision,
        reason,
    };
    match (arch, precision) {
        (Arch::X86_64, Precision::Fp16) => Err(unsupported(
            "Cranelift 0.135 has no x86-64 half-precision arithmetic flag; use fp32",
        )),
        (Arch::Aarch64, Precision::Fp16) if !features.contains(Feature::Fp16) => Err(unsupported(
            "fp16 kernels need the `fp16` feature (FEAT_FP16)",
        )),
        _ => Ok(()),
    }
}

/// The host's arch and features as `cranelift_native` detects them, once per process.
fn host_features() -> Result<(Arch, FeatureSet), String> {
    static HOST: OnceLock<Result<(Arch, FeatureSet), String>> = OnceLock::new();
    HOST.get_or_init(detect_host_features).clone()
}

fn detect_host_features() -> Result<(Arch, FeatureSet), String> {
    let builder = cranelift_native::builder()?;
    let arch_name = builder.triple().architecture.to_string();
    let arch = Arch::from_name(&arch_name)
        .ok_or_else(|| format!("qcc generates code for x86_64 and aarch64, not {arch_name}"))?;
    let host_isa = builder
        .finish(settings::Flags::new(settings::builder()))
        .map_err(|e| format!("Cranelift could not build the host ISA: {e}"))?;
    let mut features = FeatureSet::empty(arch);
    for value in host_isa.isa_flags() {
        if value.as_bool() == Some(true) {
            if let Some(feature) = Feature::from_cranelift_flag(arch, value.name) {
                features.insert(feature);
            }
        }
    }
    // A virtual machine may report an extension while masking one it builds on; drop such
    // features so that `native` always validates (repeat: removals can cascade).
    loop {
        let dangling: Vec<Feature> = features
            .iter()
            .filter(|f| f.info().requires.iter().any(|r| !features.contains(*r)))
            .collect();
        if dangling.is_empty() {
            return Ok((arch, features));
        }
        features.remove_all(&dangling);
    }
}
