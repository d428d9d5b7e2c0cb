//! Compiling a model for a target: import, the pass pipeline with the target's cost model,
//! lowering onto the memory plan, then either JIT (in process) or an object file and header.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qcc_codegen::model::{self, c_header, AlignedBuffer, HeaderInfo, JitProgram, LoweredModel};
use qcc_codegen::{IsaOptions, Target};
use qcc_ir::{Graph, Tensor};

use crate::driver::{self, DriverError};
use crate::quant_args::QuantArgs;
use qcc_passes::quant::Quantization;

/// Time spent in each stage of a compilation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompileTimes {
    pub import: Duration,
    pub passes: Duration,
    pub lower: Duration,
    /// Cranelift code generation and emission (JIT or object).
    pub codegen: Duration,
}

impl CompileTimes {
    pub fn total(&self) -> Duration {
        self.import + self.passes + self.lower + self.codegen
    }

    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "compile time: {:.0} ms (import {:.0}, passes {:.0}, lowering {:.0}, codegen {:.0})",
            ms(self.total()),
            ms(self.import),
            ms(self.passes),
            ms(self.lower),
            ms(self.codegen)
        )
    }
}

/// A model imported, optimized and lowered for a target.
pub struct Lowered {
    pub graph: Graph,
    pub model: LoweredModel,
    pub target: Target,
    pub times: CompileTimes,
}

/// Cranelift options for generated models: the verifier only in debug builds (it roughly
/// doubles code generation time), and `opt_level=none`, which keeps the hand-scheduled order
/// of the micro-kernels: at `speed` Cranelift hoists every load of an unrolled GEMM step to
/// the top and spills, and the conv and GEMM kernels lose about 40% (measured: 3×3 conv
/// 64→64 at 56×56, 52 GFLOP/s at none against 28 at speed).
pub fn isa_options() -> IsaOptions {
    IsaOptions {
        opt_level: qcc_codegen::OptLevel::None,
        verifier: cfg!(debug_assertions),
        ..IsaOptions::default()
    }
}

/// Imports `path`, runs the pass pipeline for `target` and lowers the graph; `name` prefixes
/// the generated symbols. Fallbacks (layers run slower or less precisely than the target
/// promises) are printed on stderr.
pub fn lower_model(
    path: &Path,
    target: &Target,
    batch: usize,
    name: &str,
    quant: &QuantArgs,
) -> Result<Lowered, DriverError> {
    let start = Instant::now();
    let graph = driver::load_model(path, batch)?;
    let import = start.elapsed();
    let quantize = if qcc_passes::quant::is_prequantized(&graph) {
        quant.check_prequantized(path, target)?;
        None
    } else {
        quant.options(path, target)?
    };
    let mut lowered = lower_graph_quantized(graph, target, name, quantize)
        .map_err(|e| DriverError::Other(format!("{}: {e}", path.display())))?;
    lowered.times.import = import;
    Ok(lowered)
}

/// As [`lower_model`] for a float graph already in memory (every dim bound).
pub fn lower_graph(graph: Graph, target: &Target, name: &str) -> Result<Lowered, DriverError> {
    lower_graph_quantized(graph, target, name, None)
}

/// As [`lower_model`] for a graph already in memory, quantized by `quantize` (int8 targets).
pub fn lower_graph_quantized(
    mut graph: Graph,
    target: &Target,
    name: &str,
    quantize: Option<Quantization>,
) -> Result<Lowered, DriverError> {
    let mut times = CompileTimes::default();
    let start = Instant::now();
    let mut options = driver::pipeline_options(Some(target));
    options.quantize = quantize;
    driver::optimize(&mut graph, &options, None, None)?;
    times.passes = start.elapsed();
    let start = Instant::now();
    let model =
        model::lower_graph(&graph, target, name).map_err(|e| DriverError::Other(e.to_string()))?;
    times.lower = start.elapsed();
    for note in model.fallbacks() {
        eprintln!("qcc: warning: {note}");
    }
    Ok(Lowered {
        graph,
        model,
        target: *target,
        times,
    })
}

