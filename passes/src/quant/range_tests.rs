//! Tests of the range methods, the reference the fast MSE and KL searches must match, and
//! the histogram binning of `stats.rs` (its exact integer floor).
use super::*;

/// Deterministic standard normal samples (xorshift + Box-Muller).
pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

fn uniform(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 + 0.5) / n as f32 * 2.0 - 1.0)
        .collect()
}

fn stats_of(values: &[f32]) -> TensorStats {
    let mut s = TensorStats::new();
    s.observe(values);
    s
}

fn methods() -> [RangeMethod; 4] {
    [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.99),
        RangeMethod::Mse,
        RangeMethod::Kl,
    ]
}

#[test]
fn parse_every_form() {
    assert_eq!(RangeMethod::parse("minmax").unwrap(), RangeMethod::MinMax);
    assert_eq!(RangeMethod::parse("mse").unwrap(), RangeMethod::Mse);
    assert_eq!(RangeMethod::parse("kl").unwrap(), RangeMethod::Kl);
    assert_eq!(
        RangeMethod::parse("percentile").unwrap(),
        RangeMethod::Percentile(99.99)
    );
    assert_eq!(
        "percentile=99.9".parse::<RangeMethod>().unwrap(),
        RangeMethod::Percentile(99.9)
    );
    assert_eq!(
        RangeMethod::parse("percentile=100").unwrap(),
        RangeMethod::Percentile(100.0)
    );
    for method in methods() {
        assert_eq!(RangeMethod::parse(&method.to_string()).unwrap(), method);
    }
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let cases = [
        ("entropy", "known: minmax, percentile[=P], mse, kl"),
        ("percentile=abc", "'abc' is not a number"),
        ("percentile=30", "above 50"),
        ("percentile=100.5", "at most 100"),
        ("percentile=nan", "above 50"),
        ("kl=2", "takes no value"),
        ("", "unknown method"),
    ];
    for (text, expected) in cases {
        let message = RangeMethod::parse(text).unwrap_err().to_string();
        assert!(message.contains(expected), "{text}: {message}");
        assert!(message.contains(&format!("'{text}'")), "{text}: {message}");
    }
}

#[test]
fn error_integral_matches_brute_force() {
    let segment = |lo, hi, count| Segment { lo, hi, count };
    let segments = [
        segment(-1.3, -0.9, 3.0),
        segment(0.31, 0.77, 2.0),
        segment(1.0, 1.6, 1.0),
        segment(0.2, 0.2, 5.0),
    ];
    let (lo, hi, step) = (-1.0, 1.2, 0.13);
    let mut brute = 0.0;
    for s in &segments {
        let n = 100_000;
        let mut sum = 0.0;
        for k in 0..n {
            let x = s.lo + (s.hi - s.lo) * (k as f64 + 0.5) / n as f64;
            // Clipped values go to the clip bound, values inside to the nearest grid
            // point (which may lie just outside the bounds, as a rounded zero point
            // allows).
            let e = if x < lo {
                lo - x
            } else if x > hi {
                x - hi
            } else {
                x - step * (x / step).round()
            };
            sum += e * e;
        }
        brute += s.count * sum / n as f64;
    }
    let exact = quantization_error(&segments, lo, hi, step);
    assert!(
        (exact - brute).abs() < 1e-6 * brute.max(1.0),
        "{exact} vs {brute}"
    );
}

#[test]
fn bits_are_checked_and_empty_stats_give_zero_range() {
    let s = stats_of(&[1.0]);
    assert!(matches!(
        choose_range(&s, RangeMethod::MinMax, Symmetry::Symmetric, 1),
        Err(QuantError::BadBits(1))
    ));
    for method in methods() {
        for zeros in [TensorStats::new(), stats_of(&[0.0; 8])] {
            let r = choose_range(&zeros, method, Symmetry::Asymmetric, 8).unwrap();
            assert_eq!((r.lo(), r.hi()), (0.0, 0.0));
        }
    }
}

