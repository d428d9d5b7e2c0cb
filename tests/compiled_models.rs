//! Every zoo model and every ONNX light model compiled for this machine (JIT, `native-fp32`)
//! against the reference interpreter on the unoptimized graph: relative L2 error at most
//! 1e-4 on every output. The compiled path includes the pass pipeline, the memory plan and
//! every kernel family, so this is the end-to-end check of the fp32 back end.

mod common;

use qcc::compile::{lower_graph, JitModel};
use qcc::onnx::{import_file, ImportOptions};
use qcc_codegen::Target;
use qcc_ir::{Graph, Tensor};
use std::collections::HashMap;

const MAX_RELATIVE_L2: f64 = 1e-4;

fn random_inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = qcc::rng::SeededRng::new(seed);
    g.input_values()
        .iter()
        .map(|&v| {
            let value = g.value(v);
            (
                value.name.clone(),
                qcc::driver::random_tensor(&value.ty, &mut rng),
            )
        })
        .collect()
}

/// Compiles and runs `g`, compares with the interpreter; a summary line or what went wrong.
fn check(name: &str, g: Graph) -> Result<String, String> {
    let inputs = random_inputs(&g, 5);
    let map: HashMap<String, Tensor> = inputs.iter().cloned().collect();
    let expected = qcc_ir::eval::run(&g, &map).map_err(|e| format!("{name}: interpreter: {e}"))?;
    let target = Target::parse("native-fp32").map_err(|e| e.to_string())?;
    let mut lowered = lower_graph(g, &target, "model").map_err(|e| format!("{name}: {e}"))?;
    let fallbacks = lowered.model.fallbacks();
    if !fallbacks.is_empty() {
        return Err(format!("{name}: fallbacks: {}", fallbacks.join("; ")));
    }
    let jit = JitModel::new(&mut lowered).map_err(|e| format!("{name}: {e}"))?;
    let tensors: Vec<&Tensor> = inputs.iter().map(|(_, t)| t).collect();
    let actual = jit.run(&tensors).map_err(|e| format!("{name}: {e}"))?;
    let mut worst = 0.0f64;
    for ((out_name, a), e) in actual.iter().zip(&expected) {
        let a32 = a.as_f32().map_err(|e| e.to_string())?;
        if a32.iter().any(|x| !x.is_finite()) {
            return Err(format!("{name}: output '{out_name}' has non-finite values"));
        }
        worst = worst.max(common::relative_l2(a, e));
    }
    if worst.is_nan() || worst > MAX_RELATIVE_L2 {
        return Err(format!(
            "{name}: relative L2 {worst:.2e} > {MAX_RELATIVE_L2:e}"
        ));
    }
    Ok(format!(
        "{name}: relative L2 {worst:.1e}, {} layers, workspace {} B, {}",
        lowered.model.layers.len(),
        lowered.model.program.workspace_bytes,
        lowered.times.summary()
    ))
}

fn report(results: Vec<Result<String, String>>, what: &str) {
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for r in results.iter().flatten() {
        println!("{r}");
    }
    println!(
        "{what}: {} passed, {} failed",
        results.len() - failures.len(),
        failures.len()
    );
    let failures: Vec<&str> = failures.iter().map(|s| s.as_str()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn zoo_models_compiled_match_the_interpreter() {
    let mut results: Vec<Result<String, String>> = qcc::zoo::MODELS
        .iter()
        .map(|(name, _)| {
            let g = qcc::zoo::build(name, &qcc::zoo::ZooOptions { seed: 3, batch: 1 })
                .map_err(|e| format!("{name}: {e}"))?;
            check(name, g)
        })
        .collect();
    // Batch > 1 through every kernel family of the small model.
    results.push(
        qcc::zoo::build("tiny-cnn", &qcc::zoo::ZooOptions { seed: 4, batch: 3 })
            .map_err(|e| e.to_string())
            .and_then(|g| check("tiny-cnn batch 3", g)),
    );
    report(results, "compiled zoo models");
}

/// The light models' weights are constant fills (every output is a uniform softmax), so a
/// compiled graph could be wrong and still match. This gives every weight tensor seeded
/// random values (scaled by fan-in, so activations stay in range; rank-1 parameters such as
/// biases and batch-norm variances positive) and adds the input of each output Softmax as a
/// further output, so the comparison sees logits.
fn with_random_weights(g: Graph) -> Result<Graph, String> {
    let mut rng = qcc::rng::SeededRng::new(17);
    let mut random = |dims: &[usize]| -> Tensor {
        let numel: usize = dims.iter().product();
        let fan_in = (numel / dims.first().copied().unwrap_or(1).max(1)).max(1) as f64;
        let data: Vec<f32> = (0..numel)
            .map(|_| {
                let u = rng.uniform();
                if dims.len() == 1 {
                    (0.5 + u) as f32
                } else {
                    ((2.0 * u - 1.0) * (3.0 / fan_in).sqrt()) as f32
                }
            })
            .collect();
        Tensor::from_f32(dims, data)
    };
    let mut extra_outputs = Vec::new();
    let mut rebuilt = g
        .rebuild(|r, node| {
            let output = r.old().value(node.outputs[0]);
            // The fills: `ConstantOfShape` of a weight's shape.
            if matches!(node.op, qcc_ir::Op::ConstantOfShape { .. })
                && output.ty.dtype == qcc_ir::DType::F32
                && output.ty.dims().iter().product::<usize>() > 1
            {
                let name = output.name.clone();
                let dims = output.ty.dims().to_vec();
                return Ok(vec![r.new.add_constant(name, random(&dims))?]);
            }
            let outputs = r.copy_node(node)?;
            if matches!(node.op, qcc_ir::Op::Softmax { .. })
                && r.old().outputs().contains(&node.outputs[0])
            {
                extra_outputs.push(r.map(node.inputs[0])?);
            }
            Ok(outputs)
        })
        .map_err(|e| e.to_string())?;
    let mut outputs = rebuilt.outputs().to_vec();
    outputs.extend(extra_outputs);
    rebuilt.set_outputs(outputs);
    Ok(rebuilt)
}

#[test]
fn light_models_compiled_match_the_interpreter() {
    let dir = common::backend_data().join("light");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("light models")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 9,
        "light models missing in {}",
        dir.display()
    );
    let results = paths
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let g =
                import_file(p, &ImportOptions::default()).map_err(|e| format!("{name}: {e}"))?;
            let g = with_random_weights(g).map_err(|e| format!("{name}: {e}"))?;
            check(&name, g)
        })
        .collect();
    report(results, "compiled light models");
}