/// A compiled model running in this process.
pub struct JitModel {
    pub program: JitProgram,
    pub inputs: Vec<model::IoTensor>,
    pub outputs: Vec<model::IoTensor>,
}

impl JitModel {
    /// Compiles `lowered` into executable memory; `lowered.times.codegen` is set.
    pub fn new(lowered: &mut Lowered) -> Result<JitModel, DriverError> {
        JitModel::build(lowered, false)
    }

    /// As [`JitModel::new`], with one entry per layer too, for [`crate::bench::profile_layers`].
    pub fn with_layer_entries(lowered: &mut Lowered) -> Result<JitModel, DriverError> {
        JitModel::build(lowered, true)
    }

    fn build(lowered: &mut Lowered, per_step: bool) -> Result<JitModel, DriverError> {
        if !lowered.target.runs_on_host() {
            return Err(DriverError::Other(format!(
                "target {} does not run on this machine; use `qcc compile` for it, or a \
                 `native-*` target to run here",
                lowered.target.name()
            )));
        }
        let start = Instant::now();
        let build = if per_step {
            JitProgram::with_steps
        } else {
            JitProgram::new
        };
        let program = build(&lowered.target, &isa_options(), &lowered.model.program)
            .map_err(|e| DriverError::Other(e.to_string()))?;
        lowered.times.codegen = start.elapsed();
        Ok(JitModel {
            program,
            inputs: lowered.model.inputs.clone(),
            outputs: lowered.model.outputs.clone(),
        })
    }

    /// Input buffers holding `tensors` (in the model's input order, types checked).
    pub fn input_buffers(&self, tensors: &[&Tensor]) -> Result<Vec<AlignedBuffer>, DriverError> {
        if tensors.len() != self.inputs.len() {
            return Err(DriverError::Other(format!(
                "the model takes {} inputs, got {}",
                self.inputs.len(),
                tensors.len()
            )));
        }
        self.inputs
            .iter()
            .zip(tensors)
            .map(|(spec, t)| {
                if t.dims() != spec.dims.as_slice() || t.dtype() != spec.dtype {
                    return Err(DriverError::Other(format!(
                        "input '{}': expected {} {:?}, got {}",
                        spec.name,
                        spec.dtype.name(),
                        spec.dims,
                        t.ty()
                    )));
                }
                let bytes = t.to_le_bytes();
                let mut buffer = AlignedBuffer::new(bytes.len());
                buffer.as_bytes_mut().copy_from_slice(&bytes);
                Ok(buffer)
            })
            .collect()
    }

    pub fn output_buffers(&self) -> Vec<AlignedBuffer> {
        self.outputs
            .iter()
            .map(|o| AlignedBuffer::new(o.bytes()))
            .collect()
    }

    pub fn workspace(&self) -> AlignedBuffer {
        AlignedBuffer::new(self.program.workspace_bytes())
    }

    /// Runs once on prepared buffers.
    pub fn run_buffers(
        &self,
        inputs: &[AlignedBuffer],
        outputs: &mut [AlignedBuffer],
        workspace: &mut AlignedBuffer,
    ) -> Result<(), DriverError> {
        let input_refs: Vec<&AlignedBuffer> = inputs.iter().collect();
        let mut output_refs: Vec<&mut AlignedBuffer> = outputs.iter_mut().collect();
        self.program
            .run(&input_refs, &mut output_refs, workspace)
            .map_err(|e| DriverError::Other(e.to_string()))
    }