#[test]
fn a_few_close_values_give_a_range_around_them() {
    // Segments trimmed to [min, max] are much narrower than a bin here.
    let s = stats_of(&[1.0, 1.0001, -0.3]);
    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
        // KL on three values: any threshold inside the data is defensible.
        let r = choose_range(&s, RangeMethod::Kl, symmetry, 8).unwrap();
        assert!(r.hi() >= 0.3 && r.hi() <= 1.0001, "kl {symmetry:?}: {r:?}");
    }
    for method in [
        RangeMethod::MinMax,
        RangeMethod::Percentile(99.99),
        RangeMethod::Mse,
    ] {
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            let r = choose_range(&s, method, symmetry, 8).unwrap();
            assert!(
                r.hi() > 0.9 && r.hi() <= 1.0001,
                "{method} {symmetry:?}: {r:?}"
            );
            assert!(
                r.lo() < -0.2 && r.lo() >= -1.0001,
                "{method} {symmetry:?}: {r:?}"
            );
        }
    }
}

#[test]
fn uniform_data_is_not_clipped() {
    let s = stats_of(&uniform(100_000));
    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
        let full = choose_range(&s, RangeMethod::MinMax, symmetry, 8).unwrap();
        assert_eq!((full.lo(), full.hi()), (-0.99999, 0.99999));
        for method in methods() {
            let r = choose_range(&s, method, symmetry, 8).unwrap();
            // Clipping a uniform distribution costs more than the finer step gains.
            assert!(
                r.hi() >= 0.99 && r.hi() <= full.hi(),
                "{method} {symmetry:?}: {r:?}"
            );
            assert!(
                r.lo() <= -0.99 && r.lo() >= full.lo(),
                "{method} {symmetry:?}: {r:?}"
            );
        }
    }
}

#[test]
fn one_huge_outlier_is_clipped_by_every_method_but_minmax() {
    // A Gaussian bulk (KL sees no loss in flat data: see the module doc) and one value
    // at 100σ.
    let mut values = gaussian(400_000, 3);
    values.push(100.0);
    let s = stats_of(&values);
    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
        let minmax = choose_range(&s, RangeMethod::MinMax, symmetry, 8).unwrap();
        assert_eq!(minmax.hi(), 100.0);
        let percentile = choose_range(&s, RangeMethod::Percentile(99.99), symmetry, 8).unwrap();
        assert!(percentile.hi() < 5.0, "{symmetry:?}: {percentile:?}");
        // MSE weighs the outlier's squared clipping error against 400k rounding errors
        // of about step²/12: symmetric, 400k·t²/(12·127²) + (100 - t)² is least at
        // t ≈ 33; asymmetric (255 steps over [-4.5, h]) at h ≈ 65. Far below the
        // outlier, far above the bulk.
        let mse = choose_range(&s, RangeMethod::Mse, symmetry, 8).unwrap();
        let (low, high) = match symmetry {
            Symmetry::Symmetric => (28.0, 38.0),
            Symmetry::Asymmetric => (58.0, 72.0),
        };
        assert!(mse.hi() > low && mse.hi() < high, "{symmetry:?}: {mse:?}");
        // KL never keeps fewer than 128 bins of width 2^-4 here: at least 8.
        let kl = choose_range(&s, RangeMethod::Kl, symmetry, 8).unwrap();
        assert!(kl.hi() < 25.0, "{symmetry:?}: {kl:?}");
    }
}

#[test]
fn gaussian_thresholds_fall_between_3_and_5_sigma() {
    // The MSE optimum of an 8-bit quantizer for a Gaussian is near 4σ (Banner et al.,
    // ACIQ); 200k samples reach about 4.5σ-6σ, so both methods clip only the far tail.
    let s = stats_of(&gaussian(200_000, 7));
    for method in [
        RangeMethod::Mse,
        RangeMethod::Kl,
        RangeMethod::Percentile(99.99),
    ] {
        let r = choose_range(&s, method, Symmetry::Symmetric, 8).unwrap();
        assert!(r.hi() > 3.0 && r.hi() < 5.0, "{method}: {r:?}");
        assert!(r.hi() < s.max_abs());
    }
    // At 4 bits the step is 16× coarser: MSE clips harder (ACIQ: about 2.5σ).
    let r = choose_range(&s, RangeMethod::Mse, Symmetry::Symmetric, 4).unwrap();
    assert!(r.hi() > 2.0 && r.hi() < 3.2, "{r:?}");
}

