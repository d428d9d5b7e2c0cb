//! The architectures, precisions and ISA features a target is made of.

use std::fmt;

/// An instruction-set architecture qcc generates code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The triple cross targets are built for.
    pub(super) fn cross_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Arch> {
        match name {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The arithmetic the kernels of a target compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    Fp32,
    Int8,
    Fp16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Int8, Precision::Fp16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Fp16 => "fp16",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ISA extension that maps to one boolean Cranelift ISA flag (`has_<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    // x86-64
    Cmpxchg16b,
    Sse3,
    Ssse3,
    Sse41,
    Sse42,
    Popcnt,
    Avx,
    Avx2,
    Fma,
    Bmi1,
    Bmi2,
    Lzcnt,
    Avx512f,
    Avx512vl,
    Avx512dq,
    Avx512vbmi,
    Avx512bitalg,
    Avx512vnni,
    AvxVnni,
    // aarch64
    Lse,
    Pauth,
    Fp16,
    Dotprod,
    I8mm,
}

/// Everything known about one feature, kept in one `match` so a new feature cannot be half
/// described.
pub(super) struct FeatureInfo {
    pub(super) arch: Arch,
    /// `has_<name>`: the feature's name in target names is the flag without `has_`.
    pub(super) cranelift_flag: &'static str,
    /// Features that must also be enabled; checked when a target is parsed.
    pub(super) requires: &'static [Feature],
    pub(super) description: &'static str,
}

impl Feature {
    pub const ALL: [Feature; 24] = [
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
        Feature::Avx512f,
        Feature::Avx512vl,
        Feature::Avx512dq,
        Feature::Avx512vbmi,
        Feature::Avx512bitalg,
        Feature::Avx512vnni,
        Feature::AvxVnni,
        Feature::Lse,
        Feature::Pauth,
        Feature::Fp16,
        Feature::Dotprod,
        Feature::I8mm,
    ];

    pub(super) fn info(self) -> FeatureInfo {
        use Feature::*;
        const X86: Arch = Arch::X86_64;
        const ARM: Arch = Arch::Aarch64;
        let (arch, cranelift_flag, requires, description): (Arch, _, &[Feature], _) = match self {
            Cmpxchg16b => (X86, "has_cmpxchg16b", &[], "CMPXCHG16B"),
            Sse3 => (X86, "has_sse3", &[], "SSE3"),
            Ssse3 => (X86, "has_ssse3", &[Sse3], "SSSE3"),
            Sse41 => (X86, "has_sse41", &[Ssse3], "SSE4.1"),
            Sse42 => (X86, "has_sse42", &[Sse41], "SSE4.2"),
            Popcnt => (X86, "has_popcnt", &[], "POPCNT"),
            Avx => (X86, "has_avx", &[Sse42], "AVX (VEX encoding)"),
            Avx2 => (X86, "has_avx2", &[Avx], "AVX2"),
            Fma => (X86, "has_fma", &[Avx], "FMA3 (vfmadd*ps)"),
            Bmi1 => (X86, "has_bmi1", &[], "BMI1"),
            Bmi2 => (X86, "has_bmi2", &[], "BMI2"),
            Lzcnt => (X86, "has_lzcnt", &[], "LZCNT"),
            Avx512f => (X86, "has_avx512f", &[Avx2, Fma], "AVX-512 Foundation"),
            Avx512vl => (X86, "has_avx512vl", &[Avx512f], "AVX-512 on xmm/ymm (EVEX)"),
            Avx512dq => (X86, "has_avx512dq", &[Avx512f], "AVX-512 DQ"),
            Avx512vbmi => (X86, "has_avx512vbmi", &[Avx512f], "AVX-512 VBMI"),
            Avx512bitalg => (X86, "has_avx512bitalg", &[Avx512f], "AVX-512 BITALG"),
            Avx512vnni => (
                X86,
                "has_avx512vnni",
                &[Avx512f],
                "AVX-512 VNNI (EVEX vpdpbusd)",
            ),
            AvxVnni => (X86, "has_avx_vnni", &[Avx2], "AVX-VNNI (VEX vpdpbusd)"),
            Lse => (ARM, "has_lse", &[], "Large System Extensions (atomics)"),
            Pauth => (ARM, "has_pauth", &[], "pointer authentication"),
            Fp16 => (ARM, "has_fp16", &[], "half-precision arithmetic"),
            Dotprod => (ARM, "has_dotprod", &[], "i8 dot product (sdot/udot)"),
            I8mm => (ARM, "has_i8mm", &[], "int8 matrix multiply (usdot)"),
        };
        FeatureInfo {
            arch,
            cranelift_flag,
            requires,
            description,
        }
    }

    /// Other spellings `parse` accepts (LLVM/Rust style).
    pub(super) fn aliases(self) -> &'static [&'static str] {
        match self {
            Feature::Sse41 => &["sse4.1"],
            Feature::Sse42 => &["sse4.2"],
            Feature::Fma => &["fma3"],
            Feature::AvxVnni => &["avxvnni"],
            _ => &[],
        }
    }

    pub fn arch(self) -> Arch {
        self.info().arch
    }

    /// The name used in target names (`+avx512vnni`).
    pub fn name(self) -> &'static str {
        let flag = self.cranelift_flag();
        flag.strip_prefix("has_").unwrap_or(flag)
    }

    /// The Cranelift ISA flag this feature sets.
    pub fn cranelift_flag(self) -> &'static str {
        self.info().cranelift_flag
    }

    pub fn description(self) -> &'static str {
        self.info().description
    }

    /// Every feature of one architecture, in a stable order.
    pub fn all_for(arch: Arch) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| f.arch() == arch)
    }

    pub(super) fn from_name(arch: Arch, name: &str) -> Option<Feature> {
        Feature::all_for(arch).find(|f| f.name() == name || f.aliases().contains(&name))
    }

    pub(super) fn from_cranelift_flag(arch: Arch, flag: &str) -> Option<Feature> {
        Feature::all_for(arch).find(|f| f.cranelift_flag() == flag)
    }

    pub(super) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The enabled ISA features of one architecture. Holds only features of its `arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureSet {
    pub(super) arch: Arch,
    pub(super) bits: u32,
}

impl FeatureSet {
    pub(super) fn empty(arch: Arch) -> FeatureSet {
        FeatureSet { arch, bits: 0 }
    }

    pub(super) fn of(arch: Arch, features: &[Feature]) -> FeatureSet {
        let mut set = FeatureSet::empty(arch);
        set.insert_all(features);
        set
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn contains(&self, feature: Feature) -> bool {
        self.bits & feature.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// The enabled features, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = Feature> + '_ {
        Feature::ALL.into_iter().filter(|f| self.contains(*f))
    }

    pub(super) fn insert(&mut self, feature: Feature) {
        debug_assert_eq!(
            feature.arch(),
            self.arch,
            "feature {feature} in a {} set",
            self.arch
        );
        if feature.arch() == self.arch {
            self.bits |= feature.bit();
        }
    }

    pub(super) fn insert_all(&mut self, features: &[Feature]) {
        features.iter().for_each(|f| self.insert(*f));
    }

    pub(super) fn remove_all(&mut self, features: &[Feature]) {
        features.iter().for_each(|f| self.bits &= !f.bit());
    }

    pub(super) fn contains_any(&self, features: &[Feature]) -> bool {
        features.iter().any(|f| self.contains(*f))
    }

    pub(super) fn contains_all(&self, features: &[Feature]) -> bool {
        features.iter().all(|f| self.contains(*f))
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Feature::name).collect();
        f.write_str(&names.join(" "))
    }
}
