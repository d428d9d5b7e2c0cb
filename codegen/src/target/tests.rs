//! Tests of target parsing, naming and the Cranelift ISAs built from targets.

use super::*;

fn parse(name: &str) -> Target {
    match Target::parse(name) {
        Ok(target) => target,
        Err(e) => panic!("{name} should parse: {e}"),
    }
}

fn parse_err(name: &str) -> TargetError {
    match Target::parse(name) {
        Ok(target) => panic!("{name} should not parse, got {target:?}"),
        Err(e) => e,
    }
}

/// The flag values of a built ISA, by name.
fn isa_flag(isa: &OwnedTargetIsa, flag: &str) -> bool {
    let value = isa.isa_flags().into_iter().find(|v| v.name == flag);
    match value.and_then(|v| v.as_bool()) {
        Some(on) => on,
        None => panic!("{} has no boolean ISA flag {flag}", isa.name()),
    }
}

fn host_has_cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == flag))
        })
        .unwrap_or(false)
}

#[test]
fn every_feature_names_a_real_cranelift_flag() {
    for arch in Arch::ALL {
        let builder = match isa::lookup_by_name(arch.cross_triple()) {
            Ok(builder) => builder,
            Err(e) => panic!("no Cranelift back end for {arch}: {e}"),
        };
        let flags: Vec<&str> = builder.iter().map(|s| s.name).collect();
        for feature in Feature::all_for(arch) {
            assert!(
                flags.contains(&feature.cranelift_flag()),
                "{arch}: {} is not a Cranelift 0.135 flag (flags: {flags:?})",
                feature.cranelift_flag()
            );
        }
    }
}

#[test]
fn feature_names_are_unique_per_arch_and_cover_all() {
    assert_eq!(
        Feature::ALL.len(),
        Feature::all_for(Arch::X86_64).count() + 5
    );
    for arch in Arch::ALL {
        for feature in Feature::all_for(arch) {
            assert_eq!(Feature::from_name(arch, feature.name()), Some(feature));
            let other = Arch::ALL.into_iter().find(|a| *a != arch);
            if let Some(other) = other {
                assert_eq!(Feature::from_name(other, feature.name()), None);
            }
        }
    }
}

#[test]
fn known_targets_parse_round_trip_and_build() {
    let known = Target::known_targets();
    assert!(known.len() >= 8, "{known:?}");
    for info in &known {
        let target = parse(&info.name);
        assert_eq!(target.name(), info.name, "canonical name of {}", info.name);
        assert_eq!(parse(&target.name()), target);
        assert_eq!(*target.features(), info.features);
        if let Err(e) = target.isa() {
            panic!("{}: {e}", info.name);
        }
    }
    for cross in [
        "x86_64-fp32",
        "x86_64-int8",
        "aarch64-fp32",
        "aarch64-int8",
        "aarch64-fp16",
    ] {
        assert!(
            known.iter().any(|i| i.name == cross),
            "{cross} missing from {known:?}"
        );
    }
}

#[test]
fn names_round_trip_with_modifiers() {
    let cases = [
        ("x86_64-fp32", "x86_64-fp32"),
        ("X86_64-FP32", "x86_64-fp32"),
        ("amd64-fp32", "x86_64-fp32"),
        ("arm64-int8", "aarch64-int8"),
        ("x86_64-int8-vnni", "x86_64-int8-vnni"),
        ("x86_64-int8-vnni+vnni", "x86_64-int8"),
        ("x86_64-fp32+vnni", "x86_64-fp32+vnni"),
        ("x86_64-int8+avxvnni", "x86_64-int8+avx_vnni"),
        ("x86_64-int8-avx512vnni", "x86_64-int8-avx512vnni"),
        ("x86_64-fp32-fma+sse4.1", "x86_64-fp32-fma"),
        ("aarch64-int8+i8mm", "aarch64-int8+i8mm"),
        ("aarch64-int8-dotprod+i8mm", "aarch64-int8+i8mm-dotprod"),
        ("aarch64-fp16", "aarch64-fp16"),
        ("aarch64-fp32+lse+fp16", "aarch64-fp32+lse+fp16"),
    ];
    for (spelled, canonical) in cases {
        let target = parse(spelled);
        assert_eq!(target.name(), canonical, "canonical name of {spelled}");
        assert_eq!(parse(canonical), target, "{canonical} reparses");
        assert_eq!(target.to_string(), canonical);
        assert_eq!(canonical.parse::<Target>(), Ok(target));
    }
}

#[test]
fn defaults_per_arch_and_precision() {
    let fp32 = parse("x86_64-fp32");
    assert_eq!(fp32.arch(), Arch::X86_64);
    assert_eq!(fp32.precision(), Precision::Fp32);
    assert_eq!(*fp32.features(), FeatureSet::of(Arch::X86_64, &X86_64_V3));
    assert!(fp32.fma() && !fp32.has(Feature::Avx512f) && !fp32.is_native());

    let int8 = parse("x86_64-int8");
    assert!(VNNI_ADDED.iter().all(|f| int8.has(*f)));
    assert!(!int8.has(Feature::AvxVnni), "AVX-VNNI is opt-in");
    let no_vnni = parse("x86_64-int8-vnni");
    assert_eq!(
        no_vnni.features(),
        fp32.features(),
        "-vnni leaves the AVX2 level"
    );
    assert_eq!(no_vnni.precision(), Precision::Int8);

    let arm_int8 = parse("aarch64-int8");
    assert!(arm_int8.has(Feature::Dotprod) && !arm_int8.has(Feature::I8mm));
    assert!(parse("aarch64-int8+i8mm").has(Feature::I8mm));
    assert!(parse("aarch64-fp16").has(Feature::Fp16));
    assert!(parse("aarch64-fp32").features().is_empty());
    assert!(
        !arm_int8.has(Feature::Avx2),
        "other arch's features are never set"
    );
    assert!(!parse("x86_64-fp32-fma").fma());
    for name in ["x86_64-fp32", "aarch64-int8"] {
        assert_eq!(parse(name).vector_bits(), 128);
    }
}