#[test]
fn asymmetric_ranges_keep_the_empty_side_at_zero() {
    let relu: Vec<f32> = gaussian(100_000, 9)
        .into_iter()
        .map(|x| x.max(0.0))
        .collect();
    let s = stats_of(&relu);
    for method in methods() {
        let r = choose_range(&s, method, Symmetry::Asymmetric, 8).unwrap();
        assert_eq!(r.lo(), 0.0, "{method}");
        assert!(r.hi() > 1.5 && r.hi() <= s.max_abs(), "{method}: {r:?}");
    }
    // A skewed distribution: asymmetric MSE clips each side on its own.
    let mut skewed: Vec<f32> = gaussian(100_000, 11)
        .into_iter()
        .map(|x| x.abs() * 4.0)
        .collect();
    skewed.extend(gaussian(20_000, 13).into_iter().map(|x| -x.abs() * 0.25));
    let s = stats_of(&skewed);
    let r = choose_range(&s, RangeMethod::Mse, Symmetry::Asymmetric, 8).unwrap();
    assert!(r.lo() < -0.5 && r.lo() > -1.5, "{r:?}");
    assert!(r.hi() > 10.0 && r.hi() < 20.0, "{r:?}");
}

/// The search as it was before it was made fast: every candidate's error evaluated
/// straightforwardly. The fast search must choose bit for bit the same ranges.
mod reference {
    use super::super::{edge_candidates, kl_divergence, spread, Segment};
    use super::super::{DESCENT_CANDIDATES, GRID_CANDIDATES, SYMMETRIC_CANDIDATES};

    fn rounding_error_integral(x: f64, step: f64) -> f64 {
        let k = (x / step + 0.5).floor();
        let u = x - k * step;
        k * step * step * step / 12.0 + (u * u * u + step * step * step / 8.0) / 3.0
    }

    pub fn quantization_error(segments: &[Segment], lo: f64, hi: f64, step: f64) -> f64 {
        let mut total = 0.0;
        for s in segments {
            let width = s.hi - s.lo;
            if width <= 0.0 {
                let x = s.lo;
                let e = if x < lo {
                    lo - x
                } else if x > hi {
                    x - hi
                } else {
                    x - step * (x / step).round()
                };
                total += s.count * e * e;
                continue;
            }
            let mut integral = 0.0;
            if s.lo < lo {
                let b = s.hi.min(lo);
                integral += ((lo - s.lo).powi(3) - (lo - b).powi(3)) / 3.0;
            }
            let (a, b) = (s.lo.max(lo), s.hi.min(hi));
            if a < b {
                integral += rounding_error_integral(b, step) - rounding_error_integral(a, step);
            }
            if s.hi > hi {
                let a = s.lo.max(hi);
                integral += ((s.hi - hi).powi(3) - (a - hi).powi(3)) / 3.0;
            }
            total += s.count * integral / width;
        }
        total
    }

    pub fn mse_threshold(abs_segments: &[Segment], width: f64, max_abs: f64, levels: f64) -> f64 {
        let candidates = spread(edge_candidates(width, max_abs), SYMMETRIC_CANDIDATES);
        let error = |t: f64| quantization_error(abs_segments, 0.0, t, t / levels);
        argmin(&candidates, error).unwrap_or(max_abs)
    }

    pub fn mse_range(s: &[Segment], width: f64, min: f64, max: f64, steps: f64) -> (f64, f64) {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let side = |extreme: f64| {
            if extreme == 0.0 {
                vec![0.0]
            } else {
                edge_candidates(width, extreme)
            }
        };
        let (los, his) = (side(min), side(max));
        let error = |lo: f64, hi: f64| {
            if hi - lo <= 0.0 {
                f64::INFINITY
            } else {
                quantization_error(s, lo, hi, (hi - lo) / steps)
            }
        };
        let (coarse_los, coarse_his) = (
            spread(los.clone(), GRID_CANDIDATES),
            spread(his.clone(), GRID_CANDIDATES),
        );
        let (mut best_lo, mut best_hi, mut best) = (min, max, error(min, max));
        for &lo in &coarse_los {
            for &hi in &coarse_his {
                let e = error(lo, hi);
                if e < best {
                    (best_lo, best_hi, best) = (lo, hi, e);
                }
            }
        }
        let (fine_los, fine_his) = (
            spread(los, DESCENT_CANDIDATES),
            spread(his, DESCENT_CANDIDATES),
        );
        for _ in 0..3 {
            best_hi = argmin(&fine_his, |hi| error(best_lo, hi)).unwrap_or(best_hi);
            best_lo = argmin(&fine_los, |lo| error(lo, best_hi)).unwrap_or(best_lo);
        }
        (best_lo, best_hi)
    }

