//! The e-graph's language and analysis.
//!
//! `qcc_ir::Op` holds f32 attributes, so it is neither `Eq` nor `Hash` and cannot sit in an
//! e-node directly. E-nodes carry an interned [`OpKey`] instead: the analysis keeps each
//! distinct op once, keyed by its `Debug` text (Rust prints f32 in the shortest form that
//! round-trips, so equal texts mean bit-equal attributes, `-0.0` and `0.0` stay apart).
//! Graph inputs and constants are leaves; constants are interned too and held in `Arc` so
//! that the e-graph never copies a weight tensor.

use egg::{define_language, Analysis, DidMerge, EGraph, Id};
use qcc_ir::{Op, Tensor, TensorType};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Declares a `u32` index newtype that prints and parses as `prefix<N>`, as egg's
/// `define_language!` requires of leaf data.
macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or_else(|| format!("not a {}: '{s}'", stringify!($name)))
            }
        }
    };
}

index_type!(
    /// An op (with its attributes) interned in [`TensorAnalysis::ops`].
    OpKey,
    "op"
);
index_type!(
    /// A constant tensor interned in [`TensorAnalysis::consts`].
    ConstKey,
    "const"
);
index_type!(
    /// A graph input, by position.
    InputKey,
    "input"
);
index_type!(
    /// Which output of a multi-output node a [`TensorLang::Proj`] selects.
    OutputIndex,
    "out"
);

define_language! {
    /// Tensor expressions: every IR op (fused ops included) as `Op(key, inputs)`. A node with
    /// several outputs (Split) is a tuple e-class; `Proj(i, tuple)` is its i-th output.
    pub enum TensorLang {
        Input(InputKey),
        Const(ConstKey),
        Op(OpKey, Vec<Id>),
        Proj(OutputIndex, [Id; 1]),
    }
}

pub type TGraph = EGraph<TensorLang, TensorAnalysis>;

/// A constant of the e-graph: its name (kept for diagnostics and the rebuilt graph).
#[derive(Debug, Clone)]
pub struct ConstEntry {
    pub name: String,
    pub tensor: Arc<Tensor>,
}

#[derive(Debug, Clone)]
pub struct InputEntry {
    pub name: String,
    pub ty: TensorType,
}

/// What the analysis knows about an e-class.
#[derive(Debug, Clone)]
pub struct ClassData {
    /// One type per output: one for a value, several for a tuple. Empty when inference failed
    /// (rules never add such nodes: [`add_op`] checks first).
    pub types: Vec<TensorType>,
    /// The class's value when it is a constant.
    pub constant: Option<Arc<Tensor>>,
    /// The name of the value this class stood for in the input graph (or a rule's choice).
    pub name: Option<Arc<str>>,
}

