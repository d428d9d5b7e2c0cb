//! Malformed `.qir` text: every error says where (line:column) and what was expected.

use super::{parse_graph, ParseError};

fn parse_err(src: &str) -> ParseError {
    match parse_graph(src) {
        Ok(_) => panic!("expected an error for\n{src}"),
        Err(e) => e,
    }
}

/// Parses `body` inside a graph with inputs `%x: f32[2,3]` and `%v: f32[3]` (so the body's
/// first line is line 2) and checks the error's position and message.
fn assert_error(body: &str, line: usize, col: usize, message_parts: &[&str]) {
    let src = format!("graph g(%x: f32[2,3], %v: f32[3]) -> () {{\n{body}\n}}\n");
    let e = parse_err(&src);
    assert_eq!((e.line, e.col), (line, col), "position of: {e}\n{src}");
    for part in message_parts {
        assert!(e.message.contains(part), "{part:?} not in message: {e}");
    }
}

#[test]
fn unknown_op() {
    assert_error("  %y = Frobnicate(%x)", 2, 8, &["unknown op 'Frobnicate'"]);
    let e = parse_err("graph g(%x: f32[2]) -> () {\n  %y = Frobnicate(%x)\n}");
    assert!(e.to_string().starts_with("2:8: unknown op"), "{e}");
}

#[test]
fn bad_types() {
    let e = parse_err("graph g(%x: f33[2]) -> () {}");
    assert_eq!((e.line, e.col), (1, 13), "{e}");
    assert!(e.message.contains("unknown element type 'f33'"), "{e}");
    assert_error(
        "  %y = Relu(%x) : f32[2,x]",
        2,
        25,
        &["expected a dimension", "'x'"],
    );
    assert_error(
        "  %c = const f32(2) dense<1.0>",
        2,
        17,
        &["expected '['", "'('"],
    );
}

#[test]
fn undefined_value() {
    assert_error("  %y = Relu(%z)", 2, 13, &["undefined value %z"]);
    assert_error(
        "  %y = Add(%x, %\"a/b\")",
        2,
        16,
        &["undefined value %\"a/b\""],
    );
    let e = parse_err("graph g(%x: f32[2]) -> (%nope) {}");
    assert_eq!((e.line, e.col), (1, 25), "{e}");
    assert!(
        e.message.contains("graph output %nope is never defined"),
        "{e}"
    );
}

#[test]
fn annotated_type_must_match_the_inferred_one() {
    assert_error(
        "  %y = Relu(%x) : f32[3,2]",
        2,
        19,
        &["value %y is annotated f32[3,2] but Relu infers f32[2,3]"],
    );
    assert_error(
        "  %y = Relu(%x) : f32[2,3], f32[2,3]",
        2,
        19,
        &["2 output types given for 1 outputs"],
    );
    assert_error(
        "  %y = Cast(%x) {to=i8} : f32[2,3]",
        2,
        27,
        &["annotated f32[2,3] but Cast infers i8[2,3]"],
    );
}

#[test]
fn elided_constants_are_refused() {
    assert_error(
        "  %w = const f32[100] dense<elided 100 elements>",
        2,
        29,
        &["elided", "elide_constants_over"],
    );
}

#[test]
fn attribute_errors_name_the_op_and_key() {
    assert_error(
        "  %y = LeakyRelu(%x) {alpah=0.1}",
        2,
        23,
        &["LeakyRelu has no attribute 'alpah' (it takes: alpha)"],
    );
    assert_error(
        "  %y = LeakyRelu(%x) {alpha=true}",
        2,
        29,
        &["LeakyRelu attribute 'alpha': expected a float, found 'true'"],
    );
    assert_error(
        "  %y = Concat(%x, %x)",
        2,
        8,
        &["Concat needs attribute 'axis'"],
    );
    assert_error(
        "  %y = Concat(%x) {axis=1, axis=0}",
        2,
        28,
        &["attribute 'axis' is given twice"],
    );
    assert_error(
        "  %y = Concat(%x) {axis=-1}",
        2,
        25,
        &["expected a non-negative integer, found -1"],
    );
    assert_error(
        "  %y = MaxPool(%x) {kernel=[2], pads=same_middle}",
        2,
        38,
        &["expected [pads...], same_upper or same_lower"],
    );
}