    /// The candidate with the smallest cost (the first of equals).
    fn argmin(candidates: &[f64], cost: impl Fn(f64) -> f64) -> Option<f64> {
        let mut best: Option<(f64, f64)> = None;
        for &c in candidates {
            let e = cost(c);
            if best.is_none_or(|(_, b)| e < b) {
                best = Some((c, e));
            }
        }
        best.map(|(c, _)| c)
    }

    pub fn kl_threshold(abs_counts: &[u64], width: f64, max_abs: f64, levels: usize) -> f64 {
        let end = abs_counts
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |last| last + 1);
        if end <= levels {
            return max_abs;
        }
        let mut best: Option<(usize, f64)> = None;
        let mut p = vec![0f64; end];
        let mut q = vec![0f64; end];
        for i in levels..=end {
            let outliers: u64 = abs_counts[i..end].iter().sum();
            for (b, slot) in p[..i].iter_mut().enumerate() {
                *slot = abs_counts[b] as f64;
            }
            p[i - 1] += outliers as f64;
            let level_of = |b: usize| b * levels / i;
            let mut level_sum = vec![0f64; levels];
            let mut level_support = vec![0usize; levels];
            for b in 0..i {
                level_sum[level_of(b)] += abs_counts[b] as f64;
                if p[b] > 0.0 {
                    level_support[level_of(b)] += 1;
                }
            }
            for b in 0..i {
                let l = level_of(b);
                q[b] = if p[b] > 0.0 {
                    level_sum[l] / level_support[l] as f64
                } else {
                    0.0
                };
            }
            let divergence = kl_divergence(&p[..i], &q[..i]);
            if best.is_none_or(|(_, d)| divergence < d) {
                best = Some((i, divergence));
            }
        }
        best.map_or(max_abs, |(i, _)| (i as f64 * width).min(max_abs))
    }
}

/// A seeded xorshift64 generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

use super::super::stats::MIN_WIDTH_LOG2;
use Shape::*;

/// The shapes of the random histograms.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// A ReLU output: a spike at zero and a one-sided bell.
    Relu,
    /// A bell over both signs, off centre.
    TwoSided,
    /// A bell and a few far outliers.
    Outliers,
    /// A handful of occupied bins.
    Sparse,
    /// Every value in one bin.
    SingleBin,
    /// One or two values.
    Few,
    /// Counts near 2^50 in every bin.
    Huge,
}

const SHAPES: [Shape; 7] = [Relu, TwoSided, Outliers, Sparse, SingleBin, Few, Huge];

/// A value in signed bin `bin` of width `w`: its lower edge, just below its upper edge, or
/// in between.
fn value_in_bin(rng: &mut Rng, bin: i64, w: f64) -> f32 {
    let edge = bin as f64 * w;
    let x = match rng.below(3) {
        0 => edge as f32,
        1 => (((bin + 1) as f64 * w) as f32).next_down(),
        _ => (edge + rng.unit() * w) as f32,
    };
    if (x as f64 / w).floor() as i64 == bin {
        x
    } else {
        edge as f32
    }
}