#[test]
fn isa_sets_exactly_the_target_flags() {
    for name in [
        "x86_64-fp32",
        "x86_64-int8",
        "x86_64-int8-vnni",
        "x86_64-int8+avx_vnni",
        "x86_64-fp32-fma",
        "aarch64-fp32",
        "aarch64-int8+i8mm",
        "aarch64-fp16+pauth",
        "native-fp32",
        "native-int8-vnni",
    ] {
        let target = parse(name);
        let isa = match target.isa() {
            Ok(isa) => isa,
            Err(e) => panic!("{name}: {e}"),
        };
        let expected_isa = match target.arch() {
            Arch::X86_64 => "x64",
            Arch::Aarch64 => "aarch64",
        };
        assert_eq!(isa.name(), expected_isa, "{name}");
        assert!(
            isa.flags().is_pic(),
            "{name}: objects must be position independent"
        );
        assert_eq!(isa.flags().opt_level(), settings::OptLevel::Speed);
        for feature in Feature::all_for(target.arch()) {
            assert_eq!(
                isa_flag(&isa, feature.cranelift_flag()),
                target.has(feature),
                "{name}: {}",
                feature.cranelift_flag()
            );
        }
    }
}

#[test]
fn isa_options_reach_the_shared_flags() {
    let target = parse("x86_64-fp32");
    let options = IsaOptions {
        opt_level: OptLevel::None,
        verifier: false,
        emission: Emission::Jit,
    };
    let isa = match target.isa_with(&options) {
        Ok(isa) => isa,
        Err(e) => panic!("{e}"),
    };
    assert!(!isa.flags().is_pic(), "cranelift-jit needs is_pic=false");
    assert_eq!(isa.flags().opt_level(), settings::OptLevel::None);
    assert!(!isa.flags().enable_verifier());
    assert!(!isa.flags().use_colocated_libcalls());
}

#[test]
fn errors_name_the_bad_part_and_list_choices() {
    match parse_err("sparc-fp32") {
        TargetError::UnknownArch { arch, valid, .. } => {
            assert_eq!(arch, "sparc");
            assert!(
                valid.contains("x86_64") && valid.contains("native"),
                "{valid}"
            );
        }
        other => panic!("{other:?}"),
    }
    match parse_err("x86_64-fp64+avx") {
        TargetError::UnknownPrecision {
            precision, valid, ..
        } => {
            assert_eq!(precision, "fp64");
            assert_eq!(valid, "fp32, int8, fp16");
        }
        other => panic!("{other:?}"),
    }
    match parse_err("aarch64-int8+avx2") {
        TargetError::UnknownFeature {
            arch,
            feature,
            valid,
            ..
        } => {
            assert_eq!((arch, feature.as_str()), (Arch::Aarch64, "avx2"));
            assert!(valid.contains("i8mm") && !valid.contains("vnni"), "{valid}");
        }
        other => panic!("{other:?}"),
    }
    let message = parse_err("x86_64-int8+sve").to_string();
    assert!(
        message.contains("`sve`") && message.contains("avx512vnni"),
        "{message}"
    );
    assert!(matches!(parse_err("x86_64"), TargetError::Malformed { .. }));
    assert!(matches!(
        parse_err("x86_64-fp32+"),
        TargetError::Malformed { .. }
    ));
    assert!(matches!(parse_err(""), TargetError::Malformed { .. }));
}

#[test]
fn inconsistent_feature_sets_are_rejected() {
    match parse_err("x86_64-int8-avx512f") {
        TargetError::MissingPrerequisite {
            feature, missing, ..
        } => {
            assert_eq!(missing, Feature::Avx512f);
            assert!(VNNI_ADDED.contains(&feature), "{feature}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_err("x86_64-fp32+avx512vnni"),
        TargetError::MissingPrerequisite {
            feature: Feature::Avx512vnni,
            ..
        }
    ));
    assert!(matches!(
        parse_err("x86_64-fp16"),
        TargetError::UnsupportedPrecision {
            arch: Arch::X86_64,
            ..
        }
    ));
    assert!(matches!(
        parse_err("aarch64-fp16-fp16"),
        TargetError::UnsupportedPrecision {
            precision: Precision::Fp16,
            ..
        }
    ));
}

#[test]
fn native_reports_host_features() {
    let target = parse("native-fp32");
    assert!(target.is_native());
    assert_eq!(target.name(), "native-fp32");
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(target.arch(), Arch::X86_64);
        assert_eq!(
            target.has(Feature::Avx2),
            std::is_x86_feature_detected!("avx2")
        );
        assert_eq!(
            target.has(Feature::Fma),
            std::is_x86_feature_detected!("fma")
        );
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(target.arch(), Arch::Aarch64);
    if host_has_cpu_flag("avx512_vnni") {
        assert!(
            target.has(Feature::Avx512vnni),
            "host has avx512_vnni: {}",
            target.features()
        );
        let without = parse("native-int8-vnni");
        assert!(!without.has(Feature::Avx512vnni) && !without.has(Feature::Avx512f));
        assert_eq!(without.name(), "native-int8-vnni");
        assert_eq!(parse(&without.name()), without);
    }
    if host_has_cpu_flag("avx_vnni") {
        assert!(target.has(Feature::AvxVnni));
    }
}
