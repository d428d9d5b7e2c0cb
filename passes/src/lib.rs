//! Graph-to-graph rewrites for qcc.
//!
//! A [`Pass`] takes a graph and returns whether it changed it; the [`PassManager`] runs a
//! pipeline of passes, verifies the graph after each one, times them and can dump the graph
//! after a named pass. The canonical passes ([`canonical`]) clean the imported graph up (constant
//! folding, dead code, shape chains, identities); the e-graph pass ([`egraph`]) then explores
//! batch-norm folding, fusion and simplification together and extracts the cheapest graph for
//! the target.

pub mod canonical;
pub mod egraph;
mod manager;
pub mod quant;
#[cfg(test)]
mod testing;

pub use manager::{
    calibration_pipeline, default_pipeline, pipeline_from_names, DumpFn, PassManager, PassReport,
    PipelineOptions,
};

use qcc_ir::Graph;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// The pass built a graph that does not type-check (or failed to build one).
    #[error("pass '{pass}': {source}")]
    Graph {
        pass: &'static str,
        source: qcc_ir::GraphError,
    },
    /// The graph after the pass fails verification: a bug in the pass.
    #[error("pass '{pass}' produced an invalid graph: {source}")]
    Verify {
        pass: &'static str,
        source: qcc_ir::GraphError,
    },
    #[error("pass '{pass}': {message}")]
    Other { pass: &'static str, message: String },
    #[error("no pass named '{name}' in the pipeline (passes: {available})")]
    UnknownPass { name: String, available: String },
}

/// One graph-to-graph transformation.
pub trait Pass {
    /// The name used by `--dump-after` and in reports, in kebab case (`fold-constants`).
    fn name(&self) -> &'static str;
    /// Rewrites the graph; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool, PassError>;
    /// What the last run has to tell the user beyond its result: a limit that stopped it
    /// early, a rewrite it could not make. The pass manager puts these in the report, and
    /// the driver prints them, so nothing is given up silently.
    fn take_notes(&self) -> Vec<String> {
        Vec::new()
    }
}