/// Seeded random statistics of `bins` bins that `TensorStats` accepts (canonical width,
/// consistent count, min and max in the outermost occupied bins).
fn random_stats(rng: &mut Rng, shape: Shape, bins: usize) -> TensorStats {
    let half = (bins / 2) as i64;
    let width_log2 = if rng.below(8) == 0 {
        MIN_WIDTH_LOG2
    } else {
        rng.below(61) as i32 - 30
    };
    let w = 2f64.powi(width_log2);
    // The outermost occupied bin on the positive side: in the outer half of the histogram,
    // so that the width is the narrowest covering the values (any at the narrowest width).
    let low_top = if width_log2 == MIN_WIDTH_LOG2 {
        0
    } else {
        half / 2
    };
    let top = low_top + rng.below((half - low_top) as u64) as i64;
    let bottom = match shape {
        Relu => 0,
        SingleBin => top,
        Few => top - rng.below(3) as i64,
        _ => -(rng.below(half as u64 + 1) as i64).min(half),
    };
    // Not -half: its lower edge is the histogram's limit, which no value reaches.
    let bottom = bottom.max(1 - half);
    let mut counts = vec![0u64; bins];
    let centre = bottom as f64 + (top - bottom) as f64 * rng.unit();
    let sigma = 1.0 + (top - bottom) as f64 * rng.unit() / 3.0;
    let scale = [1u64, 100, 10_000, 1_000_000][rng.below(4) as usize];
    for i in bottom..=top {
        let z = (i as f64 - centre) / sigma;
        let n = match shape {
            Relu | TwoSided => (scale as f64 * (-z * z / 2.0).exp()) as u64,
            Outliers => (scale as f64 * (-z * z / 2.0).exp()) as u64 * (z.abs() < 4.0) as u64,
            Sparse => (rng.below(50) == 0) as u64 * (1 + rng.below(scale)),
            SingleBin | Few => 0,
            Huge => (1u64 << 50) + rng.below(1 << 40),
        };
        counts[(i + half) as usize] = n;
    }
    if let Outliers = shape {
        for _ in 0..1 + rng.below(3) {
            let i = bottom + rng.below((top - bottom + 1) as u64) as i64;
            counts[(i + half) as usize] += 1;
        }
    }
    // The outermost bins hold min and max.
    counts[(bottom + half) as usize] += 1;
    counts[(top + half) as usize] += 1;
    let (mut min, mut max) = (value_in_bin(rng, bottom, w), value_in_bin(rng, top, w));
    if let Relu = shape {
        (min, counts[half as usize]) = (0.0, counts[half as usize] + scale * 5);
    }
    if min > max {
        (min, max) = (max, min);
    }
    let count: u64 = counts.iter().sum();
    let text = serde_json::json!({
        "count": count, "min": min, "max": max,
        "histogram": {"bins": bins, "bin_width_log2": width_log2, "first_bin": 0, "counts": counts},
    });
    match serde_json::from_value::<TensorStats>(text) {
        Ok(stats) => stats,
        Err(e) => panic!("{shape:?} {width_log2} [{bottom}, {top}] {min} {max}: {e}"),
    }
}

#[test]
fn floor_exact_is_floor_bit_for_bit() {
    let mut values = vec![f64::MAX, f64::MIN, f64::INFINITY, f64::NEG_INFINITY];
    let two_52 = 4_503_599_627_370_496.0;
    for v in [
        0.0,
        0.5,
        1.0,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
        1.0 - f64::EPSILON / 2.0,
    ] {
        values.extend([v, -v]);
    }
    for v in [two_52 - 0.5, two_52, two_52 + 1.0, 9.3e18] {
        values.extend([v, -v]);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        // Every exponent, and integers and half-integers near zero.
        values.push(f64::from_bits(rng.next()));
        values.push((rng.below(1 << 20) as f64 - (1 << 19) as f64) / 2.0);
        let x = (rng.unit() - 0.5) * 2f64.powi(rng.below(60) as i32);
        values.extend([
            x,
            f64::from_bits(x.to_bits() + 1),
            f64::from_bits(x.to_bits() - 1),
        ]);
    }
    for v in values {
        let (fast, libm) = (floor_exact(v), v.floor());
        assert!(
            fast.to_bits() == libm.to_bits() || (fast.is_nan() && libm.is_nan()),
            "floor({v:e}) = {libm:e}, not {fast:e}"
        );
    }
}

#[test]
fn quantization_error_has_the_reference_bits() {
    let mut rng = Rng(17);
    for case in 0..300 {
        let shape = SHAPES[case % SHAPES.len()];
        let stats = random_stats(&mut rng, shape, [64, 256, 4096][case % 3]);
        let (min, max) = (
            stats.min().unwrap_or(0.0) as f64,
            stats.max().unwrap_or(0.0) as f64,
        );
        for segments in [signed_segments(&stats), abs_segments(&stats)] {
            for _ in 0..20 {
                let lo = min.min(0.0) * rng.unit() * 1.2;
                let hi = max.max(0.0) * rng.unit() * 1.2 + f64::MIN_POSITIVE;
                let step = (hi - lo) / [255.0, 127.0, 15.0, 1.0][rng.below(4) as usize];
                let fast = quantization_error(&segments, lo, hi, step);
                let slow = reference::quantization_error(&segments, lo, hi, step);
                assert_eq!(
                    fast.to_bits(),
                    slow.to_bits(),
                    "{shape:?} [{lo}, {hi}] / {step}"
                );
            }
        }
    }
}