impl ClassData {
    /// The type of a single-output class.
    pub fn ty(&self) -> Option<&TensorType> {
        match self.types.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

/// Interning tables and the side information rules need; the egg analysis of [`TensorLang`].
#[derive(Debug, Default)]
pub struct TensorAnalysis {
    pub ops: Vec<Op>,
    op_index: HashMap<String, OpKey>,
    pub consts: Vec<ConstEntry>,
    pub inputs: Vec<InputEntry>,
    /// Node names (for diagnostics) of e-nodes, as they were added; the first name wins.
    pub node_names: Vec<(TensorLang, Arc<str>)>,
    node_name_seen: HashMap<TensorLang, usize>,
    /// Constants computed by rules (folded weights), keyed by what they were computed from,
    /// so that a rule matching again in a later iteration adds nothing new and the run can
    /// saturate, and weights are folded once.
    derived: HashMap<String, Vec<ConstKey>>,
    derived_set: std::collections::HashSet<ConstKey>,
}

impl TensorAnalysis {
    pub fn intern_op(&mut self, op: Op) -> OpKey {
        let key = format!("{op:?}");
        if let Some(&k) = self.op_index.get(&key) {
            return k;
        }
        let k = OpKey(self.ops.len() as u32);
        self.ops.push(op);
        self.op_index.insert(key, k);
        k
    }

    pub fn op(&self, key: OpKey) -> &Op {
        &self.ops[key.index()]
    }

    pub fn push_const(&mut self, name: String, tensor: Arc<Tensor>) -> ConstKey {
        let k = ConstKey(self.consts.len() as u32);
        self.consts.push(ConstEntry { name, tensor });
        k
    }

    /// Whether a rule computed this constant (rather than the input graph holding it).
    pub fn is_derived(&self, k: ConstKey) -> bool {
        self.derived_set.contains(&k)
    }

    pub fn node_name(&self, node: &TensorLang) -> Option<&str> {
        self.node_name_seen
            .get(node)
            .map(|&i| &*self.node_names[i].1)
    }

    pub fn record_node_name(&mut self, node: &TensorLang, name: &str) {
        if !self.node_name_seen.contains_key(node) {
            self.node_name_seen
                .insert(node.clone(), self.node_names.len());
            self.node_names.push((node.clone(), Arc::from(name)));
        }
    }
}

impl Analysis<TensorLang> for TensorAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut TGraph, enode: &TensorLang, _id: Id) -> ClassData {
        let a = &egraph.analysis;
        match enode {
            TensorLang::Input(k) => {
                let input = &a.inputs[k.index()];
                ClassData {
                    types: vec![input.ty.clone()],
                    constant: None,
                    name: Some(Arc::from(input.name.as_str())),
                }
            }
            TensorLang::Const(k) => {
                let c = &a.consts[k.index()];
                ClassData {
                    types: vec![c.tensor.ty()],
                    constant: Some(c.tensor.clone()),
                    name: Some(Arc::from(c.name.as_str())),
                }
            }
            TensorLang::Op(k, children) => {
                let types = infer_op(egraph, a.op(*k), children).unwrap_or_default();
                ClassData {
                    types,
                    constant: None,
                    name: None,
                }
            }
            TensorLang::Proj(i, [tuple]) => ClassData {
                types: egraph[*tuple]
                    .data
                    .types
                    .get(i.index())
                    .cloned()
                    .into_iter()
                    .collect(),
                constant: None,
                name: None,
            },
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        debug_assert!(
            a.types.is_empty() || b.types.is_empty() || a.types == b.types,
            "merged classes of different types: {:?} and {:?}",
            a.types,
            b.types
        );
        let mut changed_a = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            changed_a = true;
        }
        if a.constant.is_none() && b.constant.is_some() {
            a.constant = b.constant.clone();
            changed_a = true;
        }
        if a.name.is_none() && b.name.is_some() {
            a.name = b.name.clone();
            changed_a = true;
        }
        let changed_b = (b.constant.is_none() && a.constant.is_some())
            || (b.name.is_none() && a.name.is_some());
        DidMerge(changed_a, changed_b)
    }
}

/// Output types of `op` applied to the classes `children`; an error when they do not fit.
pub fn infer_op(eg: &TGraph, op: &Op, children: &[Id]) -> Result<Vec<TensorType>, String> {
    let mut types = Vec::with_capacity(children.len());
    for &c in children {
        match eg[c].data.ty() {
            Some(t) => types.push(t),
            None => return Err("an input is not a single typed value".into()),
        }
    }
    qcc_ir::infer::infer_types(op, &types)
}

/// Adds `op(children)` named `name` (the name the node takes if it is extracted); `None`, and
/// nothing added, when the op does not accept those inputs.
pub fn add_op(eg: &mut TGraph, op: Op, children: Vec<Id>, name: &str) -> Option<Id> {
    infer_op(eg, &op, &children).ok()?;
    let key = eg.analysis.intern_op(op);
    let node = TensorLang::Op(key, children);
    eg.analysis.record_node_name(&node, name);
    Some(eg.add(node))
}

/// The constants a rule derives from its match, computed once per `key`: a later match of the
/// same thing gets the same constants (and so the same e-nodes) back.
pub fn derived_consts(
    eg: &mut TGraph,
    key: String,
    compute: impl FnOnce() -> Option<Vec<(String, Tensor)>>,
) -> Option<Vec<Id>> {
    let keys = match eg.analysis.derived.get(&key) {
        Some(keys) => keys.clone(),
        None => {
            let tensors = compute()?;
            let keys: Vec<ConstKey> = tensors
                .into_iter()
                .map(|(name, t)| eg.analysis.push_const(name, Arc::new(t)))
                .collect();
            eg.analysis.derived_set.extend(keys.iter().copied());
            eg.analysis.derived.insert(key, keys.clone());
            keys
        }
    };
    Some(
        keys.into_iter()
            .map(|k| eg.add(TensorLang::Const(k)))
            .collect(),
    )
}

/// A short, stable text for a class's identity inside a derived-constant key. Constants are
/// named by their interned key, so two matches on the same weights share the result.
pub fn class_key(eg: &TGraph, id: Id) -> String {
    let class = &eg[id];
    for n in class.iter() {
        if let TensorLang::Const(k) = n {
            return k.to_string();
        }
    }
    format!("class{}", eg.find(id))
}
