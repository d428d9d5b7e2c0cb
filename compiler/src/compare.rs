//! `qcc compare`: fp32 against int8 on the same samples, per layer and at the outputs, so that
//! an accuracy drop can be traced to the layer where the quantization error starts.
//!
//! - **Outputs.** The model is compiled twice with the JIT: for the host in fp32
//!   (`native-fp32`) and for the int8 target. Every sample runs through both, and each model
//!   output reports top-1 agreement (arg-max over the last axis equal, counted per row of
//!   that axis), top-5 agreement (fp32's top-1 class among int8's five largest; none below
//!   five classes), the mean cosine of the fp32 and int8 vectors (one vector per index of the
//!   first axis, the batch) and the mean absolute error over all elements.
//! - **Layers.** The interpreter runs the fp32 reference (the model after
//!   [`qcc_passes::calibration_pipeline`], whose tensors the statistics name) and the int8
//!   graph (after the whole int8 pipeline) on the first few samples; the interpreter is
//!   slow, compiled code exposes no intermediate values. Every integer tensor `X.q` of the
//!   int8 graph whose fp32 counterpart `X` exists is dequantized with the parameters of the
//!   op that produced it, and every f32 tensor present in both graphs under the same name is
//!   compared as it is. SQNR and cosine are pooled over all elements of all those samples.
//!
//! The int8 graph names values as the `quantize` pass does (see `qcc_passes::quant`'s
//! `insert` module): a quantized tensor `t` keeps its name on its DequantizeLinear, the
//! integer tensor is `t.q` and the producer's f32 result `t.float`.

pub mod svg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qcc_codegen::target::Precision;
use qcc_codegen::Target;
use qcc_ir::{DType, Graph, Op, QParams, Tensor, ValueDef, ValueId};
use qcc_passes::quant::Quantization;

use crate::calibration_data::{load_samples, DataSource};
use crate::compile::{self, JitModel};
use crate::driver::{self, DriverError};
use crate::quant_args::QuantArgs;

/// SQNR below this is reported as this (an all-zero reference with a non-zero error has
/// SQNR −∞, which JSON cannot carry and `null` already means "exact").
pub const MIN_SQNR_DB: f64 = -200.0;

/// The fp32 reference the int8 outputs are compared with.
const FP32_TARGET: &str = "native-fp32";

/// Everything `qcc compare` was asked, as the CLI parsed it.
pub struct CompareRequest {
    pub model: PathBuf,
    pub target: String,
    pub quant: QuantArgs,
    pub data: Option<PathBuf>,
    pub synthetic: Option<usize>,
    pub seed: u64,
    /// At most this many samples for the output metrics.
    pub samples: Option<usize>,
    /// Per-layer statistics on the first this many samples.
    pub layer_samples: usize,
    pub batch: usize,
    pub json: bool,
    pub svg: Option<PathBuf>,
}

/// The error of one int8 tensor against its fp32 counterpart.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerError {
    /// The int8 graph's node that produced the tensor, and its op.
    pub node: String,
    pub op: String,
    /// The tensor's name in the int8 graph (`X.q` for a dequantized integer tensor).
    pub tensor: String,
    /// `+inf` when the int8 tensor equals the fp32 one exactly.
    pub sqnr_db: f64,
    pub cosine: f64,
}

/// fp32 against int8 at one model output.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputAgreement {
    pub name: String,
    pub top1_agreement: f64,
    /// `None` when the last axis has fewer than five classes.
    pub top5_agreement: Option<f64>,
    pub cosine: f64,
    pub mean_abs_error: f64,
}

/// The result of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub model: String,
    pub target: String,
    pub profile: String,
    pub samples: usize,
    pub layer_samples: usize,
    pub layers: Vec<LayerError>,
    pub outputs: Vec<OutputAgreement>,
}

/// Running sums for SQNR and cosine of a test signal against a reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorSums {
    signal: f64,
    noise: f64,
    dot: f64,
    test_energy: f64,
}

impl ErrorSums {
    pub fn add(&mut self, reference: &[f64], test: &[f64]) {
        for (&r, &t) in reference.iter().zip(test) {
            self.signal += r * r;
            self.noise += (r - t) * (r - t);
            self.dot += r * t;
            self.test_energy += t * t;
        }
    }