#[test]
fn the_error_bound_is_below_the_computed_error_and_tight_where_clipping_dominates() {
    let mut rng = Rng(99);
    let mut tight = 0;
    for case in 0..300 {
        let shape = SHAPES[case % SHAPES.len()];
        let stats = random_stats(&mut rng, shape, [64, 256, 4096][case % 3]);
        let width = stats.histogram().bin_width();
        let (min, max) = (
            stats.min().unwrap_or(0.0) as f64,
            stats.max().unwrap_or(0.0) as f64,
        );
        for segments in [signed_segments(&stats), abs_segments(&stats)] {
            let bound = ErrorBound::new(&segments, width);
            for _ in 0..20 {
                // Bounds on bin edges (as the search's candidates are) or anywhere.
                let mut lo = min.min(0.0) * rng.unit();
                let mut hi = max.max(0.0) * rng.unit();
                if rng.below(2) == 0 {
                    (lo, hi) = ((lo / width).round() * width, (hi / width).round() * width);
                }
                if hi - lo <= 0.0 {
                    continue;
                }
                let step = (hi - lo) / [255.0, 127.0, 15.0, 3.0][rng.below(4) as usize];
                let error = quantization_error(&segments, lo, hi, step);
                let lower = bound.at(&segments, lo, hi, step);
                assert!(lower <= error, "{shape:?} [{lo}, {hi}] / {step}: {lower}");
                tight += usize::from(lower > 0.5 * error);
            }
        }
    }
    // Not vacuous: where clipping dominates the bound is close to the error.
    assert!(tight > 1000, "{tight}");
}

/// The reference's `choose_range` for `mse` and `kl`.
fn reference_range(s: &TensorStats, method: RangeMethod, sym: Symmetry, bits: u32) -> ClipRange {
    let (Some(min), Some(max)) = (s.min(), s.max()) else {
        return ClipRange::new(0.0, 0.0);
    };
    let (max_abs, width) = (s.max_abs() as f64, s.histogram().bin_width());
    if max_abs == 0.0 {
        return ClipRange::new(0.0, 0.0);
    }
    match (method, sym) {
        (RangeMethod::Mse, Symmetry::Symmetric) => {
            let levels = ((1u32 << (bits - 1)) - 1) as f64;
            let t = reference::mse_threshold(&abs_segments(s), width, max_abs, levels);
            ClipRange::symmetric(t as f32)
        }
        (RangeMethod::Mse, Symmetry::Asymmetric) => {
            let steps = ((1u32 << bits) - 1) as f64;
            let segments = signed_segments(s);
            let (lo, hi) = reference::mse_range(&segments, width, min as f64, max as f64, steps);
            ClipRange::new(lo as f32, hi as f32)
        }
        (RangeMethod::Kl, symmetry) => {
            let counts = s.histogram().abs_counts();
            let t = reference::kl_threshold(&counts, width, max_abs, 1 << (bits - 1));
            match symmetry {
                Symmetry::Symmetric => ClipRange::symmetric(t as f32),
                Symmetry::Asymmetric => ClipRange::new(min.max(-t as f32), max.min(t as f32)),
            }
        }
        _ => panic!("{method} has no reference"),
    }
}

fn assert_same(s: &TensorStats, method: RangeMethod, sym: Symmetry, bits: u32, what: &str) {
    let fast = choose_range(s, method, sym, bits).unwrap();
    let slow = reference_range(s, method, sym, bits);
    assert_eq!(
        (fast.lo().to_bits(), fast.hi().to_bits()),
        (slow.lo().to_bits(), slow.hi().to_bits()),
        "{what} {method} {sym:?} {bits} bits: {fast:?} vs {slow:?}"
    );
}

#[test]
fn mse_and_kl_choose_the_reference_ranges_on_random_histograms() {
    let mut rng = Rng(2024);
    for case in 0..140 {
        let shape = SHAPES[case % SHAPES.len()];
        // Mostly small histograms: the reference is slow at 4096 bins.
        let bins = [4096, 64, 128, 512, 64, 128, 512, 64, 128, 512][case % 10];
        let stats = random_stats(&mut rng, shape, bins);
        let what = format!("case {case} {shape:?} {bins} bins");
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            for bits in [8, 4] {
                assert_same(&stats, RangeMethod::Mse, symmetry, bits, &what);
            }
        }
        if bins <= 512 {
            assert_same(&stats, RangeMethod::Kl, Symmetry::Symmetric, 4, &what);
        }
    }
}

