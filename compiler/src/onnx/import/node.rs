//! What an op's import function sees of one ONNX node: its inputs as graph values, typed
//! attribute access with ONNX defaults, and the build-time values of inputs that must be static.

use super::tensor::tensor_from_proto;
use super::ImportError;
use crate::onnx::proto::{AttributeProto, AttributeType, NodeProto, TensorProto};
use qcc_ir::{Graph, Op, Tensor, TensorType, ValueId};
use std::collections::HashSet;
use std::path::Path;

/// What one ONNX node becomes. Short-lived (one per node), so the size difference between
/// the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lowered {
    /// One IR node; `outputs` are the value names of the IR op's outputs, in order.
    Node {
        op: Op,
        inputs: Vec<ValueId>,
        outputs: Vec<String>,
    },
    /// A constant named after the node's first output.
    Constant(Tensor),
}

pub(crate) struct NodeCtx<'a> {
    pub proto: &'a NodeProto,
    /// Unique node name (generated when the model's is empty or repeated).
    pub name: String,
    /// The opset version of the node's domain.
    pub opset: i64,
    pub graph: &'a Graph,
    /// One entry per ONNX input; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<ValueId>>,
    /// Value names read by some node or graph output, to tell used outputs from dangling ones.
    pub used: &'a HashSet<String>,
    /// Every value name in the model, so generated names never collide with a later one.
    pub taken: &'a HashSet<String>,
    /// The model's directory, for tensor attributes stored as external data.
    pub base_dir: Option<&'a Path>,
}

impl<'a> NodeCtx<'a> {
    pub fn op_type(&self) -> &str {
        &self.proto.op_type
    }

