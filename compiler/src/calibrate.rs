//! `qcc calibrate`: statistics of every float tensor of a model over calibration samples.
//!
//! Each sample runs through the reference interpreter on the graph as the `quantize` pass
//! will see it: after the canonical passes and batch-norm folding
//! ([`qcc_passes::calibration_pipeline`]), before any fusion, so every tensor the pass may
//! quantize exists and has its name. Every f32 value that is not a constant feeds its
//! [`TensorStats`] (min/max and a histogram: bounded memory whatever the
//! number of samples). Weights (f32 constants of rank ≥ 2) get per-output-channel ranges.
//! The file stores statistics, not scales, so a different profile or range method needs no
//! new run.
//!
//! Not yet: running the compiled fp32 model instead of the interpreter (much faster on large
//! models; it needs the compiled program to expose intermediate values).

use std::collections::HashMap;
use std::path::Path;

use qcc_ir::{DType, Graph, Tensor, ValueDef};
use qcc_passes::quant::stats::{CalibrationStats, ChannelRanges};

use crate::calibration_data::{load_samples, DataSource};
use crate::driver::DriverError;

/// Calibrates `graph` (as imported from `model`) on the samples of `source` (at most `limit`);
/// `progress` draws a bar on stderr.
pub fn calibrate(
    model: &Path,
    graph: &Graph,
    source: &DataSource,
    limit: Option<usize>,
    progress: bool,
) -> Result<CalibrationStats, DriverError> {
    let samples = load_samples(graph, source, limit)?;
    let mut prepared = graph.clone();
    let opts = crate::driver::pipeline_options(None);
    qcc_passes::calibration_pipeline(&opts).run(&mut prepared, None, None)?;
    let graph = &prepared;
    let model_name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let synthetic = matches!(source, DataSource::Synthetic { .. });
    let mut stats = CalibrationStats::new(&model_name, synthetic);
    for (v, value) in graph.values() {
        let ValueDef::Constant(t) = &value.def else {
            continue;
        };
        if t.dtype() == DType::F32 && t.dims().len() >= 2 {
            let data: Vec<f32> = t
                .as_f32()
                .map_err(|e| DriverError::Other(format!("{e:?}")))?
                .iter()
                .copied()
                .collect();
            let ranges = ChannelRanges::from_weights(&data, t.dims(), 0).map_err(|e| {
                DriverError::Other(format!("weight '{}': {e}", graph.value(v).name))
            })?;
            stats.weights.insert(value.name.clone(), ranges);
        }
    }
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(samples.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "calibrating {bar:40} {pos}/{len} samples ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let input_names: Vec<String> = graph
        .input_values()
        .iter()
        .map(|&v| graph.value(v).name.clone())
        .collect();
    for sample in samples {
        let inputs: HashMap<String, Tensor> = input_names.iter().cloned().zip(sample).collect();
        let values = qcc_ir::eval::run_all(graph, &inputs)?;
        for (v, tensor) in &values {
            let value = graph.value(*v);
            if matches!(value.def, ValueDef::Constant(_)) || tensor.dtype() != DType::F32 {
                continue;
            }
            let data = tensor
                .as_f32()
                .map_err(|e| DriverError::Other(format!("{e:?}")))?;
            match data.as_slice() {
                Some(slice) => stats.observe(&value.name, slice),
                None => stats.observe(&value.name, &data.iter().copied().collect::<Vec<_>>()),
            }
        }
        stats.samples += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qcc_ir::{Activation, Op, TensorType};

    #[test]
    fn every_float_tensor_gets_statistics_and_weights_get_channel_ranges() {
        let mut g = Graph::new("g");
        let x = g
            .add_input("x", TensorType::new(DType::F32, [1, 3]))
            .unwrap();
        let w = g
            .add_constant(
                "w",
                Tensor::from_f32(&[2, 3], vec![1.0, -2.0, 3.0, 0.5, 0.25, -4.0]),
            )
            .unwrap();
        let attrs = qcc_ir::GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        let n = g
            .add_node("fc", Op::Gemm(attrs), vec![x, w], vec!["h".into()])
            .unwrap();
        let h = g.node(n).outputs[0];
        let r = g
            .add_node(
                "relu",
                Op::Activation(Activation::Relu),
                vec![h],
                vec!["y".into()],
            )
            .unwrap();
        let y = g.node(r).outputs[0];
        g.set_outputs(vec![y]);
        let source = DataSource::Synthetic { count: 5, seed: 3 };
        let stats = calibrate(Path::new("dir/m.onnx"), &g, &source, None, false).unwrap();
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