#[test]
fn quantization_parameter_errors() {
    assert_error(
        "  %q = QuantizeLinear(%x) {q=u8(scale=0.0, zp=0)}",
        2,
        30,
        &[
            "QuantizeLinear attribute 'q'",
            "scale 0 is not a finite positive number",
        ],
    );
    assert_error(
        "  %q = QuantizeLinear(%x) {q=u8(scale=0.1, zp=300)}",
        2,
        30,
        &["zero point 300 is outside the range of u8"],
    );
    assert_error(
        "  %q = QuantizeLinear(%x) {q=u8(scale=[0.1, 0.2], zp=[1, 1])}",
        2,
        30,
        &["per-tensor parameters need exactly one scale, found 2"],
    );
    assert_error(
        "  %q = QuantizeLinear(%x) {q=u8(scale=0.1, zp=1, skew=2)}",
        2,
        50,
        &["has no attribute 'skew'"],
    );
    assert_error(
        "  %q = QuantizeLinear(%x) {q=u8(zp=1)}",
        2,
        30,
        &["needs attribute 'scale'"],
    );
    assert_error(
        "  %q = QuantizeLinear(%x) {q=f32(scale=0.1, zp=1)}",
        2,
        30,
        &["quantized type must be i8, u8 or i32"],
    );
}

#[test]
fn fused_activation_errors() {
    let gemm =
        |attrs: &str| format!("  %m = const f32[3,2] splat<1.0>\n  %y = FusedGemm(%x, %m) {attrs}");
    let keywords = "relu, leaky_relu, clip, sigmoid, hard_sigmoid, hard_swish, tanh";
    assert_error(
        &gemm("{activation=swish}"),
        3,
        38,
        &[
            "FusedGemm attribute 'activation'",
            &format!("unknown activation 'swish' (expected one of: {keywords})"),
        ],
    );
    assert_error(
        &gemm("{activation=Relu}"),
        3,
        38,
        &["unknown activation 'Relu'"],
    );
    assert_error(
        &gemm("{activation=1.0}"),
        3,
        38,
        &[&format!(
            "expected an activation ({keywords}), found number 1.0"
        )],
    );
    assert_error(
        &gemm("{activation=leaky_relu(alpah=0.1)}"),
        3,
        49,
        &["activation leaky_relu has no attribute 'alpah' (it takes: alpha)"],
    );
    assert_error(
        &gemm("{activation=relu(alpha=0.1)}"),
        3,
        43,
        &["activation relu has no attribute 'alpha' (it takes: none)"],
    );
    assert_error(
        &gemm("{activation=clip(min=true)}"),
        3,
        47,
        &["activation clip attribute 'min': expected a float, found 'true'"],
    );
    assert_error(
        &gemm("{activation=clip(min=0.0, min=1.0)}"),
        3,
        52,
        &["attribute 'min' is given twice"],
    );
}

#[test]
fn fused_conv_residual_must_match_its_inputs() {
    let conv = |inputs: &str, attrs: &str| {
        format!(
            "graph g(%x: f32[1,2,4,4], %r: f32[1,2,4,4]) -> () {{\n\
             \x20 %w = const f32[2,2,1,1] splat<1.0>\n\
             \x20 %b = const f32[2] splat<0.0>\n\
             \x20 %y = FusedConv({inputs}) {attrs}\n}}"
        )
    };
    let e = parse_err(&conv("%x, %w, %b, %r", "{residual=false}"));
    assert_eq!((e.line, e.col), (4, 8), "{e}");
    assert!(e.message.contains("takes 3 inputs, got 4"), "{e}");
    let e = parse_err(&conv("%x, %w, %b", "{residual=true}"));
    assert_eq!((e.line, e.col), (4, 8), "{e}");
    assert!(e.message.contains("takes 4 inputs, got 3"), "{e}");
    let e = parse_err(&conv("%x, %w, %b, %r", "{residual=yes}"));
    assert_eq!((e.line, e.col), (4, 44), "{e}");
    assert!(
        e.message
            .contains("FusedConv attribute 'residual': expected true or false, found 'yes'"),
        "{e}"
    );
    assert!(parse_graph(&conv("%x, %w, %b, %r", "{residual=true}")).is_ok());
}

