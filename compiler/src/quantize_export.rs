//! `qcc quantize`: the quantized graph of a model written as an ONNX QDQ model, so that other
//! engines (onnxruntime) can run what qcc's int8 build computes.
//!
//! The graph written is the one the `quantize` pass produces: the canonical passes and
//! batch-norm folding (the passes calibration observes), then Q/DQ insertion as the profile
//! says. Fusion and realization come after that pass in a compile, so the QDQ graph holds only
//! standard ONNX ops (Conv, Gemm, Add, Relu, MaxPool, QuantizeLinear, DequantizeLinear...);
//! a qcc-only op (FusedConv, a realized QuantizedConv...) is an error naming the node rather
//! than an approximation.
//!
//! What the QDQ model means and how close the int8 build is to it: every quantized tensor
//! passes through `QuantizeLinear → DequantizeLinear`, the computations between run in f32.
//! The int8 build computes the same tensors in integers and requantizes with a fixed-point
//! multiplier (rounding half toward +inf) where onnxruntime divides in float (rounding half to
//! even), so an int8 value can be one step apart where a product lands on or next to a tie;
//! `compiler/tests/quantize_export.rs` measures how far apart the outputs are.

use std::path::Path;

use qcc_codegen::target::Precision;
use qcc_codegen::Target;
use qcc_ir::{Graph, Op, QParams, ValueDef, ValueId};
use qcc_passes::quant::{InsertQdq, QuantizeOptions};
use qcc_passes::PassReport;

use crate::driver::{self, DriverError};
use crate::onnx::export::{write_model, ExportOptions};
use crate::quant_args::QuantArgs;

/// The opset the QDQ model is written at: per-axis QuantizeLinear/DequantizeLinear (the
/// `axis` attribute with 1-D scales and zero points) need 13.
pub const QDQ_OPSET: i64 = 13;

/// The target `qcc quantize` assumes without `--target`: it picks the default profile.
pub const DEFAULT_TARGET: &str = "x86_64-int8";

/// A quantized model: the QDQ graph and what the passes did.
pub struct QuantizedModel {
    pub graph: Graph,
    pub reports: Vec<PassReport>,
}

/// Runs the passes before quantization ([`qcc_passes::calibration_pipeline`]) and the
/// `quantize` pass on `graph`: the QDQ graph an int8 compile of `target` starts from.
pub fn quantize_graph(
    mut graph: Graph,
    target: &Target,
    options: QuantizeOptions,
) -> Result<QuantizedModel, DriverError> {
    let pipeline_options = driver::pipeline_options(Some(target));
    let mut pm = qcc_passes::calibration_pipeline(&pipeline_options);
    pm.add(InsertQdq::new(options));
    let reports = pm.run(&mut graph, None, None)?;
    Ok(QuantizedModel { graph, reports })
}

/// Fails on the first node (in topological order) whose op exists only in qcc: ONNX has no
/// node for a fused op or a realized integer op, and writing an expansion of them would hide
/// that the QDQ graph is not what the `quantize` pass produced.
pub fn check_standard_ops(graph: &Graph) -> Result<(), DriverError> {
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let qcc_only = matches!(
            node.op,
            Op::FusedConv { .. }
                | Op::FusedGemm { .. }
                | Op::QuantizedConv { .. }
                | Op::QuantizedMatMul { .. }
                | Op::QuantizedAdd { .. }
                | Op::QuantizedGlobalAveragePool { .. }
        );
        if qcc_only {
            return Err(DriverError::Other(format!(
                "node '{}' ({}) is a qcc-only op: the QDQ model holds standard ONNX ops only \
                 (fusion and int8 realization run after the quantize pass, so this node should \
                 not be in the quantized graph)",
                node.name,
                node.op.name()
            )));
        }
    }
    Ok(())
}

/// Writes a QDQ graph as an ONNX model at [`QDQ_OPSET`].
pub fn write_qdq_model(graph: &Graph, path: &Path) -> Result<(), DriverError> {
    check_standard_ops(graph)?;
    let opts = ExportOptions {
        dynamic_batch: false,
        opset: QDQ_OPSET,
    };
    write_model(graph, &opts, path).map_err(|e| DriverError::Other(e.to_string()))
}

