//! `realize-integer-products` on onnxruntime's dynamic chains: the rewrite must be exact (the
//! interpreter gives the same bits before and after) and must stop where another reader needs
//! an intermediate value.

use std::collections::HashMap;

use super::*;
use crate::testing::{ops, parse, text, Rng};

/// The rewrite changes no bit of any output, on three seeded random inputs scaled so the
/// accumulators are large and of both signs.
fn assert_exact(before: &Graph, after: &Graph) {
    for seed in 1..=3u64 {
        let mut rng = Rng(seed);
        let feeds: HashMap<String, Tensor> = before
            .input_values()
            .iter()
            .map(|&v| {
                let ty = &before.value(v).ty;
                let t = rng.input(ty);
                let scaled = t.as_f32().expect("f32 inputs").mapv(|x| 20.0 * x);
                (before.value(v).name.clone(), Tensor::F32(scaled))
            })
            .collect();
        let run =
            |g: &Graph| qcc_ir::eval::run(g, &feeds).unwrap_or_else(|e| panic!("{e}\n{}", text(g)));
        for (i, (want, got)) in run(before).iter().zip(&run(after)).enumerate() {
            let bits = |t: &Tensor| -> Vec<u32> {
                t.as_f32()
                    .expect("f32 outputs")
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(
                bits(want),
                bits(got),
                "output {i}, seed {seed}\n{}",
                text(after)
            );
        }
    }
}

fn realize(src: &str) -> (Graph, Graph, Vec<String>) {
    let before = parse(src);
    let mut after = before.clone();
    let (changed, notes) = realize_integer_products(&mut after).expect("the pass runs");
    assert!(changed || ops(&before) == ops(&after));
    (before, after, notes)
}

/// What onnxruntime's `quantize_dynamic` writes for a Conv with a bias, then a Relu: u8
/// weights with zero point 131, the scales' product computed before the conv, the bias
/// reshaped to `[1, C, 1, 1]`.
const ORT_CONV: &str = "graph g(%x: f32[1,2,5,5]) -> (%y) {
  %w = const u8[3,2,3,3] dense<0, 255, 131, 140, 17, 200, 99, 131, 255, 3, 131, 77, 190, 131, 5, 250, 131, 64, 0, 255, 131, 140, 17, 200, 99, 131, 255, 3, 131, 77, 190, 131, 5, 250, 131, 64, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180>
  %ws = const f32[] dense<0.0123>
  %b = const f32[1,3,1,1] dense<0.5, -1.25, 3.0>
  %xq, %xs, %xz = DynamicQuantizeLinear(%x)
  %s = Mul(%xs, %ws)
  %acc = ConvInteger(%xq, %w, %xz) {kernel=[3,3], pads=[1,1,1,1], w_zp=131}
  %f = Cast(%acc) {to=f32}
  %m = Mul(%f, %s)
  %a = Add(%m, %b)
  %y = Relu(%a)
}";

#[test]
fn onnxruntime_conv_chain_becomes_one_dynamic_conv_bit_for_bit() {
    let (before, after, notes) = realize(ORT_CONV);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        ops(&after),
        ["DynamicQuantizeLinear", "DynamicQuantizedConv"]
    );
    let printed = text(&after);
    // u8 weights became s8 with the zero point shifted by 128, the Relu fused.
    assert!(printed.contains("zp=3"), "{printed}");
    assert!(printed.contains("activation=relu"), "{printed}");
    assert_exact(&before, &after);
}

#[test]
fn scales_multiplied_the_other_way_round_and_per_column_weights_in_a_matmul() {
    let src = "graph g(%x: f32[3,4]) -> (%y) {
  %w = const i8[4,2] dense<-128, 127, 5, -7, 100, -100, 1, 0>
  %ws = const f32[2] dense<0.02, 0.5>
  %b = const f32[2] dense<1.0, -2.0>
  %xq, %xs, %xz = DynamicQuantizeLinear(%x)
  %s = Mul(%ws, %xs)
  %acc = MatMulInteger(%xq, %w, %xz) {b_zp=(axis=1, zp=[3, -4])}
  %f = Cast(%acc) {to=f32}
  %m = Mul(%s, %f)
  %y = Add(%b, %m)
}";
    let (before, after, notes) = realize(src);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        ops(&after),
        ["DynamicQuantizeLinear", "DynamicQuantizedMatMul"]
    );
    assert_exact(&before, &after);
}

