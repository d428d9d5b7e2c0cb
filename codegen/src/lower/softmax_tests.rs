//! Softmax, JIT-compiled for the host, against the reference interpreter.
//!
//! Measured on the test host (AVX-512 + FMA), largest relative difference from the
//! interpreter on outputs above 2e-38: 2.7e-7 over 400 random shapes (rank 1-4, extents up to
//! 11, inputs up to ±60) and 2.2e-7 on rows of up to 4099 elements; asserted:
//! [`SOFTMAX_MAX_REL_ERROR`] = 4e-7.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Op, Tensor};

use super::{lower_softmax, SOFTMAX_ABS_ERROR, SOFTMAX_MAX_REL_ERROR};
use crate::lower::test_support::native;
use crate::model::run_node;

/// Runs Softmax through the kernel and the interpreter: (kernel, interpreter) outputs.
fn run_both(axis: usize, coerce_2d: bool, dims: &[usize], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let tensor = Tensor::from_f32(dims, x.to_vec());
    let op = Op::Softmax { axis, coerce_2d };
    let want = eval_op(&op, &[&tensor])
        .expect("interpreter evaluates")
        .remove(0);
    let want: Vec<f32> = want.as_f32().expect("f32").iter().copied().collect();
    let lowering = lower_softmax(native().arch(), axis, coerce_2d, dims).expect("lowers");
    let mut got = run_node(&native(), &lowering, &[x], &[x.len()]).expect("node runs");
    (got.remove(0), want)
}

/// The largest relative difference; panics (naming the case) on one beyond the bounds, or on
/// a NaN where the interpreter has none (or the reverse).
fn check(got: &[f32], want: &[f32], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.is_nan(),
            w.is_nan(),
            "{what}: element {i}: kernel {g:e}, interpreter {w:e}"
        );
        if w.is_nan() {
            continue;
        }
        let (g, w) = (f64::from(g), f64::from(w));
        let difference = (g - w).abs();
        assert!(
            difference <= SOFTMAX_MAX_REL_ERROR * w.abs() + SOFTMAX_ABS_ERROR,
            "{what}: element {i}: kernel {g:e}, interpreter {w:e}"
        );
        if w.abs() > SOFTMAX_ABS_ERROR {
            worst = worst.max(difference / w.abs());
        }
    }
    worst
}

/// Uniform values in [-scale, scale] from a seed (xorshift64*).
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let unit = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

fn shape_and_axis() -> impl Strategy<Value = (Vec<usize>, usize)> {
    (1usize..=4).prop_flat_map(|rank| (proptest::collection::vec(1usize..=9, rank), 0..rank))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every axis, both opset conventions, batch > 1, extents not multiples of 4, inputs
    /// spread wide enough that some exponentials underflow.
    #[test]
    fn softmax_matches_the_interpreter_within_the_bound(
        (dims, axis) in shape_and_axis(),
        coerce_2d in any::<bool>(),
        scale in prop::sample::select(vec![1.0f32, 10.0, 60.0]),
        seed in any::<u64>(),
    ) {
        let x = uniform(seed, dims.iter().product(), scale);
        let (got, want) = run_both(axis, coerce_2d, &dims, &x);
        prop_assert!(got.iter().all(|v| !v.is_nan()), "NaN left in {dims:?}");
        check(&got, &want, &format!("axis {axis} coerce {coerce_2d} on {dims:?}"));
    }
}

/// Long rows, contiguous (four-lane sums) and strided (sequential sums), with and without a
/// vector tail.
#[test]
fn long_rows_stay_within_the_bound() {
    for (dims, axis, coerce_2d) in [
        (vec![3, 4099], 1, false),
        (vec![2, 4096], 1, false),
        (vec![2, 7, 13, 11], 1, true),
        (vec![2, 1001, 5], 1, false),
        (vec![1, 997, 4], 1, false),
    ] {
        let x = uniform(
            dims.iter().product::<usize>() as u64,
            dims.iter().product(),
            8.0,
        );
        let (got, want) = run_both(axis, coerce_2d, &dims, &x);
        let worst = check(&got, &want, &format!("{dims:?} axis {axis}"));
        eprintln!("softmax {dims:?} axis {axis} coerce {coerce_2d}: max rel error {worst:.2e}");
    }
}

/// Rows holding NaN, ±inf or only -inf become NaN exactly where the interpreter's do; a row
/// of a huge and tiny values keeps its exact 1 and 0.
#[test]
fn special_values_follow_the_interpreter() {
    let inf = f32::INFINITY;
    let rows: [[f32; 6]; 6] = [
        [1.0, f32::NAN, 2.0, 3.0, 4.0, 5.0],
        [1.0, inf, 2.0, 3.0, 4.0, 5.0],
        [-inf, -inf, -inf, -inf, -inf, -inf],
        [-inf, 0.0, -inf, 1.0, -inf, 2.0],
        [3.0e38, -3.0e38, 0.0, 1.0, 2.0, 3.0],
        [-0.0, 0.0, -0.0, 0.0, -0.0, 0.0],
    ];
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    // The rows as contiguous rows, and transposed as strided columns.
    let (got, want) = run_both(1, false, &[6, 6], &x);
    check(&got, &want, "rows");
    assert_eq!(got[4 * 6], 1.0);
    assert_eq!(got[4 * 6 + 1], 0.0);
    let columns: Vec<f32> = (0..36).map(|i| x[(i % 6) * 6 + i / 6]).collect();
    let (got, want) = run_both(0, false, &[6, 6], &columns);
    check(&got, &want, "columns");
}

#[test]
fn bad_axes_are_errors() {
    assert!(lower_softmax(native().arch(), 2, false, &[2, 3]).is_err());
    assert!(lower_softmax(native().arch(), 0, true, &[]).is_err());
}