    /// `10·log10(Σ ref² / Σ (ref − test)²)`: `+inf` when exact, at least [`MIN_SQNR_DB`].
    pub fn sqnr_db(&self) -> f64 {
        if self.noise == 0.0 {
            return f64::INFINITY;
        }
        let db = 10.0 * (self.signal / self.noise).log10();
        if db.is_nan() {
            MIN_SQNR_DB
        } else {
            db.max(MIN_SQNR_DB)
        }
    }

    /// The cosine of the two signals: 1 when both are zero, 0 when only one is.
    pub fn cosine(&self) -> f64 {
        let norms = (self.signal * self.test_energy).sqrt();
        if norms == 0.0 {
            return if self.signal == self.test_energy {
                1.0
            } else {
                0.0
            };
        }
        (self.dot / norms).clamp(-1.0, 1.0)
    }
}

/// SQNR in dB of `test` against `reference` (see [`ErrorSums::sqnr_db`]).
pub fn sqnr_db(reference: &[f64], test: &[f64]) -> f64 {
    let mut sums = ErrorSums::default();
    sums.add(reference, test);
    sums.sqnr_db()
}

/// Cosine similarity (see [`ErrorSums::cosine`]).
pub fn cosine(reference: &[f64], test: &[f64]) -> f64 {
    let mut sums = ErrorSums::default();
    sums.add(reference, test);
    sums.cosine()
}

/// The index of the first largest element (NaN never wins); 0 for an empty slice.
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// Whether `class` is among the `k` largest of `values`, ties broken by the lower index (the
/// order of a stable descending sort).
pub fn in_top_k(values: &[f64], class: usize, k: usize) -> bool {
    let Some(&v) = values.get(class) else {
        return false;
    };
    let ahead = values
        .iter()
        .enumerate()
        .filter(|&(j, &w)| w > v || (w == v && j < class))
        .count();
    ahead < k
}

/// Running output metrics of one model output.
#[derive(Clone, Debug, Default)]
struct OutputSums {
    rows: usize,
    top1: usize,
    top5_rows: usize,
    top5: usize,
    vectors: usize,
    cosine: f64,
    elements: usize,
    abs_error: f64,
}

impl OutputSums {
    fn add(&mut self, dims: &[usize], reference: &[f64], test: &[f64]) {
        let classes = dims.last().copied().unwrap_or(1).max(1);
        for (r, t) in reference.chunks(classes).zip(test.chunks(classes)) {
            let class = argmax(r);
            self.rows += 1;
            self.top1 += usize::from(argmax(t) == class);
            if classes >= 5 {
                self.top5_rows += 1;
                self.top5 += usize::from(in_top_k(t, class, 5));
            }
        }
        // One vector per batch index; a rank-0 or rank-1 output is one vector.
        let per_vector = if dims.len() >= 2 {
            dims[1..].iter().product::<usize>().max(1)
        } else {
            reference.len().max(1)
        };
        for (r, t) in reference.chunks(per_vector).zip(test.chunks(per_vector)) {
            self.vectors += 1;
            self.cosine += cosine(r, t);
        }
        self.elements += reference.len();
        self.abs_error += reference
            .iter()
            .zip(test)
            .map(|(r, t)| (r - t).abs())
            .sum::<f64>();
    }

    fn finish(&self, name: &str) -> OutputAgreement {
        let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        OutputAgreement {
            name: name.to_string(),
            top1_agreement: frac(self.top1, self.rows),
            top5_agreement: (self.top5_rows > 0).then(|| frac(self.top5, self.top5_rows)),
            cosine: if self.vectors == 0 {
                1.0
            } else {
                self.cosine / self.vectors as f64
            },
            mean_abs_error: if self.elements == 0 {
                0.0
            } else {
                self.abs_error / self.elements as f64
            },
        }
    }
}

/// One tensor compared per layer: where it is in each graph and how to read the int8 one.
struct LayerProbe {
    node: String,
    op: &'static str,
    tensor: String,
    reference: ValueId,
    test: ValueId,
    /// The parameters that dequantize the int8 tensor; `None` for an f32 tensor.
    dequantize: Option<QParams>,
}

fn is_8bit(dtype: DType) -> bool {
    matches!(dtype, DType::I8 | DType::U8)
}