/// The int8 target named by `name` (default [`DEFAULT_TARGET`]); a float target is an error,
/// since it would not quantize at all.
pub fn int8_target(name: Option<&str>) -> Result<Target, DriverError> {
    let target = driver::parse_target(name.unwrap_or(DEFAULT_TARGET))?;
    if target.precision() != Precision::Int8 {
        return Err(DriverError::Other(format!(
            "--target {}: qcc quantize needs an int8 target (e.g. {DEFAULT_TARGET}, \
             aarch64-int8); this one computes in {}",
            target.name(),
            target.precision().name()
        )));
    }
    Ok(target)
}

/// `qcc quantize MODEL -o OUTPUT`: imports `model` (batch 1), quantizes it as `quant` says
/// for `target` and writes the QDQ model to `output`.
pub fn quantize_model(
    model: &Path,
    target: &Target,
    quant: &QuantArgs,
    output: &Path,
) -> Result<QuantizedModel, DriverError> {
    if target.precision() != qcc_codegen::target::Precision::Int8 {
        return Err(DriverError::Other(format!(
            "target {} does not quantize",
            target.name()
        )));
    }
    if quant.io != crate::quant_args::IoMode::Float {
        return Err(DriverError::Other(
            "qcc quantize writes a QDQ model with the original float inputs and outputs; drop \
             --io"
                .into(),
        ));
    }
    let options = quant.static_options(model, target)?;
    let graph = driver::load_model(model, 1)?;
    let quantized = quantize_graph(graph, target, options)
        .map_err(|e| DriverError::Other(format!("{}: {e}", model.display())))?;
    write_qdq_model(&quantized.graph, output)?;
    Ok(quantized)
}

/// The parameters of graph output `output` when a DequantizeLinear produces it: one step of
/// the output is its scale.
pub fn output_qparams(graph: &Graph, output: ValueId) -> Option<&QParams> {
    let ValueDef::Node { node, .. } = graph.value(output).def else {
        return None;
    };
    match &graph.node(node).op {
        Op::DequantizeLinear(q) => Some(q),
        _ => None,
    }
}

