//! The e-graph optimizer (egg): batch-norm folding, fusion and simplification explored
//! together, the cheapest graph for the target extracted.
//!
//! A pass converts the graph into an e-graph ([`convert`]), runs the rules of its families
//! ([`rules`]) under egg's `Runner` with explicit node, iteration and time limits, extracts the
//! cheapest equivalent graph under the target [`CostModel`] ([`extract`], DAG-aware: a shared
//! value is paid once) and rebuilds a graph from it. The new graph replaces the old one only
//! when the model says it is cheaper, so a pass never makes a graph worse by its own measure.
//!
//! # Passes
//!
//! - `fold-batchnorm`: batch-norm folding, per-channel affine folding and simplifications.
//! - `fuse`: every family, activation/residual/horizontal fusion included, saturated together.
//! - `egraph`: every family in one run (what `fuse` does, without the BN stage before it).
//! - `egraph-simplify`, `horizontal-fusion`: one family alone, for tests and debugging.
//! - `realize-int8`: int8 ops realized from the QDQ form (with the fusion and simplification
//!   families they build on), for tests and debugging.
//!
//! The standard pipeline runs `fold-batchnorm` then `fuse`: the second run sees all rules
//! anyway, and the first gives `--dump-after fold-batchnorm` a graph to show.

pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_quant;
#[cfg(test)]
mod tests_semantic;

pub use cost::CostModel;
pub use rules::Family;

use crate::{Pass, PassError, PassManager};
use egg::{Runner, SimpleScheduler, StopReason};
use qcc_ir::Graph;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits and cost model of the e-graph run.
#[derive(Clone, Debug)]
pub struct EgraphOptions {
    /// Stop saturating when the e-graph holds this many e-nodes.
    pub node_limit: usize,
    /// Stop after this many rule iterations.
    pub iter_limit: usize,
    /// Stop saturating after this long (the extraction still runs).
    pub time_limit: Duration,
    pub cost_model: CostModel,
}

impl Default for EgraphOptions {
    fn default() -> Self {
        // The zoo models saturate in under 10 iterations and a few thousand e-nodes; the
        // limits are a guard against a rule that keeps growing the e-graph.
        EgraphOptions {
            node_limit: 100_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(2),
            cost_model: CostModel::generic_cpu(),
        }
    }
}

/// What one e-graph run did.
#[derive(Clone, Debug)]
pub struct EgraphStats {
    pub pass: &'static str,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Why saturation stopped (`saturated`, or the limit hit).
    pub stop_reason: String,
    /// True when a limit stopped the run before saturation: the result is valid but may be
    /// less optimized than it could be.
    pub hit_limit: bool,
    /// Rule applications that changed the e-graph, per rule.
    pub applied: Vec<(String, usize)>,
    pub cost_before: f64,
    pub cost_after: f64,
    pub saturate_time: Duration,
    pub extract_time: Duration,
}

/// One e-graph pass: a name and the rule families it runs.
pub struct EgraphPass {
    name: &'static str,
    families: Vec<Family>,
    opts: EgraphOptions,
    last: Mutex<Option<EgraphStats>>,
}

impl EgraphPass {
    pub fn new(name: &'static str, families: Vec<Family>, opts: EgraphOptions) -> EgraphPass {
        EgraphPass {
            name,
            families,
            opts,
            last: Mutex::new(None),
        }
    }

    /// Statistics of the last run.
    pub fn last_stats(&self) -> Option<EgraphStats> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Pass for EgraphPass {
    fn name(&self) -> &'static str {
        self.name
    }