    /// Runs once on tensors; outputs paired with their names.
    pub fn run(&self, tensors: &[&Tensor]) -> Result<Vec<(String, Tensor)>, DriverError> {
        let inputs = self.input_buffers(tensors)?;
        let mut outputs = self.output_buffers();
        let mut workspace = self.workspace();
        self.run_buffers(&inputs, &mut outputs, &mut workspace)?;
        self.outputs
            .iter()
            .zip(&outputs)
            .map(|(spec, buffer)| {
                let ty = qcc_ir::TensorType::new(spec.dtype, spec.dims.clone());
                Tensor::from_le_bytes(&ty, buffer.as_bytes())
                    .map(|t| (spec.name.clone(), t))
                    .ok_or_else(|| {
                        DriverError::Other(format!("output '{}' is malformed", spec.name))
                    })
            })
            .collect()
    }
}

/// Paths written by [`write_object`].
pub struct ObjectFiles {
    pub object: PathBuf,
    pub header: PathBuf,
}

/// Writes `DIR/NAME.o` and `DIR/NAME.h`; `lowered.times.codegen` is set.
pub fn write_object(
    lowered: &mut Lowered,
    source: &Path,
    dir: &Path,
) -> Result<ObjectFiles, DriverError> {
    let name = lowered.model.program.name.clone();
    let start = Instant::now();
    let bytes = model::object_program(&lowered.target, &isa_options(), &lowered.model.program)
        .map_err(|e| DriverError::Other(e.to_string()))?;
    lowered.times.codegen = start.elapsed();
    let header = c_header(&HeaderInfo {
        name: &name,
        target: &lowered.target.name(),
        source: &source.display().to_string(),
        inputs: &lowered.model.inputs,
        outputs: &lowered.model.outputs,
        workspace_bytes: lowered.model.program.workspace_bytes,
        weights_bytes: lowered.model.weights_bytes,
    })
    .map_err(|e| DriverError::Other(format!("{}: {e}", source.display())))?;
    let io =
        |path: &Path, e: std::io::Error| DriverError::Other(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = ObjectFiles {
        object: dir.join(format!("{name}.o")),
        header: dir.join(format!("{name}.h")),
    };
    std::fs::write(&files.object, bytes).map_err(|e| io(&files.object, e))?;
    std::fs::write(&files.header, header).map_err(|e| io(&files.header, e))?;
    Ok(files)
}

/// The `--report` text: target, compile times, memory (weights, arena, scratch) and one line
/// per layer with its kernel choice; fallbacks flagged.
pub fn report(lowered: &Lowered) -> String {
    use std::fmt::Write as _;
    let m = &lowered.model;
    let mut out = String::new();
    let _ = writeln!(out, "target: {}", lowered.target.name());
    let _ = writeln!(out, "{}", lowered.times.summary());
    let _ = writeln!(
        out,
        "weights: {} bytes (constants as read and packed weights)",
        m.weights_bytes
    );
    let _ = writeln!(
        out,
        "workspace: {} bytes = arena {} (one buffer per intermediate would take {}) + scratch {}",
        m.program.workspace_bytes, m.plan.arena_bytes, m.plan.naive_bytes, m.scratch_bytes
    );
    let total_macs: usize = m.layers.iter().map(|l| l.macs).sum();
    let _ = writeln!(
        out,
        "layers: {} ({:.2} GMAC)",
        m.layers.len(),
        total_macs as f64 / 1e9
    );
    let _ = writeln!(out, "  {:<32} {:<22} {:>10}  kernel", "node", "op", "MMAC");
    for layer in &m.layers {
        let flag = match &layer.fallback {
            Some(f) => format!("  [FALLBACK: {f}]"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<32} {:<22} {:>10.2}  {}{flag}",
            layer.node,
            layer.op,
            layer.macs as f64 / 1e6,
            layer.kernel
        );
    }
    let fallbacks = m.fallbacks();
    let _ = writeln!(
        out,
        "fallbacks: {}",
        if fallbacks.is_empty() {
            "none".to_string()
        } else {
            fallbacks.len().to_string()
        }
    );
    let _ = write!(out, "{}", m.plan.report(&lowered.graph));
    out
}