/// The quantization parameters of the 8-bit value `v`: those of the op that produced it, or,
/// for ops that pass 8-bit values through (max pooling, layout ops, Concat), of their
/// 8-bit input, found by walking back.
fn produced_qparams(graph: &Graph, mut v: ValueId) -> Option<QParams> {
    for _ in 0..graph.node_count() + 1 {
        let ValueDef::Node { node, .. } = graph.value(v).def else {
            return None;
        };
        let node = graph.node(node);
        match &node.op {
            Op::QuantizeLinear(p) => return Some(p.clone()),
            Op::QuantizedConv { y, .. }
            | Op::QuantizedMatMul { y, .. }
            | Op::QuantizedAdd { y, .. }
            | Op::QuantizedGlobalAveragePool { y, .. }
            | Op::QLinearConv { y, .. }
            | Op::QLinearMatMul { y, .. } => return Some(y.clone()),
            _ => {
                v = *node
                    .inputs
                    .iter()
                    .find(|&&i| is_8bit(graph.value(i).ty.dtype))?;
            }
        }
    }
    None
}

/// The tensors to compare, in the int8 graph's topological order. Tensors that cannot be
/// compared (no parameters found, shapes differ) are named on stderr.
fn layer_probes(reference: &Graph, int8: &Graph) -> Result<Vec<LayerProbe>, DriverError> {
    let mut probes = Vec::new();
    for id in int8.topo_order()? {
        let node = int8.node(id);
        for &out in &node.outputs {
            let value = int8.value(out);
            let name = value.name.as_str();
            let (base, dequantize) = if let Some(base) = name.strip_suffix(".q") {
                if !is_8bit(value.ty.dtype) {
                    continue;
                }
                match produced_qparams(int8, out) {
                    Some(p) => (base, Some(p)),
                    None => {
                        eprintln!(
                            "qcc: warning: compare: no quantization parameters found for \
                             '{name}' (node '{}', {}); not compared",
                            node.name,
                            node.op.name()
                        );
                        continue;
                    }
                }
            } else {
                // A DequantizeLinear output `X` repeats what `X.q` reports.
                let repeats = int8.value_by_name(&format!("{name}.q")).is_some();
                if value.ty.dtype != DType::F32 || repeats {
                    continue;
                }
                (name, None)
            };
            let Some(ref_id) = reference.value_by_name(base) else {
                continue;
            };
            let ref_value = reference.value(ref_id);
            if matches!(ref_value.def, ValueDef::Constant(_)) || ref_value.ty.dtype != DType::F32 {
                continue;
            }
            if ref_value.ty.dims() != value.ty.dims() {
                eprintln!(
                    "qcc: warning: compare: '{name}' is {} in the int8 graph but '{base}' is {} \
                     in fp32; not compared",
                    value.ty, ref_value.ty
                );
                continue;
            }
            probes.push(LayerProbe {
                node: node.name.clone(),
                op: node.op.name(),
                tensor: name.to_string(),
                reference: ref_id,
                test: out,
                dequantize,
            });
        }
    }
    Ok(probes)
}

fn named_inputs(graph: &Graph, sample: &[Tensor]) -> HashMap<String, Tensor> {
    graph
        .input_values()
        .iter()
        .map(|&v| graph.value(v).name.clone())
        .zip(sample.iter().cloned())
        .collect()
}

