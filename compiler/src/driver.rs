//! The compiler driver: load a model, prepare inputs, run it. The CLI (`main.rs`) is a thin
//! layer over these functions so that tests exercise the same paths.

use crate::npy;
use crate::onnx::{import_file, ImportError, ImportOptions};
use crate::rng::SeededRng;
use qcc_ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Npy(#[from] npy::NpyError),
    #[error(transparent)]
    Eval(#[from] qcc_ir::eval::EvalError),
    #[error(transparent)]
    Graph(#[from] qcc_ir::GraphError),
    #[error(transparent)]
    Pass(#[from] qcc_passes::PassError),
    #[error("--input {spec}: {message}")]
    InputSpec { spec: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// Imports an ONNX model with the batch dimension bound to `batch`.
pub fn load_model(path: &Path, batch: usize) -> Result<Graph, DriverError> {
    if batch == 0 {
        return Err(DriverError::Other("--batch must be at least 1".into()));
    }
    let opts = ImportOptions {
        batch,
        ..ImportOptions::default()
    };
    let g = import_file(path, &opts)?;
    // `--batch` binds a symbolic batch dimension; a model without one would silently keep
    // its own batch (and `qcc bench` would count samples wrongly).
    let symbolic = g
        .inputs()
        .iter()
        .any(|i| matches!(i.declared.first(), Some(qcc_ir::Dim::Symbolic(_))));
    if batch != 1 && !symbolic {
        return Err(DriverError::Other(format!(
            "{}: --batch {batch} needs an input with a symbolic first dimension; this model's \
             batch is fixed (e.g. write zoo models with `qcc zoo --dynamic-batch`)",
            path.display()
        )));
    }
    Ok(g)
}

/// Pipeline options for a target: the e-graph extracts with the target's cost model
/// (`generic-cpu` when no target is given or none was measured for it).
pub fn pipeline_options(target: Option<&qcc_codegen::Target>) -> qcc_passes::PipelineOptions {
    let mut opts = qcc_passes::PipelineOptions::default();
    if let Some(t) = target {
        opts.egraph.cost_model =
            qcc_passes::egraph::CostModel::for_target(t.arch().name(), t.precision().name());
    }
    opts
}

/// Parses a `--target` name.
pub fn parse_target(name: &str) -> Result<qcc_codegen::Target, DriverError> {
    qcc_codegen::Target::parse(name)
        .map_err(|e| DriverError::Other(format!("--target {name}: {e}")))
}

/// Runs the standard pass pipeline on `g`; returns what each pass did. `dump` receives the
/// graph after every run of the pass named `dump_after`; an unknown name is an error listing
/// the pipeline's passes. Pass warnings go to stderr.
pub fn optimize(
    g: &mut Graph,
    opts: &qcc_passes::PipelineOptions,
    dump_after: Option<&str>,
    dump: Option<qcc_passes::DumpFn>,
) -> Result<Vec<qcc_passes::PassReport>, DriverError> {
    let pm = qcc_passes::default_pipeline(opts);
    let reports = pm.run(g, dump_after, dump)?;
    // Warnings reach stderr whatever the output format, so they are never missed.
    for r in &reports {
        for note in &r.notes {
            eprintln!("qcc: warning: pass '{}': {note}", r.pass);
        }
    }
    Ok(reports)
}

/// Parses `NAME=FILE.npy` arguments.
pub fn parse_input_specs(specs: &[String]) -> Result<Vec<(String, PathBuf)>, DriverError> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((name, file)) if !name.is_empty() && !file.is_empty() => {
                Ok((name.to_string(), PathBuf::from(file)))
            }
            _ => Err(DriverError::InputSpec {
                spec: s.clone(),
                message: "expected NAME=FILE.npy".into(),
            }),
        })
        .collect()
}

/// A seeded random tensor: standard normal floats; integers uniform over their type's range
/// (i32/i64 over 0..=9, as such inputs are usually indices).
pub fn random_tensor(ty: &TensorType, rng: &mut SeededRng) -> Tensor {
    let n = ty.shape.numel();
    let f32s = |rng: &mut SeededRng| (0..n).map(|_| rng.normal()).collect::<Vec<f32>>();
    let ints = |rng: &mut SeededRng, lo: i64, hi: i64| {
        (0..n).map(|_| rng.int_in(lo, hi)).collect::<Vec<i64>>()
    };
    let bytes: Vec<u8> = match ty.dtype {
        DType::F32 => f32s(rng).iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => f32s(rng)
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::I8 => ints(rng, -128, 127)
            .iter()
            .map(|&v| v as i8 as u8)
            .collect(),
        DType::U8 => ints(rng, 0, 255).iter().map(|&v| v as u8).collect(),
        DType::I32 => ints(rng, 0, 9)
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        DType::I64 => ints(rng, 0, 9)
            .iter()
            .flat_map(|&v| v.to_le_bytes())
            .collect(),
        DType::Bool => ints(rng, 0, 1).iter().map(|&v| v as u8).collect(),
    };
    Tensor::from_le_bytes(ty, &bytes).expect("generated exactly the bytes the type needs")
}

/// What `prepare_inputs` did for each input, so the CLI can tell the user.
pub enum InputSource {
    File(PathBuf),
    Random { seed: u64 },
}

/// One tensor per graph input: from the given files, or seeded random for the rest.
pub fn prepare_inputs(
    g: &Graph,
    files: &[(String, PathBuf)],
    seed: u64,
) -> Result<Vec<(String, Tensor, InputSource)>, DriverError> {
    let mut given: HashMap<&str, &PathBuf> = HashMap::new();
    for (name, path) in files {
        if g.value_by_name(name)
            .is_none_or(|v| !g.input_values().contains(&v))
        {
            let names: Vec<&str> = g
                .input_values()
                .iter()
                .map(|&v| g.value(v).name.as_str())
                .collect();
            return Err(DriverError::InputSpec {
                spec: format!("{name}={}", path.display()),
                message: format!(
                    "the model has no input '{name}' (inputs: {})",
                    names.join(", ")
                ),
            });
        }
        given.insert(name, path);
    }
    let mut rng = SeededRng::new(seed);
    let mut out = Vec::new();
    for v in g.input_values() {
        let val = g.value(v);
        let (t, source) = match given.get(val.name.as_str()) {
            Some(path) => {
                let t = npy::read(path)?;
                if t.ty() != val.ty {
                    return Err(DriverError::InputSpec {
                        spec: format!("{}={}", val.name, path.display()),
                        message: format!("the file holds {}, the model expects {}", t.ty(), val.ty),
                    });
                }
                (t, InputSource::File(path.to_path_buf()))
            }
            None => (
                random_tensor(&val.ty, &mut rng),
                InputSource::Random { seed },
            ),
        };
        out.push((val.name.clone(), t, source));
    }
    Ok(out)
}

/// Runs the graph in the reference interpreter; outputs paired with their names.
pub fn run_reference(
    g: &Graph,
    inputs: &[(String, Tensor, InputSource)],
) -> Result<Vec<(String, Tensor)>, DriverError> {
    let map: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t, _)| (n.clone(), t.clone()))
        .collect();
    let outs = qcc_ir::eval::run(g, &map)?;
    Ok(g.outputs()
        .iter()
        .map(|&o| g.value(o).name.clone())
        .zip(outs)
        .collect())
}