/// One line per graph output: quantized (type and scale) or f32.
pub fn describe_outputs(graph: &Graph) -> Vec<String> {
    graph
        .outputs()
        .iter()
        .map(|&o| {
            let name = &graph.value(o).name;
            match output_qparams(graph, o) {
                Some(q) => format!("output '{name}': quantized, {q}"),
                None => format!("output '{name}': f32 (not quantized)"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration_data::DataSource;
    use crate::onnx::{import_file, ImportOptions};
    use qcc_ir::Tensor;
    use qcc_passes::quant::{Profile, RangeMethods};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("qcc-qexp-unit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the temp directory");
        d
    }

    /// tiny-cnn quantized with `profile` from statistics of four seeded random samples.
    fn tiny_cnn_qdq(profile: &str) -> (Graph, Tensor) {
        let graph = crate::zoo::build("tiny-cnn", &crate::zoo::ZooOptions { seed: 2, batch: 1 })
            .expect("zoo model");
        let source = DataSource::Synthetic { count: 4, seed: 9 };
        let stats =
            crate::calibrate::calibrate(Path::new("tiny.onnx"), &graph, &source, None, false)
                .expect("calibrate");
        let input = graph.input_values()[0];
        let ty = graph.value(input).ty.clone();
        let x = crate::driver::random_tensor(&ty, &mut crate::rng::SeededRng::new(4));
        let options = QuantizeOptions {
            profile: Profile::parse(profile).expect("profile"),
            stats: Arc::new(stats),
            methods: RangeMethods::default(),
            exclude: Vec::new(),
            quantized_io: false,
        };
        let target = int8_target(None).expect("target");
        let qdq = quantize_graph(graph, &target, options)
            .expect("quantize")
            .graph;
        (qdq, x)
    }

    #[test]
    fn the_exported_qdq_model_reimports_to_the_same_values_bit_for_bit() {
        let dir = temp_dir("reimport");
        for profile in ["x86-vnni", "tensorrt", "tvm"] {
            let (qdq, x) = tiny_cnn_qdq(profile);
            let count = |g: &Graph, op: &str| {
                g.petgraph()
                    .node_weights()
                    .filter(|n| n.op.name() == op)
                    .count()
            };
            assert!(
                count(&qdq, "QuantizeLinear") > 0,
                "{profile}: nothing quantized"
            );
            let path = dir.join(format!("{profile}.onnx"));
            write_qdq_model(&qdq, &path).expect("write");
            let back = import_file(&path, &ImportOptions::default()).expect("re-import");
            for op in ["QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"] {
                assert_eq!(count(&back, op), count(&qdq, op), "{profile}: {op} nodes");
            }
            let input_name = qdq.value(qdq.input_values()[0]).name.clone();
            let inputs = HashMap::from([(input_name, x)]);
            let before = qcc_ir::eval::run(&qdq, &inputs).expect("interpreter before");
            let after = qcc_ir::eval::run(&back, &inputs).expect("interpreter after");
            assert_eq!(before.len(), after.len());
            for ((&o, a), b) in qdq.outputs().iter().zip(&before).zip(&after) {
                let name = &qdq.value(o).name;
                assert_eq!(a.ty(), b.ty(), "{profile}: output {name}");
                assert_eq!(
                    a.to_le_bytes(),
                    b.to_le_bytes(),
                    "{profile}: output {name} changed through export and import"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn per_channel_weights_and_int32_biases_are_written_as_onnx_wants() {
        let (qdq, _) = tiny_cnn_qdq("x86-vnni");
        let opts = ExportOptions {
            dynamic_batch: false,
            opset: QDQ_OPSET,
        };
        let model = crate::onnx::export::to_model_proto(&qdq, &opts).expect("export");
        let gp = model.graph.expect("graph");
        let init = |name: &str| gp.initializer.iter().find(|t| t.name == name);
        let (mut per_axis, mut int32) = (0, 0);
        for n in gp.node.iter().filter(|n| n.op_type == "DequantizeLinear") {
            let x = init(&n.input[0]);
            let scale = init(&n.input[1]).expect("scale initializer");
            let zp = init(&n.input[2]).expect("zero-point initializer");
            if let Some(a) = n.attribute.iter().find(|a| a.name == "axis") {
                per_axis += 1;
                assert_eq!(
                    scale.dims.len(),
                    1,
                    "{}: per-axis scale must be 1-D",
                    n.name
                );
                assert_eq!(zp.dims, scale.dims, "{}: zero points", n.name);
                let x = x.expect("per-axis DQ of a weight");
                assert_eq!(
                    x.dims[a.i as usize], scale.dims[0],
                    "{}: axis length",
                    n.name
                );
            } else {
                assert!(
                    scale.dims.is_empty(),
                    "{}: per-tensor scale is a scalar",
                    n.name
                );
            }
            assert_eq!(zp.data_type, x.map_or(zp.data_type, |x| x.data_type));
            if zp.data_type == crate::onnx::proto::DataType::Int32 as i32 {
                int32 += 1;
                assert!(
                    zp.raw_data.iter().all(|&b| b == 0),
                    "{}: int32 zp is 0",
                    n.name
                );
            }
        }
        assert!(
            per_axis > 0,
            "no per-channel weight DQ in the x86-vnni model"
        );
        assert!(int32 > 0, "no int32 bias DQ in the x86-vnni model");
    }

    #[test]
    fn a_qcc_only_op_is_an_error_naming_the_node() {
        let mut g =
            crate::zoo::build("tiny-cnn", &crate::zoo::ZooOptions::default()).expect("zoo model");
        // The full fp32 pipeline fuses Conv + Relu into FusedConv.
        crate::driver::optimize(&mut g, &crate::driver::pipeline_options(None), None, None)
            .expect("optimize");
        let path = temp_dir("fused").join("fused.onnx");
        let err = write_qdq_model(&g, &path).expect_err("a fused graph is not a QDQ model");
        let text = err.to_string();
        assert!(text.contains("qcc-only"), "{text}");
        assert!(!path.exists(), "nothing is written on error");
        // The error names the first qcc-only node in topological order, and its op.
        let first = g
            .topo_order()
            .expect("order")
            .into_iter()
            .map(|id| g.node(id))
            .find(|n| matches!(n.op, Op::FusedConv { .. } | Op::FusedGemm { .. }))
            .expect("a fused node");
        assert!(
            text.contains(&format!("'{}' ({})", first.name, first.op.name())),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn only_int8_targets_quantize() {
        assert_eq!(int8_target(None).expect("default").name(), DEFAULT_TARGET);
        let err = int8_target(Some("native-fp32")).expect_err("fp32");
        assert!(err.to_string().contains("int8 target"), "{err}");
        assert!(int8_target(Some("aarch64-int8")).is_ok());
    }
}