#[test]
fn constant_errors() {
    assert_error(
        "  %c = const f32[3] dense<1.0, 2.0>",
        2,
        14,
        &["f32[3] has 3 elements but dense<> lists 2"],
    );
    assert_error(
        "  %c = const u8[2] dense<1, 256>",
        2,
        29,
        &["256 does not fit in u8"],
    );
    assert_error(
        "  %c = const i32[1] dense<1.5>",
        2,
        27,
        &["expected an integer element of i32, found 1.5"],
    );
    assert_error(
        "  %c = const bool[1] dense<1>",
        2,
        28,
        &["expected true or false, found 1"],
    );
    assert_error(
        "  %c = const f32[2] splat<1.0, 2.0>",
        2,
        21,
        &["splat<> takes exactly one element"],
    );
    assert_error(
        "  %c, %d = const f32[1] dense<1.0>",
        2,
        3,
        &["a constant defines exactly one value"],
    );
}

#[test]
fn graph_errors_point_at_the_node() {
    assert_error(
        "  %y = MatMul(%x, %x)",
        2,
        8,
        &["node 'y' (MatMul)", "inner dimensions differ"],
    );
    assert_error(
        "  %x = Relu(%v)",
        2,
        8,
        &["output name 'x' is already defined"],
    );
    assert_error("  %y = Relu(%x, %x)", 2, 8, &["takes 1 inputs, got 2"]);
    assert_error(
        "  %y = Split(%x) {axis=0, sizes=[1,1]}",
        2,
        8,
        &["produces 2 outputs, 1 names given"],
    );
}

#[test]
fn lexical_and_structural_errors() {
    assert_error(
        "  %\"unterminated = Relu(%x)",
        2,
        4,
        &["unterminated string"],
    );
    assert_error(
        "  %y = Relu(%x) # comment",
        2,
        17,
        &["unexpected character '#'"],
    );
    assert_error("  %y = Relu(%x) {alpha=1.5e}", 2, 24, &["empty exponent"]);
    assert_error(
        "  %y = Relu(%x) {alpha=12abc}",
        2,
        24,
        &["malformed number '12abc'"],
    );
    assert_error(
        "  %y = Relu(%x) @",
        2,
        17,
        &["expected a name or a quoted string after '@'"],
    );
    let e = parse_err("graph g(%x: f32[2]) -> () {\n  %y = Relu(%x)\n");
    assert_eq!((e.line, e.col), (3, 1), "{e}");
    assert!(
        e.message
            .contains("expected a statement (%name = ...) or '}', found end of input"),
        "{e}"
    );
    let e = parse_err("graph g() -> () {} trailing");
    assert!(
        e.message
            .contains("end of input after the graph's closing '}'"),
        "{e}"
    );
    let e = parse_err("graf g() -> () {}");
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (1, 1, "expected 'graph', found 'graf'")
    );
    let e = parse_err("graph g(%x: f32[N=1,M=2]) -> () {}");
    assert!(
        e.message.contains("symbolic dims bound to different sizes"),
        "{e}"
    );
    let e = parse_err("graph g(%x: f32[2,M=2]) -> () {}");
    assert!(
        e.message
            .contains("only the batch (first) dimension may be"),
        "{e}"
    );
}

#[test]
fn comments_and_layout_are_free() {
    let src = "; a file comment
graph g(%x: f32[2,3]) ; after the header
  -> (%y) {
  %y =
 Relu( %x ) ; trailing
  : f32[2,3]
}
";
    let g = parse_graph(src).unwrap();
    assert_eq!(g.node_count(), 1);
}

#[test]
fn a_run_time_zero_point_and_the_attribute_together() {
    let e = parse_err(
        "graph g(%a: u8[2,3], %b: i8[3,2], %z: u8[]) -> (%y) {
  %y = MatMulInteger(%a, %b, %z) {a_zp=3}
}",
    );
    assert_eq!((e.line, e.col), (2, 8), "{e}");
    assert!(e.message.contains("both attribute 'a_zp'"), "{e}");
}