/// Per-layer errors of `int8` against `reference`, both run by the interpreter on `samples`.
pub fn layer_errors(
    reference: &Graph,
    int8: &Graph,
    samples: &[Vec<Tensor>],
    progress: bool,
) -> Result<Vec<LayerError>, DriverError> {
    let probes = layer_probes(reference, int8)?;
    let mut sums = vec![ErrorSums::default(); probes.len()];
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(samples.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "per-layer errors (interpreter) {bar:40} {pos}/{len} samples ({eta} left)",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    for sample in samples {
        let fp32 = qcc_ir::eval::run_all(reference, &named_inputs(reference, sample))?;
        let quantized = qcc_ir::eval::run_all(int8, &named_inputs(int8, sample))?;
        for (probe, sums) in probes.iter().zip(&mut sums) {
            let missing = |graph: &str| {
                DriverError::Other(format!(
                    "compare: the {graph} interpreter computed no '{}'",
                    probe.tensor
                ))
            };
            let r = fp32.get(&probe.reference).ok_or_else(|| missing("fp32"))?;
            let t = quantized.get(&probe.test).ok_or_else(|| missing("int8"))?;
            let t = match &probe.dequantize {
                Some(p) => {
                    let op = Op::DequantizeLinear(p.clone());
                    let mut out = qcc_ir::eval::eval_op(&op, &[t.as_ref()])?;
                    out.pop().ok_or_else(|| missing("int8"))?.to_f64_vec()
                }
                None => t.to_f64_vec(),
            };
            sums.add(&r.to_f64_vec(), &t);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(probes
        .iter()
        .zip(&sums)
        .map(|(p, s)| LayerError {
            node: p.node.clone(),
            op: p.op.to_string(),
            tensor: p.tensor.clone(),
            sqnr_db: s.sqnr_db(),
            cosine: s.cosine(),
        })
        .collect())
}

/// Output agreement of the compiled fp32 and int8 models over `samples`.
pub fn output_agreement(
    fp32: &JitModel,
    int8: &JitModel,
    samples: &[Vec<Tensor>],
) -> Result<Vec<OutputAgreement>, DriverError> {
    let mut sums: Vec<OutputSums> = vec![OutputSums::default(); fp32.outputs.len()];
    for sample in samples {
        let inputs: Vec<&Tensor> = sample.iter().collect();
        let reference = fp32.run(&inputs)?;
        let test = int8.run(&inputs)?;
        if reference.len() != test.len() || reference.len() != sums.len() {
            return Err(DriverError::Other(format!(
                "compare: the fp32 model has {} outputs, the int8 model {}",
                reference.len(),
                test.len()
            )));
        }
        for (((name, r), (_, t)), sums) in reference.iter().zip(&test).zip(&mut sums) {
            if r.dims() != t.dims() {
                return Err(DriverError::Other(format!(
                    "compare: output '{name}' is {} in fp32 but {} in int8",
                    r.ty(),
                    t.ty()
                )));
            }
            sums.add(r.dims(), &r.to_f64_vec(), &t.to_f64_vec());
        }
    }
    Ok(fp32
        .outputs
        .iter()
        .zip(&sums)
        .map(|(spec, s)| s.finish(&spec.name))
        .collect())
}

/// Compares `graph` (as imported from `model`) in fp32 and quantized by `quantize` for
/// `target`: outputs over every sample, layers over the first `layer_samples`.
pub fn compare(
    model: &Path,
    graph: &Graph,
    target: &Target,
    quantize: Quantization,
    samples: &[Vec<Tensor>],
    layer_samples: usize,
    progress: bool,
) -> Result<Comparison, DriverError> {
    let profile = quantize.profile().name.to_string();
    let host = driver::parse_target(FP32_TARGET)?;
    let mut fp32 = compile::lower_graph(graph.clone(), &host, "compare_fp32")?;
    let fp32_jit = JitModel::new(&mut fp32)?;
    let mut int8 =
        compile::lower_graph_quantized(graph.clone(), target, "compare_int8", Some(quantize))?;
    let int8_jit = JitModel::new(&mut int8)?;
    if progress {
        eprintln!("fp32 ({FP32_TARGET}) {}", fp32.times.summary());
        eprintln!("int8 ({}) {}", target.name(), int8.times.summary());
    }
    let outputs = output_agreement(&fp32_jit, &int8_jit, samples)?;

    let mut reference = graph.clone();
    let opts = driver::pipeline_options(Some(target));
    qcc_passes::calibration_pipeline(&opts).run(&mut reference, None, None)?;
    let layer_samples = layer_samples.min(samples.len());
    let layers = layer_errors(&reference, &int8.graph, &samples[..layer_samples], progress)?;
    Ok(Comparison {
        model: model.display().to_string(),
        target: target.name(),
        profile,
        samples: samples.len(),
        layer_samples,
        layers,
        outputs,
    })
}

/// `qcc compare`: parses the request, compares, prints (table or JSON), writes the SVG.
pub fn run_command(req: &CompareRequest) -> Result<(), DriverError> {
    let target = driver::parse_target(&req.target)?;
    if target.precision() != Precision::Int8 {
        return Err(DriverError::Other(format!(
            "--target {}: compare needs an int8 target (e.g. x86_64-int8); this one computes \
             in {}",
            req.target,
            target.precision().name()
        )));
    }
    // Before the quantization options: a quantized model needs no statistics, and the
    // error should say what is wrong with it, not ask for them.
    let graph = driver::load_model(&req.model, req.batch)?;
    if qcc_passes::quant::is_prequantized(&graph) {
        return Err(DriverError::Other(format!(
            "{} is already quantized (QuantizeLinear/DequantizeLinear, QLinear ops or \
             onnxruntime's dynamic integer ops): compare needs the fp32 model as its reference",
            req.model.display()
        )));
    }
    let quantize = req.quant.options(&req.model, &target)?.ok_or_else(|| {
        DriverError::Other(format!("--target {}: no quantization options", req.target))
    })?;
    let source = match (&req.data, req.synthetic) {
        (Some(path), _) => DataSource::Path(path.clone()),
        (None, Some(count)) => {
            eprintln!(
                "qcc: warning: comparing on {count} seeded random inputs: agreement on random \
                 data says little about real data; accuracy claims need --data"
            );
            DataSource::Synthetic {
                count,
                seed: req.seed,
            }
        }
        (None, None) => {
            return Err(DriverError::Other(
                "compare needs samples: --data PATH or --synthetic N".into(),
            ))
        }
    };
    let samples = load_samples(&graph, &source, req.samples)?;
    let comparison = compare(
        &req.model,
        &graph,
        &target,
        quantize,
        &samples,
        req.layer_samples,
        !req.json,
    )?;
    if let Some(path) = &req.svg {
        std::fs::write(path, svg::sqnr_chart(&comparison))
            .map_err(|e| DriverError::Other(format!("--svg {}: {e}", path.display())))?;
        eprintln!("wrote the SQNR chart to {}", path.display());
    }
    if req.json {
        println!("{}", to_json(&comparison));
    } else {
        print!("{}", format_report(&comparison));
    }
    Ok(())
}

/// The `--json` form (fractions 0..1; `sqnr_db` null when exact).
pub fn to_json(c: &Comparison) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = c
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "node": l.node,
                "op": l.op,
                "tensor": l.tensor,
                "sqnr_db": l.sqnr_db.is_finite().then_some(l.sqnr_db),
                "cosine": l.cosine,
            })
        })
        .collect();
    let outputs: Vec<serde_json::Value> = c
        .outputs
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "top1_agreement": o.top1_agreement,
                "top5_agreement": o.top5_agreement,
                "cosine": o.cosine,
                "mean_abs_error": o.mean_abs_error,
            })
        })
        .collect();
    serde_json::json!({
        "model": c.model,
        "target": c.target,
        "profile": c.profile,
        "samples": c.samples,
        "layer_samples": c.layer_samples,
        "layers": layers,
        "outputs": outputs,
    })
}