    pub fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Node {
            node: self.name.clone(),
            op: self.proto.op_type.clone(),
            message: message.into(),
        }
    }

    pub fn attr_err(&self, attribute: &str, message: impl Into<String>) -> ImportError {
        ImportError::Attribute {
            node: self.name.clone(),
            op: self.proto.op_type.clone(),
            attribute: attribute.to_string(),
            message: message.into(),
        }
    }

    // ---- inputs ----

    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn required(&self, i: usize, what: &str) -> Result<ValueId, ImportError> {
        self.input(i)
            .ok_or_else(|| self.err(format!("input {i} ({what}) is missing")))
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.graph.value(id).ty
    }

    pub fn rank(&self, id: ValueId) -> usize {
        self.ty(id).rank()
    }

    /// The build-time value of input `i`: `None` when the input is omitted, an error when it
    /// is given but not known at import time (the IR needs it as a static attribute).
    pub fn known(&self, i: usize, what: &str) -> Result<Option<&'a Tensor>, ImportError> {
        let Some(id) = self.input(i) else {
            return Ok(None);
        };
        match self.graph.known_value(id) {
            Some(t) => Ok(Some(t)),
            None => Err(self.err(format!(
                "input {i} ({what}, '{}') must be a constant or computable at import time",
                self.graph.value(id).name
            ))),
        }
    }

    pub fn known_i64s(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, ImportError> {
        match self.known(i, what)? {
            None => Ok(None),
            Some(t) => t.to_i64_vec().map(Some).ok_or_else(|| {
                self.err(format!(
                    "input {i} ({what}) must hold integers, holds {}",
                    t.dtype()
                ))
            }),
        }
    }

    /// A one-element input as f32 (float or integer types).
    pub fn known_scalar(&self, i: usize, what: &str) -> Result<Option<f32>, ImportError> {
        match self.known(i, what)? {
            None => Ok(None),
            Some(t) if t.numel() == 1 => Ok(Some(t.to_f64_vec()[0] as f32)),
            Some(t) => Err(self.err(format!(
                "input {i} ({what}) must have one element, has shape {}",
                t.shape()
            ))),
        }
    }

    // ---- outputs ----

    /// The name of ONNX output `i`, `None` when omitted.
    pub fn output(&self, i: usize) -> Option<&str> {
        self.proto
            .output
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Whether output `i` is given and read by a node or a graph output.
    pub fn output_used(&self, i: usize) -> bool {
        self.output(i).is_some_and(|n| self.used.contains(n))
    }

    /// Names for the first `n` outputs; omitted ones get a generated name nobody else uses.
    pub fn output_names(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| match self.output(i) {
                Some(s) => s.to_string(),
                None => {
                    let base = format!("{}:out{i}", self.name);
                    let mut name = base.clone();
                    let mut k = 1;
                    while self.taken.contains(&name) || self.graph.value_by_name(&name).is_some() {
                        name = format!("{base}_{k}");
                        k += 1;
                    }
                    name
                }
            })
            .collect()
    }

    /// The usual result: one IR node taking `inputs`, named outputs as the op produces.
    pub fn node(&self, op: Op, inputs: Vec<ValueId>) -> Result<Lowered, ImportError> {
        let outputs = self.output_names(op.num_outputs());
        Ok(Lowered::Node {
            op,
            inputs,
            outputs,
        })
    }

    // ---- attributes ----

    pub fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    /// The attribute, if present, after checking its declared kind. IR version 1 files carry
    /// no kind at all, so `Undefined` is accepted too.
    fn attr_of(
        &self,
        name: &str,
        kind: AttributeType,
    ) -> Result<Option<&'a AttributeProto>, ImportError> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.kind() == kind || a.kind() == AttributeType::Undefined => Ok(Some(a)),
            Some(a) => Err(self.attr_err(name, format!("must be {kind}, is {}", a.kind()))),
        }
    }

    pub fn attr_i(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self
            .attr_of(name, AttributeType::Int)?
            .map_or(default, |a| a.i))
    }

    pub fn attr_i_required(&self, name: &str) -> Result<i64, ImportError> {
        self.attr_of(name, AttributeType::Int)?
            .map(|a| a.i)
            .ok_or_else(|| self.attr_err(name, "is required"))
    }

    pub fn attr_bool(&self, name: &str, default: bool) -> Result<bool, ImportError> {
        match self.attr_i(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.attr_err(name, format!("must be 0 or 1, is {v}"))),
        }
    }

    pub fn attr_f(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self
            .attr_of(name, AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self
            .attr_of(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self
            .attr_of(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn attr_str(&self, name: &str) -> Result<Option<String>, ImportError> {
        match self.attr_of(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .map_err(|_| self.attr_err(name, "is not valid UTF-8")),
        }
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, ImportError> {
        match self.attr_of(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.attr_err(name, "holds no tensor"))
            }
        }
    }

    pub fn attr_tensor_value(&self, name: &str) -> Result<Option<Tensor>, ImportError> {
        match self.attr_tensor(name)? {
            None => Ok(None),
            Some(t) => tensor_from_proto(t, self.base_dir)
                .map(Some)
                .map_err(|e| self.attr_err(name, e.to_string())),
        }
    }

    /// Non-negative integers bounded by [`MAX_SIZE_ATTR`] (window sizes, strides, pads...).
    pub fn attr_sizes(&self, name: &str) -> Result<Option<Vec<usize>>, ImportError> {
        match self.attr_ints(name)? {
            None => Ok(None),
            Some(v) => to_sizes(&v).map(Some).map_err(|m| self.attr_err(name, m)),
        }
    }

    /// Normalises a possibly negative axis against `rank` (ONNX accepts `-rank..rank`).
    pub fn axis(&self, what: &str, axis: i64, rank: usize) -> Result<usize, ImportError> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.err(format!("{what} {axis} is out of range for rank {rank}")))
    }

    /// Normalised, sorted axes; duplicates are an error.
    pub fn axes(&self, what: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, ImportError> {
        let mut out = axes
            .iter()
            .map(|&a| self.axis(what, a, rank))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        if out.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.err(format!("{what} {axes:?} repeat an axis")));
        }
        Ok(out)
    }
}

pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Bound on size-like attributes: far above real models, low enough that window arithmetic
/// (padded sizes, products of output dims) cannot overflow on a corrupt file.
pub(crate) const MAX_SIZE_ATTR: i64 = 1 << 24;

pub(crate) fn to_sizes(v: &[i64]) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&x| {
            if (0..=MAX_SIZE_ATTR).contains(&x) {
                Ok(x as usize)
            } else {
                Err(format!("value {x} in {v:?} is negative or too large"))
            }
        })
        .collect()
}
