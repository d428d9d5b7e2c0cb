//! `.qir` text → graph: recursive descent over the tokens of [`super::lexer`].
//!
//! The graph is built as the text is read, through the same `Graph` methods every other
//! producer uses, so a parsed graph has passed shape inference node by node.

use super::attrs::{build_op, AttrValue, Attrs, OpContext, Spanned};
use super::lexer::{tokenize, Pos, Tok};
use super::{quote_name, ParseError};
use crate::dtype::{DType, Dim, TensorType};
use crate::graph::{Graph, ValueId};
use crate::tensor::Tensor;
use half::f16;
use ndarray::{ArrayD, IxDyn};

pub fn parse_graph(src: &str) -> Result<Graph, ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        i: 0,
        g: Graph::default(),
    };
    p.graph()?;
    Ok(p.g)
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
    g: Graph,
}

type R<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.i + ahead).min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }

    /// The current token, moving past it. Past the end it keeps returning `Eof`; the index
    /// still advances so that stepping back with `self.i -= 1` is always exact.
    fn next(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        self.i += 1;
        t
    }

    fn unexpected<T>(&self, expected: &str) -> R<T> {
        Err(ParseError::at(
            self.pos(),
            format!("expected {expected}, found {}", self.peek().describe()),
        ))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> R<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.unexpected(&format!("'{c}'"))
        }
    }

    fn expect_word(&mut self, w: &str) -> R<()> {
        if matches!(self.peek(), Tok::Word(x) if x == w) {
            self.next();
            Ok(())
        } else {
            self.unexpected(&format!("'{w}'"))
        }
    }

    fn value_name(&mut self, what: &str) -> R<(String, Pos)> {
        match self.next() {
            (Tok::Value(v), pos) => Ok((v, pos)),
            _ => {
                self.i -= 1;
                self.unexpected(what)
            }
        }
    }

    /// A use of a value, which must be defined by an earlier line.
    fn value_use(&mut self) -> R<ValueId> {
        let (name, pos) = self.value_name("a value (%name)")?;
        self.g.value_by_name(&name).ok_or_else(|| {
            ParseError::at(
                pos,
                format!(
                    "undefined value %{} (values must be defined before they are used)",
                    quote_name(&name)
                ),
            )
        })
    }

    fn usize_token(&mut self, what: &str) -> R<usize> {
        match self.peek().clone() {
            Tok::Number(n) => match n.parse::<usize>() {
                Ok(v) => {
                    self.next();
                    Ok(v)
                }
                Err(_) => Err(ParseError::at(
                    self.pos(),
                    format!("expected {what} (a non-negative integer), found {n}"),
                )),
            },
            _ => self.unexpected(what),
        }
    }

    fn dtype(&mut self) -> R<DType> {
        match self.peek().clone() {
            Tok::Word(w) => match DType::from_name(&w) {
                Some(d) => {
                    self.next();
                    Ok(d)
                }
                None => Err(ParseError::at(
                    self.pos(),
                    format!("unknown element type '{w}' (expected {})", dtype_names()),
                )),
            },
            _ => self.unexpected(&format!("an element type ({})", dtype_names())),
        }
    }

    /// `f32[1,3,224,224]`.
    fn tensor_type(&mut self) -> R<TensorType> {
        let dtype = self.dtype()?;
        self.expect_punct('[')?;
        let mut dims = Vec::new();
        if !self.eat_punct(']') {
            loop {
                dims.push(self.usize_token("a dimension")?);
                if self.eat_punct(']') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        Ok(TensorType::new(dtype, dims))
    }

    /// `graph name(inputs) -> (outputs) { statements }`.
    fn graph(&mut self) -> R<()> {
        self.expect_word("graph")?;
        self.g.name = match self.next() {
            (Tok::Word(w), _) => w,
            (Tok::Str(s), _) => s,
            _ => {
                self.i -= 1;
                return self.unexpected("the graph's name");
            }
        };
        self.expect_punct('(')?;
        if !self.eat_punct(')') {
            loop {
                self.graph_input()?;
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        if *self.peek() != Tok::Arrow {
            return self.unexpected("'->'");
        }
        self.next();
        self.expect_punct('(')?;
        let mut outputs = Vec::new();
        if !self.eat_punct(')') {
            loop {
                outputs.push(self.value_name("a graph output (%name)")?);
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        self.expect_punct('{')?;
        while !self.eat_punct('}') {
            self.statement()?;
        }
        if *self.peek() != Tok::Eof {
            return self.unexpected("end of input after the graph's closing '}'");
        }
        let mut ids = Vec::with_capacity(outputs.len());
        for (name, pos) in outputs {
            let id = self.g.value_by_name(&name).ok_or_else(|| {
                ParseError::at(
                    pos,
                    format!("graph output %{} is never defined", quote_name(&name)),
                )
            })?;
            ids.push(id);
        }
        self.g.set_outputs(ids);
        Ok(())
    }

    /// `%x: f32[N=1,3,224,224]`.
    fn graph_input(&mut self) -> R<()> {
        let (name, pos) = self.value_name("a graph input (%name)")?;
        self.expect_punct(':')?;
        let dtype = self.dtype()?;
        self.expect_punct('[')?;
        let mut declared = Vec::new();
        let mut batch = None;
        if !self.eat_punct(']') {
            loop {
                let sym = match self.peek().clone() {
                    Tok::Word(w) => Some(w),
                    Tok::Str(s) => Some(s),
                    _ => None,
                };
                if let Some(sym) = sym {
                    let sym_pos = self.pos();
                    self.next();
                    self.expect_punct('=')?;
                    let bound = self.usize_token(&format!("the size bound to '{sym}'"))?;
                    if batch.is_some_and(|b| b != bound) {
                        return Err(ParseError::at(
                            sym_pos,
                            "symbolic dims bound to different sizes",
                        ));
                    }
                    batch = Some(bound);
                    declared.push(Dim::Symbolic(sym));
                } else {
                    declared.push(Dim::Fixed(
                        self.usize_token("a dimension or a symbolic dim (N=1)")?,
                    ));
                }
                if self.eat_punct(']') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        self.g
            .add_input_declared(name, dtype, declared, batch.unwrap_or(1))
            .map_err(|e| ParseError::at(pos, e.to_string()))?;
        Ok(())
    }

    /// `%a = const ...` or `%a, %b = Op(...) {...} : types @name`.
    fn statement(&mut self) -> R<()> {
        let mut outs = vec![self.value_name("a statement (%name = ...) or '}'")?];
        while self.eat_punct(',') {
            outs.push(self.value_name("another output (%name)")?);
        }
        self.expect_punct('=')?;
        if matches!(self.peek(), Tok::Word(w) if w == "const") {
            self.next();
            let (name, pos) = outs.swap_remove(0);
            if !outs.is_empty() {
                return Err(ParseError::at(pos, "a constant defines exactly one value"));
            }
            let t = self.tensor_literal()?;
            self.g
                .add_constant(name, t)
                .map_err(|e| ParseError::at(pos, e.to_string()))?;
            return Ok(());
        }
        let (op_name, op_pos) = match self.next() {
            (Tok::Word(w), pos) => (w, pos),
            _ => {
                self.i -= 1;
                return self.unexpected("an op name or 'const'");
            }
        };
        self.expect_punct('(')?;
        let mut inputs = Vec::new();
        if !self.eat_punct(')') {
            loop {
                inputs.push(self.value_use()?);
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let mut fields = Vec::new();
        if self.eat_punct('{') {
            fields = self.fields('}')?;
        }
        let mut annotated = Vec::new();
        if self.eat_punct(':') {
            loop {
                let pos = self.pos();
                annotated.push((self.tensor_type()?, pos));
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        let node_name = match self.peek().clone() {
            Tok::NodeName(n) => {
                self.next();
                n
            }
            _ => outs[0].0.clone(),
        };

        let input_types = inputs.iter().map(|&v| self.g.value(v).ty.clone()).collect();
        let ctx = OpContext {
            input_types,
            num_outputs: outs.len(),
        };
        let op = build_op(&op_name, op_pos, Attrs::new(&op_name, op_pos, fields), &ctx)?;
        let out_names = outs.iter().map(|(n, _)| n.clone()).collect();
        let node = self
            .g
            .add_node(node_name, op, inputs, out_names)
            .map_err(|e| ParseError::at(op_pos, e.to_string()))?;

        if !annotated.is_empty() && annotated.len() != outs.len() {
            return Err(ParseError::at(
                annotated[0].1,
                format!(
                    "{} output types given for {} outputs",
                    annotated.len(),
                    outs.len()
                ),
            ));
        }
        let produced = self.g.node(node).outputs.clone();
        for ((ty, pos), id) in annotated.into_iter().zip(produced) {
            let v = self.g.value(id);
            if v.ty != ty {
                return Err(ParseError::at(
                    pos,
                    format!(
                        "value %{} is annotated {ty} but {op_name} infers {}",
                        quote_name(&v.name),
                        v.ty
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `key=attr, ...` up to `close`, which is consumed.
    fn fields(&mut self, close: char) -> R<Vec<(String, Pos, Spanned)>> {
        let mut out: Vec<(String, Pos, Spanned)> = Vec::new();
        if self.eat_punct(close) {
            return Ok(out);
        }
        loop {
            let (key, pos) = match self.next() {
                (Tok::Word(w), pos) => (w, pos),
                _ => {
                    self.i -= 1;
                    return self.unexpected("an attribute name");
                }
            };
            if out.iter().any(|(k, _, _)| *k == key) {
                return Err(ParseError::at(
                    pos,
                    format!("attribute '{key}' is given twice"),
                ));
            }
            self.expect_punct('=')?;
            out.push((key, pos, self.attr_value()?));
            if self.eat_punct(close) {
                return Ok(out);
            }
            self.expect_punct(',')?;
        }
    }

    fn attr_value(&mut self) -> R<Spanned> {
        let pos = self.pos();
        let v = match self.peek().clone() {
            Tok::Number(n) => {
                self.next();
                AttrValue::Num(n)
            }
            Tok::Punct('[') => {
                self.next();
                let mut items = Vec::new();
                if !self.eat_punct(']') {
                    loop {
                        items.push(self.attr_value()?);
                        if self.eat_punct(']') {
                            break;
                        }
                        self.expect_punct(',')?;
                    }
                }
                AttrValue::List(items)
            }
            Tok::Punct('(') => {
                self.next();
                AttrValue::Record {
                    tag: None,
                    fields: self.fields(')')?,
                }
            }
            Tok::Word(w)
                if DType::from_name(&w).is_some() && *self.peek_at(1) == Tok::Punct('[') =>
            {
                AttrValue::Tensor(self.tensor_literal()?)
            }
            Tok::Word(w) if *self.peek_at(1) == Tok::Punct('(') => {
                self.next();
                self.next();
                AttrValue::Record {
                    tag: Some(w),
                    fields: self.fields(')')?,
                }
            }
            Tok::Word(w) => {
                self.next();
                AttrValue::Word(w)
            }
            _ => return self.unexpected("an attribute value"),
        };
        Ok(Spanned { pos, v })
    }

    /// `f32[2] dense<1.0, 2.0>` or `f32[2] splat<1.0>`.
    fn tensor_literal(&mut self) -> R<Tensor> {
        let ty_pos = self.pos();
        let ty = self.tensor_type()?;
        let (form, form_pos) = match self.next() {
            (Tok::Word(w), pos) if w == "dense" || w == "splat" => (w, pos),
            _ => {
                self.i -= 1;
                return self.unexpected("'dense<...>' or 'splat<...>'");
            }
        };
        self.expect_punct('<')?;
        if matches!(self.peek(), Tok::Word(w) if w == "elided") {
            return Err(ParseError::at(
                self.pos(),
                format!(
                    "the values of this {ty} constant were elided when it was printed; \
                     print without `elide_constants_over` to get text that parses"
                ),
            ));
        }
        let mut elems = Vec::new();
        if !self.eat_punct('>') {
            loop {
                match self.next() {
                    (Tok::Number(n), pos) => elems.push((n, pos)),
                    (Tok::Word(w), pos) if w == "true" || w == "false" => elems.push((w, pos)),
                    _ => {
                        self.i -= 1;
                        return self.unexpected("a tensor element (a number, true or false)");
                    }
                }
                if self.eat_punct('>') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let numel = ty.shape.numel();
        let elems = if form == "splat" {
            if elems.len() != 1 {
                return Err(ParseError::at(
                    form_pos,
                    format!("splat<> takes exactly one element, found {}", elems.len()),
                ));
            }
            vec![elems.swap_remove(0); numel]
        } else {
            if elems.len() != numel {
                return Err(ParseError::at(
                    ty_pos,
                    format!(
                        "{ty} has {numel} elements but dense<> lists {}",
                        elems.len()
                    ),
                ));
            }
            elems
        };
        build_tensor(&ty, &elems)
    }
}

fn dtype_names() -> String {
    DType::ALL
        .iter()
        .map(|d| d.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses each element text as `ty`'s element type; errors point at the element.
fn build_tensor(ty: &TensorType, elems: &[(String, Pos)]) -> R<Tensor> {
    fn each<T>(elems: &[(String, Pos)], f: impl Fn(&str) -> Result<T, String>) -> R<Vec<T>> {
        elems
            .iter()
            .map(|(s, pos)| f(s).map_err(|m| ParseError::at(*pos, m)))
            .collect()
    }
    fn int<T: TryFrom<i64>>(s: &str, dtype: DType) -> Result<T, String> {
        let v: i64 = s
            .parse()
            .map_err(|_| format!("expected an integer element of {dtype}, found {s}"))?;
        T::try_from(v).map_err(|_| format!("{v} does not fit in {dtype}"))
    }
    let shape = IxDyn(ty.dims());
    let shape_err = |e: ndarray::ShapeError| {
        ParseError::at(
            elems.first().map_or(Pos { line: 0, col: 0 }, |e| e.1),
            e.to_string(),
        )
    };
    let d = ty.dtype;
    Ok(match d {
        DType::F32 => {
            Tensor::F32(ArrayD::from_shape_vec(shape, each(elems, parse_f32)?).map_err(shape_err)?)
        }
        DType::F16 => {
            // Through f64: a printed f16 is exact in f32, and f64 → f16 rounds only once.
            let v = each(elems, |s| {
                s.parse::<f64>()
                    .map(f16::from_f64)
                    .map_err(|_| format!("expected a float, found {s}"))
            })?;
            Tensor::F16(ArrayD::from_shape_vec(shape, v).map_err(shape_err)?)
        }
        DType::I8 => Tensor::I8(
            ArrayD::from_shape_vec(shape, each(elems, |s| int(s, d))?).map_err(shape_err)?,
        ),
        DType::U8 => Tensor::U8(
            ArrayD::from_shape_vec(shape, each(elems, |s| int(s, d))?).map_err(shape_err)?,
        ),
        DType::I32 => Tensor::I32(
            ArrayD::from_shape_vec(shape, each(elems, |s| int(s, d))?).map_err(shape_err)?,
        ),
        DType::I64 => Tensor::I64(
            ArrayD::from_shape_vec(shape, each(elems, |s| int(s, d))?).map_err(shape_err)?,
        ),
        DType::Bool => {
            let v = each(elems, |s| match s {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, found {s}")),
            })?;
            Tensor::Bool(ArrayD::from_shape_vec(shape, v).map_err(shape_err)?)
        }
    })
}

/// A float as written; integers are accepted (`alpha=1`), `inf`/`NaN` too.
pub fn parse_f32(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .map_err(|_| format!("expected a float, found {s}"))
}