#[test]
fn a_residual_add_joins_the_conv_and_constant_zero_points_need_no_scales() {
    // Constant zero points and no Mul: the scale is 1, which is exact.
    let src = "graph g(%x: f32[1,2,4,4]) -> (%y) {
  %w = const i8[2,2,1,1] dense<3, -5, 7, 127>
  %b = const f32[2,1,1] dense<0.25, -0.75>
  %xq = QuantizeLinear(%x) {q=u8(scale=0.1, zp=120)}
  %acc = ConvInteger(%xq, %w) {kernel=[1,1], x_zp=120, w_zp=(axis=0, zp=[1, -2])}
  %f = Cast(%acc) {to=f32}
  %a = Add(%f, %b)
  %r = Add(%a, %x)
  %y = Clip(%r) {min=-2.0, max=6.0}
}";
    let (before, after, notes) = realize(src);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(ops(&after), ["DynamicQuantizedConv", "QuantizeLinear"]);
    let printed = text(&after);
    assert!(printed.contains("residual=true"), "{printed}");
    assert_exact(&before, &after);
}

#[test]
fn the_chain_stops_before_a_value_something_else_reads() {
    // The Mul's output is also a graph output: the layer ends there, the bias stays an Add.
    let src = ORT_CONV.replace("-> (%y)", "-> (%y, %m)");
    let (before, after, _) = realize(&src);
    assert_eq!(
        ops(&after),
        [
            "Add",
            "DynamicQuantizeLinear",
            "DynamicQuantizedConv",
            "Relu"
        ]
    );
    assert_exact(&before, &after);
}

#[test]
fn an_i32_result_read_as_an_integer_is_left_alone_with_a_note() {
    let src = "graph g(%x: u8[2,3]) -> (%y) {
  %w = const i8[3,2] dense<1, 2, 3, 4, 5, 6>
  %k = const i32[] dense<7>
  %acc = MatMulInteger(%x, %w) {a_zp=3}
  %y = Add(%acc, %k)
}";
    let (_, after, notes) = realize(src);
    assert_eq!(ops(&after), ["Add", "MatMulInteger"]);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("MatMulInteger") && n.contains("not by a Cast")),
        "{notes:?}"
    );
}

#[test]
fn two_chains_meeting_at_a_residual_add_are_both_realized() {
    // A ResNet block with a downsampling conv: the main path's conv and the 1x1 shortcut both
    // reach the block's Add; one of them takes it as its residual, the other ends before it.
    let src = "graph g(%x: f32[1,2,4,4]) -> (%y) {
  %w1 = const u8[2,2,1,1] dense<0, 255, 131, 140>
  %w2 = const u8[2,2,1,1] dense<7, 99, 128, 250>
  %ws = const f32[] dense<0.0123>
  %b1 = const f32[1,2,1,1] dense<0.5, -1.25>
  %b2 = const f32[1,2,1,1] dense<-0.5, 2.0>
  %xq, %xs, %xz = DynamicQuantizeLinear(%x)
  %s1 = Mul(%xs, %ws)
  %s2 = Mul(%xs, %ws)
  %acc1 = ConvInteger(%xq, %w1, %xz) {kernel=[1,1], w_zp=131}
  %f1 = Cast(%acc1) {to=f32}
  %m1 = Mul(%f1, %s1)
  %a1 = Add(%m1, %b1)
  %acc2 = ConvInteger(%xq, %w2, %xz) {kernel=[1,1], w_zp=128}
  %f2 = Cast(%acc2) {to=f32}
  %m2 = Mul(%f2, %s2)
  %a2 = Add(%m2, %b2)
  %sum = Add(%a1, %a2)
  %y = Relu(%sum)
}";
    let (before, after, notes) = realize(src);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        ops(&after),
        [
            "DynamicQuantizeLinear",
            "DynamicQuantizedConv",
            "DynamicQuantizedConv"
        ]
    );
    let printed = text(&after);
    assert_eq!(printed.matches("residual=true").count(), 1, "{printed}");
    assert_exact(&before, &after);
}
