use std::collections::BTreeSet;

use super::*;

fn parse(text: &str) -> Graph {
    qcc_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("test graph: {e}\n{text}"))
}

fn gemm_relu_graph() -> Graph {
    parse(
        "graph g(%x: f32[1,3]) -> (%y) {
  %w = const f32[2,3] dense<1.0, -2.0, 3.0, 0.5, 0.25, -4.0>
  %h = Gemm(%x, %w) {trans_b=true}
  %y = Relu(%h)
}",
    )
}

/// Gemm, then a Split whose pieces meet again in a Concat, then a Reshape (a view) of the
/// Concat next to a Relu of it: every case where making a tensor an output changes the
/// memory plan (Split slices, Concat slices, views).
fn split_concat_view_graph() -> Graph {
    let weights: Vec<String> = (0..48)
        .map(|i| format!("{}", ((i * 7 % 13) as f32 - 6.0) / 4.0))
        .collect();
    parse(&format!(
        "graph g(%x: f32[1,8]) -> (%r, %y) {{
  %w = const f32[6,8] dense<{}>
  %h = Gemm(%x, %w) {{trans_b=true}}
  %a, %b = Split(%h) {{axis=1, sizes=[2,4]}}
  %ra = Relu(%a)
  %sb = Sigmoid(%b)
  %c = Concat(%ra, %sb) {{axis=1}}
  %r = Reshape(%c) {{shape=[1,2,3]}}
  %y = Relu(%c)
}}",
        weights.join(", ")
    ))
}

/// `x → Pad → Relu`: the fp32 back end compiles no Pad, so the compiled engine falls back.
fn pad_graph() -> Graph {
    parse(
        "graph g(%x: f32[1,2,3,3]) -> (%y) {
  %p = Pad(%x) {pads=[0,0,1,1,0,0,1,1], value=-1.5}
  %y = Relu(%p)
}",
    )
}

fn run(graph: &Graph, samples: usize, engine: CalibrationEngine) -> CalibrationRun {
    let source = DataSource::Synthetic {
        count: samples,
        seed: 11,
    };
    calibrate_run(Path::new("m.onnx"), graph, &source, None, false, engine).unwrap()
}

/// The statistics of both engines name the same tensors with the same counts, and their
/// ranges agree within the fp32 kernels' error (1e-4 relative to the tensor's magnitude).
fn assert_agree(compiled: &CalibrationStats, interpreted: &CalibrationStats) {
    let names = |s: &CalibrationStats| s.tensors.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(names(compiled), names(interpreted));
    assert_eq!(compiled.samples, interpreted.samples);
    assert_eq!(compiled.weights, interpreted.weights);
    for (name, want) in &interpreted.tensors {
        let got = &compiled.tensors[name];
        assert_eq!(got.count(), want.count(), "{name}");
        assert_eq!(got.non_finite(), want.non_finite(), "{name}");
        assert_eq!(got.histogram().total(), want.histogram().total(), "{name}");
        let tolerance = 1e-4 * want.max_abs().max(1e-6);
        for (got, want, what) in [
            (got.min(), want.min(), "min"),
            (got.max(), want.max(), "max"),
        ] {
            let (got, want) = (got.unwrap(), want.unwrap());
            assert!(
                (got - want).abs() <= tolerance,
                "{name}: {what} {got} (compiled) against {want} (interpreter)"
            );
        }
    }
}

#[test]
fn every_float_tensor_gets_statistics_and_weights_get_channel_ranges() {
    let g = gemm_relu_graph();
    for engine in [CalibrationEngine::Compiled, CalibrationEngine::Interpreter] {
        let source = DataSource::Synthetic { count: 5, seed: 3 };
        let run = calibrate_run(Path::new("dir/m.onnx"), &g, &source, None, false, engine).unwrap();
        assert_eq!(run.engine, engine);
        assert_eq!(run.fallback, None);
        let stats = run.stats;
        assert_eq!(stats.samples, 5);
        assert_eq!(stats.model, "m.onnx");
        assert!(stats.synthetic_inputs);
        for name in ["x", "h", "y"] {
            assert_eq!(
                stats.tensor(name).map(|t| t.count()),
                Some(5 * if name == "x" { 3 } else { 2 }),
                "{name}"
            );
        }
        assert!(stats.tensor("y").unwrap().min().unwrap() >= 0.0);
        let ranges = &stats.weights["w"];
        assert_eq!(ranges.min(), &[-2.0, -4.0]);
        assert_eq!(ranges.max(), &[3.0, 0.5]);
        // The file round-trips.
        let text = stats.to_json().unwrap();
        assert_eq!(CalibrationStats::from_json(&text).unwrap(), stats);
    }
}

#[test]
fn split_outputs_are_observed_through_copies_and_every_float_tensor_is_an_output() {
    let g = split_concat_view_graph();
    let (observed, names) = compiled::observation_graph(&g).unwrap();
    assert_eq!(names, ["h", "a", "b", "ra", "sb", "c", "r", "y"]);
    let output_names: Vec<&str> = observed
        .outputs()
        .iter()
        .map(|&v| observed.value(v).name.as_str())
        .collect();
    assert_eq!(
        output_names,
        [
            "h",
            "a.calibration_copy",
            "b.calibration_copy",
            "ra",
            "sb",
            "c",
            "r",
            "y"
        ]
    );
}

#[test]
fn compiled_statistics_agree_with_the_interpreter_on_splits_concats_and_views() {
    let g = split_concat_view_graph();
    let compiled = run(&g, 7, CalibrationEngine::Compiled);
    assert_eq!(compiled.engine, CalibrationEngine::Compiled);
    assert_eq!(compiled.fallback, None);
    let interpreted = run(&g, 7, CalibrationEngine::Interpreter);
    assert_eq!(interpreted.engine, CalibrationEngine::Interpreter);
    assert_eq!(compiled.stats.tensors.len(), 9, "x and the 8 node outputs");
    assert_agree(&compiled.stats, &interpreted.stats);
}

#[test]
fn compiled_statistics_agree_with_the_interpreter_on_resnet18() {
    let g = crate::zoo::build("resnet18", &crate::zoo::ZooOptions { seed: 5, batch: 1 }).unwrap();
    let compiled = run(&g, 2, CalibrationEngine::Compiled);
    assert_eq!(compiled.fallback, None);
    assert_eq!(compiled.engine, CalibrationEngine::Compiled);
    let interpreted = run(&g, 2, CalibrationEngine::Interpreter);
    // Convolutions, their activations, residual adds, pools, the classifier.
    assert!(
        compiled.stats.tensors.len() > 40,
        "{}",
        compiled.stats.tensors.len()
    );
    assert_agree(&compiled.stats, &interpreted.stats);
}

#[test]
fn a_graph_the_back_end_does_not_compile_falls_back_to_the_interpreter_and_says_why() {
    let g = pad_graph();
    let compiled = run(&g, 3, CalibrationEngine::Compiled);
    assert_eq!(compiled.engine, CalibrationEngine::Interpreter);
    let reason = compiled.fallback.expect("a fallback reason");
    assert!(reason.contains("Pad"), "{reason}");
    assert_eq!(
        fallback_warning(&reason),
        format!("qcc: warning: calibration runs the reference interpreter: {reason}")
    );
    // The statistics are the interpreter's, exactly.
    let interpreted = run(&g, 3, CalibrationEngine::Interpreter);
    assert_eq!(interpreted.fallback, None);
    assert_eq!(compiled.stats, interpreted.stats);
    assert_eq!(
        compiled.stats.tensor("p").map(|t| t.count()),
        Some(3 * 2 * 5 * 5)
    );
}
