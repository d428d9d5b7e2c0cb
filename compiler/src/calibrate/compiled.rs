//! The compiled calibration engine: the fp32 model, JIT-compiled once, computes every tensor
//! calibration observes.
//!
//! The graph after [`qcc_passes::calibration_pipeline`] is lowered as it is (no further
//! passes: fusion would remove the very tensors the `quantize` pass names) with every f32
//! node output made a graph output, in topological order. The memory plan gives each graph
//! output its own buffer, so no later node overwrites a tensor before it is observed, and it
//! already handles the awkward outputs: a view (Reshape, Flatten, Squeeze...) whose input is
//! an output too is copied, and a Concat input that is an output is copied into its slice
//! instead of being written there. The one exception is Split, whose outputs the back end
//! only compiles as slices of its input (never graph outputs): each is observed through an
//! Identity copy. Graph inputs are observed straight from the sample, as the interpreter does.
//! Non-f32 values (shape arithmetic) are not observed; a graph that computes any at run time
//! does not compile for the fp32 back end, and calibration falls back to the interpreter.

use std::sync::mpsc;

use qcc_codegen::model::{self, AlignedBuffer};
use qcc_codegen::Target;
use qcc_ir::{DType, Graph, Op, Tensor};
use qcc_passes::quant::stats::CalibrationStats;

use super::observe_tensor;
use crate::compile::{CompileTimes, JitModel, Lowered};
use crate::driver::DriverError;

/// The target the calibration graph is compiled for: this machine, f32 arithmetic.
const CALIBRATION_TARGET: &str = "native-fp32";

/// Output buffer sets in flight: one being filled by the model while the other is observed.
/// Each holds every tensor of a sample (resnet50: 106 MB), the price of the overlap.
const BUFFER_SETS: usize = 2;

/// A calibration graph compiled in process.
pub(super) struct CompiledObserver {
    model: JitModel,
    /// Per output buffer, the name of the tensor its statistics go under.
    names: Vec<String>,
}

/// One sample and the model's outputs on it, on their way to the observing thread.
struct Computed {
    sample: Vec<Tensor>,
    outputs: Vec<AlignedBuffer>,
}

impl CompiledObserver {
    /// Compiles `graph` (after the calibration pipeline); the error is the reason it does not
    /// compile, for the fallback warning.
    pub(super) fn new(graph: &Graph) -> Result<CompiledObserver, String> {
        let (observed, names) = observation_graph(graph)?;
        let target = Target::parse(CALIBRATION_TARGET)
            .map_err(|e| format!("target {CALIBRATION_TARGET}: {e}"))?;
        let lowered_model = model::lower_graph(&observed, &target, "calibration")
            .map_err(|e| format!("the fp32 back end does not compile the model: {e}"))?;
        let mut lowered = Lowered {
            graph: observed,
            model: lowered_model,
            target,
            times: CompileTimes::default(),
        };
        let model = JitModel::new(&mut lowered)
            .map_err(|e| format!("the fp32 model does not JIT-compile: {e}"))?;
        Ok(CompiledObserver { model, names })
    }

    /// Runs every sample (one tensor per graph input, in input order) and observes its inputs
    /// and every tensor the model computes, in sample order; `bar` counts observed samples.
    ///
    /// Observing (min/max and a histogram over every element of every tensor) costs about
    /// half as much as running the model, so it runs on a second thread while the model
    /// computes the next sample, in a second set of output buffers.
    pub(super) fn calibrate(
        &self,
        input_names: &[String],
        samples: Vec<Vec<Tensor>>,
        stats: &mut CalibrationStats,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), DriverError> {
        let (computed_tx, computed_rx) = mpsc::channel::<Computed>();
        let (free_tx, free_rx) = mpsc::channel::<Vec<AlignedBuffer>>();
        for _ in 0..BUFFER_SETS {
            free_tx
                .send(self.model.output_buffers())
                .map_err(|_| DriverError::Other("calibration: buffer queue closed".into()))?;
        }
        let names = &self.names;
        std::thread::scope(|scope| {
            let observer = scope.spawn(move || -> Result<(), DriverError> {
                let mut decoded = Vec::new();
                for Computed { sample, outputs } in computed_rx {
                    for (name, tensor) in input_names.iter().zip(&sample) {
                        if tensor.dtype() == DType::F32 {
                            observe_tensor(stats, name, tensor)?;
                        }
                    }
                    for (name, buffer) in names.iter().zip(&outputs) {
                        decoded.clear();
                        decoded.extend(
                            buffer
                                .as_bytes()
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        );
                        stats.observe(name, &decoded);
                    }
                    stats.samples += 1;
                    bar.inc(1);
                    // The runner may have stopped already (an error): nothing to refill.
                    let _ = free_tx.send(outputs);
                }
                Ok(())
            });
            let mut workspace = self.model.workspace();
            let mut ran = Ok(());
            for sample in samples {
                // No free buffers: the observer stopped on an error, which `join` returns.
                let Ok(mut outputs) = free_rx.recv() else {
                    break;
                };
                let tensors: Vec<&Tensor> = sample.iter().collect();
                let run = self.model.input_buffers(&tensors).and_then(|inputs| {
                    self.model
                        .run_buffers(&inputs, &mut outputs, &mut workspace)
                });
                if let Err(e) = run {
                    ran = Err(e);
                    break;
                }
                if computed_tx.send(Computed { sample, outputs }).is_err() {
                    break;
                }
            }
            drop(computed_tx);
            let observed = observer.join().map_err(|_| {
                DriverError::Other("calibration: the observing thread panicked".into())
            })?;
            ran.and(observed)
        })
    }
}

/// `graph` with every f32 node output as a graph output (the original outputs among them),
/// and per output the name of the tensor it holds.
pub(super) fn observation_graph(graph: &Graph) -> Result<(Graph, Vec<String>), String> {
    let mut observed = graph.clone();
    let order = graph.topo_order().map_err(|e| e.to_string())?;
    let mut outputs = Vec::new();
    let mut names = Vec::new();
    for n in order {
        let node = graph.node(n);
        // The back end compiles Split only with outputs that are slices of its input.
        let copy = matches!(node.op, Op::Split { .. });
        for &v in &node.outputs {
            let value = graph.value(v);
            if value.ty.dtype != DType::F32 {
                continue;
            }
            let output = if copy {
                let name = observed.fresh_name(&format!("{}.calibration_copy", value.name));
                let id = observed
                    .add_node(name.clone(), Op::Identity, vec![v], vec![name])
                    .map_err(|e| format!("copying Split output '{}': {e}", value.name))?;
                observed.node(id).outputs[0]
            } else {
                v
            };
            outputs.push(output);
            names.push(value.name.clone());
        }
    }
    observed.set_outputs(outputs);
    Ok((observed, names))
}