    fn take_notes(&self) -> Vec<String> {
        match self.last_stats() {
            Some(stats) if stats.hit_limit => vec![format!(
                "stopped before saturation ({}) after {} iterations, {} e-nodes; the graph is \
                 valid but may be less optimized (raise the e-graph limits)",
                stats.stop_reason, stats.iterations, stats.egraph_nodes
            )],
            _ => Vec::new(),
        }
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let (new, stats) = optimize(self.name, graph, &self.families, &self.opts)?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        match new {
            Some(g) => {
                *graph = g;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The pass names [`add_pass_by_name`] knows, with their families.
fn pass_families(name: &str) -> Option<(&'static str, Vec<Family>)> {
    Some(match name {
        "fold-batchnorm" => (
            "fold-batchnorm",
            vec![Family::BnFold, Family::Affine, Family::Simplify],
        ),
        "fuse" => ("fuse", Family::ALL.to_vec()),
        "egraph" => ("egraph", Family::ALL.to_vec()),
        "egraph-simplify" => ("egraph-simplify", vec![Family::Simplify]),
        "horizontal-fusion" => ("horizontal-fusion", vec![Family::Horizontal]),
        "realize-int8" => (
            "realize-int8",
            vec![Family::Fuse, Family::Quant, Family::Simplify],
        ),
        _ => return None,
    })
}

/// Adds the e-graph passes to a pipeline.
pub fn add_egraph_passes(pm: &mut PassManager, opts: &EgraphOptions) {
    for name in ["fold-batchnorm", "fuse"] {
        add_pass_by_name(pm, name, opts);
    }
}

/// Adds the e-graph pass called `name`; false if there is none.
pub fn add_pass_by_name(pm: &mut PassManager, name: &str, opts: &EgraphOptions) -> bool {
    match pass_families(name) {
        Some((name, families)) => {
            pm.add(EgraphPass::new(name, families, opts.clone()));
            true
        }
        None => false,
    }
}

/// Runs the rule `families` on `graph`; returns the optimized graph when it is cheaper than
/// the input by the cost model (`None`: keep the input), and what the run did.
pub fn optimize(
    pass: &'static str,
    graph: &Graph,
    families: &[Family],
    opts: &EgraphOptions,
) -> Result<(Option<Graph>, EgraphStats), PassError> {
    let graph_err = |source| PassError::Graph { pass, source };
    let start = Instant::now();
    let (eg, roots) = convert::graph_to_egraph(graph).map_err(graph_err)?;
    let cost_before = cost::graph_cost(graph, &opts.cost_model).map_err(graph_err)?;
    let runner = Runner::<lang::TensorLang, lang::TensorAnalysis, ()>::new(Default::default())
        .with_egraph(eg)
        .with_node_limit(opts.node_limit)
        .with_iter_limit(opts.iter_limit)
        .with_time_limit(opts.time_limit)
        .with_scheduler(SimpleScheduler)
        .run(&rules::rewrites(families));
    let saturate_time = start.elapsed();
    let (stop_reason, hit_limit) = match &runner.stop_reason {
        Some(StopReason::Saturated) => ("saturated".to_string(), false),
        Some(StopReason::IterationLimit(n)) => (format!("iteration limit {n}"), true),
        Some(StopReason::NodeLimit(n)) => (format!("e-node limit {n}"), true),
        Some(StopReason::TimeLimit(s)) => (format!("time limit {s}s"), true),
        Some(StopReason::Other(s)) => (s.clone(), true),
        None => ("not run".to_string(), true),
    };
    let mut applied: Vec<(String, usize)> = Vec::new();
    for it in &runner.iterations {
        for (rule, &n) in &it.applied {
            match applied
                .iter_mut()
                .find(|(r, _)| r.as_str() == rule.as_str())
            {
                Some((_, total)) => *total += n,
                None => applied.push((rule.to_string(), n)),
            }
        }
    }
    let iterations = runner.iterations.len();
    let eg = runner.egraph;
    let (egraph_nodes, egraph_classes) = (eg.total_size(), eg.number_of_classes());
    let extract_start = Instant::now();
    let ex = extract::extract(&eg, &roots, &opts.cost_model)
        .map_err(|message| PassError::Other { pass, message })?;
    let better = ex.cost < cost_before * (1.0 - 1e-9);
    let new = if better {
        Some(convert::extraction_to_graph(eg, &roots, &ex, graph).map_err(graph_err)?)
    } else {
        None
    };
    let stats = EgraphStats {
        pass,
        iterations,
        egraph_nodes,
        egraph_classes,
        stop_reason,
        hit_limit,
        applied,
        cost_before,
        cost_after: if better { ex.cost } else { cost_before },
        saturate_time,
        extract_time: extract_start.elapsed(),
    };
    Ok((new, stats))
}
