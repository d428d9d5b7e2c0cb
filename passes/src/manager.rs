//! The pass manager: runs passes in order, verifying, timing and optionally dumping.

use crate::{Pass, PassError};
use qcc_ir::Graph;
use std::time::{Duration, Instant};

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    pub pass: &'static str,
    pub changed: bool,
    pub duration: Duration,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Warnings the pass raised (see [`Pass::take_notes`]).
    pub notes: Vec<String>,
}

/// A callback that receives the graph after the pass named by `dump_after`.
pub type DumpFn<'a> = Box<dyn FnMut(&'static str, &Graph) + 'a>;

pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager::new()
    }
}

impl PassManager {
    pub fn new() -> PassManager {
        PassManager { passes: Vec::new() }
    }

    pub fn add(&mut self, pass: impl Pass + 'static) -> &mut PassManager {
        self.passes.push(Box::new(pass));
        self
    }

    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Fails unless `name` is a pass of this pipeline: a `--dump-after` that never fires
    /// would be a silent no-op.
    pub fn check_pass_name(&self, name: &str) -> Result<(), PassError> {
        if self.passes.iter().any(|p| p.name() == name) {
            Ok(())
        } else {
            Err(PassError::UnknownPass {
                name: name.to_string(),
                available: self.pass_names().join(", "),
            })
        }
    }

    /// Runs every pass in order, verifying the graph after each. `dump` receives the graph
    /// after each pass whose name is `dump_after`.
    pub fn run(
        &self,
        graph: &mut Graph,
        dump_after: Option<&str>,
        mut dump: Option<DumpFn>,
    ) -> Result<Vec<PassReport>, PassError> {
        if let Some(name) = dump_after {
            self.check_pass_name(name)?;
        }
        let mut reports = Vec::with_capacity(self.passes.len());
        for pass in &self.passes {
            let nodes_before = graph.node_count();
            let start = Instant::now();
            let changed = pass.run(graph)?;
            let duration = start.elapsed();
            graph.verify().map_err(|source| PassError::Verify {
                pass: pass.name(),
                source,
            })?;
            if dump_after == Some(pass.name()) {
                if let Some(f) = dump.as_mut() {
                    f(pass.name(), graph);
                }
            }
            reports.push(PassReport {
                pass: pass.name(),
                changed,
                duration,
                nodes_before,
                nodes_after: graph.node_count(),
                notes: pass.take_notes(),
            });
        }
        Ok(reports)
    }
}

/// Options of the standard pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    pub egraph: crate::egraph::EgraphOptions,
    /// Set for an int8 build: static quantization runs the `quantize` pass between
    /// batch-norm folding and fusion, dynamic quantization `quantize-dynamic` after fusion.
    pub quantize: Option<crate::quant::Quantization>,
}

/// The standard pipeline: the canonical clean-up passes, then the e-graph optimizer.
pub fn default_pipeline(opts: &PipelineOptions) -> PassManager {
    let mut pm = PassManager::new();
    add_default_passes(&mut pm, opts);
    pm
}

/// The standard pipeline's passes: canonical clean-up, batch-norm folding, the `quantize`
/// pass for a static int8 build, then fusion (which realizes int8 ops), then
/// `quantize-dynamic` for a dynamic int8 build (it rewrites fused layers).
fn add_default_passes(pm: &mut PassManager, opts: &PipelineOptions) {
    use crate::quant::Quantization;
    crate::canonical::add_canonical_passes(pm);
    pm.add(crate::quant::ExpandQLinear);
    pm.add(crate::quant::RealizeIntegerProducts::default());
    pm.add(crate::quant::QuantizeFloatBias::default());
    crate::egraph::add_pass_by_name(pm, "fold-batchnorm", &opts.egraph);
    if let Some(Quantization::Static(q)) = &opts.quantize {
        pm.add(crate::quant::InsertQdq::new(q.clone()));
    }
    crate::egraph::add_pass_by_name(pm, "fuse", &opts.egraph);
    pm.add(crate::quant::FoldDequantizedWeights);
    if let Some(Quantization::Dynamic(d)) = &opts.quantize {
        pm.add(crate::quant::QuantizeDynamic::new(d.clone()));
    }
    if let Some(Quantization::Static(q)) = &opts.quantize {
        if q.quantized_io {
            pm.add(crate::quant::QuantizedIo::default());
        }
    }
}

/// The passes before quantization: canonical clean-up and batch-norm folding. Calibration
/// observes the graph they produce, so its statistics name exactly the tensors the
/// `quantize` pass sees.
pub fn calibration_pipeline(opts: &PipelineOptions) -> PassManager {
    let mut pm = PassManager::new();
    crate::canonical::add_canonical_passes(&mut pm);
    pm.add(crate::quant::ExpandQLinear);
    crate::egraph::add_pass_by_name(&mut pm, "fold-batchnorm", &opts.egraph);
    pm
}

/// Builds a pipeline from pass names (as filetests and `--passes` name them); `default`
/// stands for the whole standard pipeline.
pub fn pipeline_from_names(
    names: &[&str],
    opts: &PipelineOptions,
) -> Result<PassManager, PassError> {
    let mut pm = PassManager::new();
    for &name in names {
        if name == "default" {
            add_default_passes(&mut pm, opts);
        } else if name == "expand-qlinear" {
            pm.add(crate::quant::ExpandQLinear);
        } else if name == "realize-integer-products" {
            pm.add(crate::quant::RealizeIntegerProducts::default());
        } else if name == "quantized-io" {
            pm.add(crate::quant::QuantizedIo::default());
        } else if name == "quantize-float-bias" {
            pm.add(crate::quant::QuantizeFloatBias::default());
        } else if name == "fold-dequantized-weights" {
            pm.add(crate::quant::FoldDequantizedWeights);
        } else if !crate::canonical::add_pass_by_name(&mut pm, name)
            && !crate::egraph::add_pass_by_name(&mut pm, name, &opts.egraph)
        {
            let mut all = default_pipeline(opts).pass_names();
            all.push("default");
            return Err(PassError::UnknownPass {
                name: name.to_string(),
                available: all.join(", "),
            });
        }
    }
    Ok(pm)
}
