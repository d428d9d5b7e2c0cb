//! `quantized-io` (`--io int8`): the compiled model takes and returns the quantized tensors
//! themselves, for applications that already hold 8-bit data, instead of quantizing its
//! float inputs and dequantizing its outputs.
//!
//! After realization, a graph input `x` read only by QuantizeLinear nodes of one per-tensor
//! parameter set `p` becomes an 8-bit input (same name and dims), and a graph output `y`
//! computed by a per-tensor DequantizeLinear of `y.q` becomes 8-bit. The API type is always
//! **u8**, the type the int8 kernels store every activation in: a u8 tensor keeps `p`, an i8
//! one (the `tensorrt`, `tvm` and `arm` profiles) is exposed as `u = q + 128` with zero
//! point `zp + 128` (the same real values; an application holding i8 data flips the top
//! bit). The boundary stays explicit, which makes both exact and self-describing:
//! `x(u8) → DQ(p_api) → Q(p) → …` for an input (`(u − zp)·s / s` rounds back to `u − zp`
//! exactly for 8-bit `u`) and `… → DQ(p) → Q(p_api) → y(u8)` for an output. The input's
//! DequantizeLinear and the output's QuantizeLinear carry the API parameters
//! ([`qcc_ir::quant::io_qparams`]), which the back end publishes in the header. The round trip costs one
//! pass over each input and output, small beside the layers. Inputs and outputs that are not
//! quantized at the boundary stay f32, with a note.

use std::collections::HashMap;
use std::sync::Mutex;

use qcc_ir::{DType, Graph, GraphError, Op, QParams, ValueDef, ValueId};

use crate::{Pass, PassError};

const PASS: &str = "quantized-io";

#[derive(Default)]
pub struct QuantizedIo {
    notes: Mutex<Vec<String>>,
}

impl Pass for QuantizedIo {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let (new, notes) =
            expose(graph).map_err(|source| PassError::Graph { pass: PASS, source })?;
        *self.notes.lock().unwrap_or_else(|e| e.into_inner()) = notes;
        match new {
            Some(g) => {
                *graph = g;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The parameters a quantized tensor of parameters `p` has at the API: `p` for u8, shifted
/// by 128 into u8 for i8. `None` unless `p` is per tensor and 8-bit.
pub fn api_qparams(p: &QParams) -> Option<QParams> {
    if !p.is_per_tensor() {
        return None;
    }
    let (scale, zp) = p.channel(0);
    match p.dtype() {
        DType::U8 => Some(p.clone()),
        DType::I8 => QParams::per_tensor(DType::U8, scale, zp + 128).ok(),
        _ => None,
    }
}

/// The parameters every reader of input `x` quantizes it with, when all readers are
/// QuantizeLinear nodes with one per-tensor 8-bit parameter set.
fn input_quantization(graph: &Graph, x: ValueId) -> Result<QParams, String> {
    let readers = graph.consumers(x);
    let mut params: Option<&QParams> = None;
    for &(n, _) in &readers {
        let node = graph.node(n);
        let Op::QuantizeLinear(p) = &node.op else {
            return Err(format!("read by '{}' ({})", node.name, node.op.name()));
        };
        if params.is_some_and(|q| q != p) {
            return Err("quantized with two different parameter sets".into());
        }
        params = Some(p);
    }
    let p = params.ok_or("not read by any node")?;
    api_qparams(p).ok_or_else(|| format!("quantized as {p}, not 8-bit per tensor"))?;
    Ok(p.clone())
}

/// The DequantizeLinear that computes output `y`: its parameters and input.
fn output_quantization(graph: &Graph, y: ValueId) -> Result<(QParams, ValueId), String> {
    let ValueDef::Node { node, .. } = graph.value(y).def else {
        return Err("not computed by a node".into());
    };
    let node = graph.node(node);
    match &node.op {
        Op::DequantizeLinear(p) if api_qparams(p).is_some() => Ok((p.clone(), node.inputs[0])),
        other => Err(format!(
            "computed in f32 by '{}' ({})",
            node.name,
            other.name()
        )),
    }
}

/// The rewritten graph (`None` when no input or output is quantized at the boundary) and
/// the notes naming what stays f32.
fn expose(graph: &Graph) -> Result<(Option<Graph>, Vec<String>), GraphError> {
    let mut notes = Vec::new();
    let mut inputs: HashMap<ValueId, QParams> = HashMap::new();
    for x in graph.input_values() {
        match input_quantization(graph, x) {
            Ok(p) => {
                inputs.insert(x, p);
            }
            Err(why) => notes.push(format!("input '{}' stays f32: {why}", graph.value(x).name)),
        }
    }
    let mut outputs = Vec::new();
    for &y in graph.outputs() {
        match output_quantization(graph, y) {
            Ok(_) => outputs.push(y),
            Err(why) => notes.push(format!("output '{}' stays f32: {why}", graph.value(y).name)),
        }
    }
    if inputs.is_empty() && outputs.is_empty() {
        return Ok((None, notes));
    }
    let retyped: HashMap<ValueId, DType> = inputs.keys().map(|&x| (x, DType::U8)).collect();
    let mut new = graph.rebuild_with_input_types(&retyped, |r, node| {
        let exposed = match &node.op {
            Op::QuantizeLinear(p) => inputs.get(&node.inputs[0]).filter(|&q| q == p),
            _ => None,
        };
        let Some(p) = exposed else {
            return r.copy_node(node);
        };
        let x = r.map(node.inputs[0])?;
        // DQ(api) then Q(p): exact, and the DQ names the input's parameters.
        let api = api_qparams(p).ok_or_else(|| GraphError::Other("i8 parameters".into()))?;
        let name = r.old().value(node.outputs[0]).name.clone();
        let float = r.new.fresh_name(&format!("{name}.api"));
        let dq = r.new.add_node(
            r.new.fresh_name(&format!("{}.api", node.name)),
            Op::DequantizeLinear(api),
            vec![x],
            vec![float],
        )?;
        let float = r.new.node(dq).outputs[0];
        let q = r.new.add_node(
            node.name.clone(),
            Op::QuantizeLinear(p.clone()),
            vec![float],
            vec![name],
        )?;
        Ok(r.new.node(q).outputs.clone())
    })?;
    let mut new_outputs = new.outputs().to_vec();
    for (j, &old) in graph.outputs().iter().enumerate() {
        if !outputs.contains(&old) {
            continue;
        }
        let y = new_outputs[j];
        let (p, _) = output_quantization(&new, y).map_err(GraphError::Other)?;
        let api = api_qparams(&p).ok_or_else(|| GraphError::Other("8-bit parameters".into()))?;
        let name = new.value(y).name.clone();
        new.rename_value(y, &new.fresh_name(&format!("{name}.float")))?;
        // Q(api) after the DQ: exact, and it names the output's parameters.
        let n = new.add_node(
            new.fresh_name(&format!("{name}.api")),
            Op::QuantizeLinear(api),
            vec![y],
            vec![name],
        )?;
        new_outputs[j] = new.node(n).outputs[0];
    }
    new.set_outputs(new_outputs);
    Ok((Some(new), notes))
}