#[test]
fn mse_and_kl_choose_the_reference_ranges_on_observed_activations() {
    let bell = gaussian(20_000, 5);
    let relu: Vec<f32> = bell.iter().map(|x| x.max(0.0)).collect();
    let mut outliers = bell.clone();
    outliers.extend([40.0, -25.0, 90.0]);
    let tiny: Vec<f32> = bell.iter().map(|x| x * 1e-38).collect();
    let datasets = [
        ("bell", &bell),
        ("relu", &relu),
        ("outliers", &outliers),
        ("tiny", &tiny),
    ];
    for (name, values) in datasets {
        let stats = stats_of(values);
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            assert_same(&stats, RangeMethod::Mse, symmetry, 8, name);
            assert_same(&stats, RangeMethod::Kl, symmetry, 8, name);
        }
    }
}

/// Times the searches on activation-like histograms:
/// `cargo test --release -p qcc-passes range_search_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn range_search_timing() {
    let bell = gaussian(200_000, 5);
    let relu: Vec<f32> = bell.iter().map(|x| x.max(0.0)).collect();
    let mut outliers = bell.clone();
    outliers.extend([40.0, -25.0, 90.0]);
    for (name, values) in [
        ("two-sided", &bell),
        ("relu", &relu),
        ("outliers", &outliers),
    ] {
        let stats = stats_of(values);
        for (method, symmetry) in [
            (RangeMethod::Mse, Symmetry::Asymmetric),
            (RangeMethod::Mse, Symmetry::Symmetric),
            (RangeMethod::Kl, Symmetry::Symmetric),
        ] {
            let time = |f: &dyn Fn() -> ClipRange| {
                let start = std::time::Instant::now();
                (f(), start.elapsed())
            };
            let (fast, fast_time) = time(&|| choose_range(&stats, method, symmetry, 8).unwrap());
            let (slow, slow_time) = time(&|| reference_range(&stats, method, symmetry, 8));
            assert_eq!(fast, slow);
            println!("{name:10} {method:4} {symmetry:?}: {fast_time:?} (reference {slow_time:?})");
        }
    }
}

#[test]
fn signed_bin_is_the_floor_of_x_over_w() {
    // The formula `signed_bin` replaced.
    use super::super::stats::signed_bin;
    let floor_bin = |x: f32, inverse_width: f64| (x as f64 * inverse_width).floor() as i64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut checked = 0;
    for bins in [64usize, 4096, 65536] {
        let half = (bins / 2) as i64;
        // From the narrowest width to the widest, at which f32::MAX is in the last bin.
        let widest = 128 - (half.trailing_zeros() as i32);
        for width_log2 in [MIN_WIDTH_LOG2, -70, -9, 0, 1, 60, widest - 1, widest] {
            let (w, inverse_width) = (2f64.powi(width_log2), 2f64.powi(-width_log2));
            let limit = half as f64 * w;
            let mut values = vec![0.0f32, -0.0, f32::MIN_POSITIVE, f32::MAX, f32::MIN];
            for bits in [1u32, 2, 0x7f_ffff, 0x80_0000] {
                values.extend([f32::from_bits(bits), -f32::from_bits(bits)]);
            }
            // Every bin edge of the 64-bin histogram, a spread of the others, and the
            // values either side of each.
            let stride = (half / 32).max(1) as usize;
            for i in (-half..=half)
                .step_by(stride)
                .chain([-1, 1, half - 1, 1 - half])
            {
                let edge = (i as f64 * w) as f32;
                values.extend([edge, edge.next_up(), edge.next_down()]);
            }
            // The largest values inside, either sign.
            let inside = (limit as f32).next_down();
            values.extend([inside, -inside, inside.next_down(), -inside.next_down()]);
            for _ in 0..2000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                values.push(f32::from_bits(state as u32));
                values.push(((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32);
            }
            for x in values {
                if !x.is_finite() || (x.abs() as f64) >= limit {
                    continue;
                }
                let bin = signed_bin(x, inverse_width);
                assert_eq!(bin, floor_bin(x, inverse_width), "{x:e} at 2^{width_log2}");
                assert!((-half..half).contains(&bin), "{x:e} at 2^{width_log2}");
                checked += 1;
            }
        }
    }
    assert!(checked > 50_000, "{checked}");
}