/// SQNR for people: "exact" for an exact tensor.
fn sqnr_text(db: f64) -> String {
    if db.is_finite() {
        format!("{db:.2}")
    } else {
        "exact".to_string()
    }
}

/// The table: one line per layer, then the output metrics.
pub fn format_report(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: fp32 against {} (profile {})",
        c.model, c.target, c.profile
    );
    let _ = writeln!(
        out,
        "per-layer error over {} sample(s) (interpreter):",
        c.layer_samples
    );
    let width = |f: fn(&LayerError) -> &str, title: &str| {
        c.layers
            .iter()
            .map(|l| f(l).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
            .min(48)
    };
    let (wn, wo, wt) = (
        width(|l| &l.node, "node"),
        width(|l| &l.op, "op"),
        width(|l| &l.tensor, "tensor"),
    );
    let _ = writeln!(
        out,
        "  {:<wn$} {:<wo$} {:<wt$} {:>9} {:>9}",
        "node", "op", "tensor", "SQNR dB", "cosine"
    );
    for l in &c.layers {
        let _ = writeln!(
            out,
            "  {:<wn$} {:<wo$} {:<wt$} {:>9} {:>9.6}",
            l.node,
            l.op,
            l.tensor,
            sqnr_text(l.sqnr_db),
            l.cosine
        );
    }
    if c.layers.is_empty() {
        let _ = writeln!(out, "  (no tensor to compare)");
    }
    let _ = writeln!(
        out,
        "outputs over {} sample(s) (compiled {FP32_TARGET} against {}):",
        c.samples, c.target
    );
    for o in &c.outputs {
        let top5 = match o.top5_agreement {
            Some(f) => format!("{:.1}%", 100.0 * f),
            None => "n/a (< 5 classes)".to_string(),
        };
        let _ = writeln!(
            out,
            "  {}: top-1 agreement {:.1}%, top-5 agreement {top5}, cosine {:.6}, mean abs \
             error {:.6}",
            o.name,
            100.0 * o.top1_agreement,
            o.cosine,
            o.mean_abs_error
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_is_signal_over_noise_in_db_and_infinite_when_exact() {
        let r = [1.0, -2.0, 3.0, 0.0];
        assert_eq!(sqnr_db(&r, &r), f64::INFINITY);
        // Σ ref² = 14, Σ err² = 0.12.
        let t = [1.0 + 0.1, -2.0 - 0.3, 3.0 + 0.1, 0.1];
        let expected = 10.0 * (14.0f64 / (0.01 + 0.09 + 0.01 + 0.01)).log10();
        assert!((sqnr_db(&r, &t) - expected).abs() < 1e-9);
        let halved: Vec<f64> = r.iter().map(|v| v * 0.5).collect();
        assert!((sqnr_db(&r, &halved) - 10.0 * 4f64.log10()).abs() < 1e-9);
        assert_eq!(sqnr_db(&[0.0, 0.0], &[1.0, 0.0]), MIN_SQNR_DB);
    }

    #[test]
    fn cosine_ignores_scale_and_handles_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
    }

    #[test]
    fn pooled_sums_equal_one_pass_over_the_concatenation() {
        let mut pooled = ErrorSums::default();
        pooled.add(&[1.0, 2.0], &[1.1, 1.9]);
        pooled.add(&[-3.0], &[-2.5]);
        let once = sqnr_db(&[1.0, 2.0, -3.0], &[1.1, 1.9, -2.5]);
        assert!((pooled.sqnr_db() - once).abs() < 1e-12);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_top_k_breaks_ties_by_index() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[f64::NAN, 0.5, 0.2]), 1);
        let v = [0.9, 0.1, 0.5, 0.5, 0.3, 0.8, 0.2];
        // Descending: 0 (0.9), 5 (0.8), 2, 3 (0.5, 0.5), 4 (0.3), 6, 1.
        assert!(in_top_k(&v, 4, 5));
        assert!(!in_top_k(&v, 6, 5));
        assert!(in_top_k(&v, 2, 3) && !in_top_k(&v, 3, 3));
        assert!(!in_top_k(&v, 9, 5));
    }

    #[test]
    fn output_metrics_count_rows_vectors_and_elements() {
        let mut sums = OutputSums::default();
        // Two rows of six classes: the first agrees at top-1, the second only at top-5.
        let reference = [
            0.0, 5.0, 1.0, 0.0, 0.0, 0.0, //
            9.0, 0.0, 0.0, 0.0, 0.0, 8.0,
        ];
        let test = [
            0.0, 4.0, 1.0, 0.0, 0.0, 0.0, //
            8.0, 0.0, 0.0, 0.0, 0.0, 9.0,
        ];
        sums.add(&[2, 6], &reference, &test);
        let o = sums.finish("y");
        assert_eq!(o.top1_agreement, 0.5);
        assert_eq!(o.top5_agreement, Some(1.0));
        assert!((o.mean_abs_error - 3.0 / 12.0).abs() < 1e-12);
        let expected =
            (cosine(&reference[..6], &test[..6]) + cosine(&reference[6..], &test[6..])) / 2.0;
        assert!((o.cosine - expected).abs() < 1e-12);
        let mut few = OutputSums::default();
        few.add(&[1, 2], &[0.2, 0.8], &[0.9, 0.1]);
        let o = few.finish("p");
        assert_eq!((o.top1_agreement, o.top5_agreement), (0.0, None));
    }

    #[test]
    fn json_has_the_documented_fields_and_null_for_exact() {
        let c = Comparison {
            model: "m.onnx".into(),
            target: "x86_64-int8".into(),
            profile: "x86-vnni".into(),
            samples: 3,
            layer_samples: 2,
            layers: vec![LayerError {
                node: "n".into(),
                op: "QuantizeLinear".into(),
                tensor: "x.q".into(),
                sqnr_db: f64::INFINITY,
                cosine: 1.0,
            }],
            outputs: vec![OutputAgreement {
                name: "y".into(),
                top1_agreement: 1.0,
                top5_agreement: None,
                cosine: 0.99,
                mean_abs_error: 0.01,
            }],
        };
        let v = to_json(&c);
        assert!(v["layers"][0]["sqnr_db"].is_null());
        assert!(v["outputs"][0]["top5_agreement"].is_null());
        assert_eq!(v["samples"], 3);
        assert_eq!(v["layers"][0]["tensor"], "x.q");
        assert!(format_report(&c).contains("exact"));
    }
}
