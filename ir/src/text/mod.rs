//! The `.qir` text form of a graph: a printer and a parser that round-trip.
//!
//! Pass filetests are written in it by hand, `qcc inspect --format qir` and `--dump-after`
//! print it. An example:
//!
//! ```text
//! ; comments run from ';' to the end of the line
//! graph tiny_cnn(%input: f32[N=1,3,8,8]) -> (%probs) {
//!   %w = const f32[4,3,3,3] splat<0.1>
//!   %b = const f32[4] dense<0.5, -1.0, 1e-7, 0.0>
//!   %c = Conv(%input, %w, %b) {kernel=[3,3], strides=[1,1], dilations=[1,1],
//!             pads=same_upper, group=1} : f32[1,4,8,8] @"conv/1"   ; newlines are free
//!   %q = QuantizeLinear(%c) {q=u8(scale=0.05, zp=128)} : u8[1,4,8,8]
//!   %s0, %s1 = Split(%c) {axis=1, sizes=[2,2]} : f32[1,2,8,8], f32[1,2,8,8]
//!   %probs = Softmax(%s0) {axis=1, coerce_2d=false} : f32[1,2,8,8]
//! }
//! ```
//!
//! # Grammar
//!
//! ```text
//! graph      := 'graph' name '(' [input {',' input}] ')' '->' '(' [value {',' value}] ')'
//!               '{' {stmt} '}'
//! input      := value ':' dtype '[' [decl_dim {',' decl_dim}] ']'
//! decl_dim   := int | sym '=' int           ; symbolic batch dim bound to a size: N=1
//! stmt       := value '=' 'const' tensor
//!             | value {',' value} '=' OpName '(' [value {',' value}] ')' [attrs]
//!               [':' type {',' type}] [node_name]
//! type       := dtype '[' [int {',' int}] ']'        ; f32[] is a scalar
//! tensor     := type ('dense' '<' [elem {',' elem}] '>' | 'splat' '<' elem '>')
//! attrs      := '{' [key '=' attr {',' key '=' attr}] '}'
//! attr       := number | word | '[' [attr {',' attr}] ']' | tensor | qparams | zero_point
//!             | activation
//! qparams    := dtype '(' ['axis' '=' int ','] 'scale' '=' (float | list) ','
//!               'zp' '=' (int | list) ')'       ; u8(scale=0.1, zp=128)
//! zero_point := int | '(' ['axis' '=' int ','] 'zp' '=' (int | list) ')'
//! activation := act_kw ['(' key '=' float {',' key '=' float} ')']   ; clip(min=0.0, max=6.0)
//! act_kw     := 'relu' | 'leaky_relu' | 'clip' | 'sigmoid' | 'hard_sigmoid' | 'hard_swish'
//!             | 'tanh'
//! value      := '%' (bare | string)          ; bare: [A-Za-z0-9_.]+
//! node_name  := '@' (bare | string)
//! name, sym  := word | string
//! ```
//!
//! - Strings use `\\`, `\"`, `\n`, `\t`, `\r` and `\u{hex}` escapes.
//! - Floats print as Rust's shortest round-trip form (`0.1`, `1e-7`, `-0.0`, `inf`, `-inf`,
//!   `NaN`), so every f32 survives print → parse bit for bit (NaN payloads and signs aside).
//!   f16 elements print as their exact f32 value; integers and bools as themselves.
//! - Tensor elements are listed flat, in row-major order. `splat<v>` is a tensor whose
//!   elements all equal `v`; the printer uses it for two or more equal elements.
//!   [`PrintOptions::elide_constants_over`] prints large constants as
//!   `dense<elided 1234 elements>`, which the parser refuses (the values are gone).
//! - Statements must come in dependency order (the printer uses [`Graph::topo_order`],
//!   constants first). The parser builds the graph with [`Graph::add_node`], so output types
//!   are inferred; the `: type` list, when present, must equal them (this is what makes a
//!   hand-written graph check itself). A missing `@name` means the node is named after its
//!   first output.
//! - The printer writes every attribute. The parser accepts ONNX's defaults for omitted ones
//!   (strides and dilations 1, pads 0, group 1, Gemm alpha/beta 1, ...); see `attrs.rs`.
//! - Padding is `pads=[begins..., ends...]`, `pads=same_upper` or `pads=same_lower`.
//! - The fused ops take their base op's attributes plus an optional
//!   `activation=<activation>`, whose parameters are keyed as the standalone op's attributes
//!   (absent: no activation); FusedConv also takes `residual=true|false` (default: whether a
//!   fourth input is given):
//!   `%y = FusedConv(%x, %w, %b, %r) {kernel=[3,3], ..., group=1, residual=true,
//!   activation=clip(min=0.0, max=6.0)} : f32[1,8,8,8]`,
//!   `%z = FusedGemm(%a, %b, %c) {alpha=1.0, ..., trans_b=true, activation=relu} : f32[1,10]`.

mod attrs;
mod lexer;
mod parser;
mod printer;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_forms;

use crate::graph::Graph;
pub use lexer::Pos;

/// How [`print_graph`] writes a graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// Dense constants with more elements than this print as `dense<elided N elements>`
    /// (readable dumps of real models; such text no longer parses).
    pub elide_constants_over: Option<usize>,
}

/// Why a text did not parse, and where (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }
}

/// Writes `g` as `.qir` text.
pub fn print_graph(g: &Graph, opts: &PrintOptions) -> String {
    printer::print_graph(g, opts)
}

/// Reads `.qir` text back into a graph, inferring and checking every node's types.
pub fn parse_graph(src: &str) -> Result<Graph, ParseError> {
    parser::parse_graph(src)
}

/// A name as `%`, `@` or the graph header write it: bare when it is made of
/// `[A-Za-z0-9_.]` only, otherwise quoted with escapes.
pub(crate) fn quote_name(name: &str) -> String {
    if !name.is_empty() && name.chars().all(lexer::is_bare_name_char) {
        name.to_string()
    } else {
        quote_string(name)
    }
}

/// A word where a bare word must not be mistaken for a number (graph names, symbolic dims):
/// bare only when it starts with a letter or '_' and is not `inf` / `NaN`.
pub(crate) fn quote_word(word: &str) -> String {
    let starts_like_word = word
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_like_word
        && word.chars().all(lexer::is_bare_name_char)
        && !lexer::is_number_word(word)
    {
        word.to_string()
    } else {
        quote_string(word)
    }
}

fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
