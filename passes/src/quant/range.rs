//! Range methods: the clip range `[lo, hi]` a tensor is quantized to, from its statistics.
//!
//! - `minmax`: the observed range.
//! - `percentile[=P]` (P defaults to 99.99): symmetric, the P-th percentile of |x|;
//!   asymmetric, the (100-P)-th and P-th percentiles of x. Linear within a histogram bin.
//! - `mse`: the clip range minimising the expected squared quantization error for the bit
//!   width, treating the values of each histogram bin as uniform within the bin: values inside
//!   the range round to the nearest grid point (the grid `k·step` passes through zero, which
//!   the zero point makes exact), values outside are clipped. The error integral is exact for
//!   that model (not the `step²/12` approximation, which overstates the error when the step
//!   is much wider than the data and so clips too eagerly). Symmetric: every bin edge up to
//!   max |x| is a candidate; asymmetric: a 48×48 grid of (lo, hi) then coordinate descent.
//! - `kl`: TensorRT's entropy calibration on the |x| histogram. For each candidate
//!   `i >= 2^(bits-1)` bins: the reference distribution P is bins `[0, i)` with the count of
//!   every bin beyond folded into bin `i-1`; the candidate Q merges bins `[0, i)` (without the
//!   outliers) into `2^(bits-1)` levels (bin `b` goes to level `floor(b·levels/i)`) and
//!   spreads each level's count evenly over the bins where P is non-zero; the smallest
//!   KL(P‖Q) wins and the threshold is the upper edge of bin `i-1` (TensorRT adds half a
//!   bin; we keep the edge so that P covers exactly what is kept). Q is zero where P is not
//!   only when a whole level is empty: such bins get 1e-12 of the mass, which makes the
//!   candidate lose rather than the divergence infinite. Like TensorRT's, the method needs
//!   a populated histogram: on a handful of values its threshold is arbitrary. KL is symmetric by construction (as
//!   TensorRT is); for an asymmetric range the threshold clips each side of `[min, max]`.
//!
//! Every range contains zero, so that zero is exactly representable.

use super::profile::Symmetry;
use super::stats::TensorStats;
use super::QuantError;
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_PERCENTILE: f64 = 99.99;

/// How the clip range of a tensor is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    MinMax,
    /// The percentile, in (50, 100].
    Percentile(f64),
    Mse,
    Kl,
}

impl RangeMethod {
    pub const NAMES: &'static str = "minmax, percentile[=P], mse, kl";

    pub fn parse(text: &str) -> Result<RangeMethod, QuantError> {
        let bad = |reason: String| {
            Err(QuantError::BadRangeMethod {
                text: text.to_string(),
                reason,
            })
        };
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        let method = match name {
            "minmax" => RangeMethod::MinMax,
            "mse" => RangeMethod::Mse,
            "kl" => RangeMethod::Kl,
            "percentile" => {
                let p = match value {
                    None => DEFAULT_PERCENTILE,
                    Some(v) => match v.parse::<f64>() {
                        Ok(p) => p,
                        Err(_) => return bad(format!("percentile '{v}' is not a number")),
                    },
                };
                if !(p > 50.0 && p <= 100.0) {
                    return bad(format!("percentile {p} must be above 50 and at most 100"));
                }
                return Ok(RangeMethod::Percentile(p));
            }
            _ => return bad(format!("unknown method (known: {})", RangeMethod::NAMES)),
        };
        if value.is_some() {
            return bad(format!("'{name}' takes no value"));
        }
        Ok(method)
    }
}

impl FromStr for RangeMethod {
    type Err = QuantError;
    fn from_str(text: &str) -> Result<RangeMethod, QuantError> {
        RangeMethod::parse(text)
    }
}

impl fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeMethod::MinMax => write!(f, "minmax"),
            RangeMethod::Percentile(p) => write!(f, "percentile={p}"),
            RangeMethod::Mse => write!(f, "mse"),
            RangeMethod::Kl => write!(f, "kl"),
        }
    }
}

/// The range methods of a compile: weights and activations are chosen separately.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RangeMethods {
    pub weights: RangeMethod,
    pub activations: RangeMethod,
}

impl Default for RangeMethods {
    /// `minmax` for both, as onnxruntime's `quantize_static` defaults to: the method that
    /// never clips, so that a first int8 build is comparable with other tools.
    fn default() -> RangeMethods {
        RangeMethods {
            weights: RangeMethod::MinMax,
            activations: RangeMethod::MinMax,
        }
    }
}

/// A clip range `lo <= 0 <= hi`, both finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipRange {
    lo: f32,
    hi: f32,
}

impl ClipRange {
    /// The smallest range containing `lo`, `hi` and zero (non-finite bounds count as 0).
    pub fn new(lo: f32, hi: f32) -> ClipRange {
        let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
        ClipRange {
            lo: finite(lo).min(0.0),
            hi: finite(hi).max(0.0),
        }
    }

    /// `[-threshold, threshold]`.
    pub fn symmetric(threshold: f32) -> ClipRange {
        let t = if threshold.is_finite() {
            threshold.abs()
        } else {
            0.0
        };
        ClipRange { lo: -t, hi: t }
    }

    pub fn lo(&self) -> f32 {
        self.lo
    }

    pub fn hi(&self) -> f32 {
        self.hi
    }

    pub fn max_abs(&self) -> f32 {
        self.hi.max(-self.lo)
    }
}

/// The clip range `method` chooses for a tensor with statistics `stats`, to be quantized to
/// `bits` bits with the given symmetry.
pub fn choose_range(
    stats: &TensorStats,
    method: RangeMethod,
    symmetry: Symmetry,
    bits: u32,
) -> Result<ClipRange, QuantError> {
    if !(2..=16).contains(&bits) {
        return Err(QuantError::BadBits(bits));
    }
    let (Some(min), Some(max)) = (stats.min(), stats.max()) else {
        return Ok(ClipRange::new(0.0, 0.0));
    };
    let max_abs = stats.max_abs() as f64;
    if max_abs == 0.0 {
        return Ok(ClipRange::new(0.0, 0.0));
    }
    let symmetric_levels = ((1u32 << (bits - 1)) - 1) as f64;
    let asymmetric_steps = ((1u32 << bits) - 1) as f64;
    let range = match (method, symmetry) {
        (RangeMethod::MinMax, Symmetry::Symmetric) => ClipRange::symmetric(max_abs as f32),
        (RangeMethod::MinMax, Symmetry::Asymmetric) => ClipRange::new(min, max),
        (RangeMethod::Percentile(p), Symmetry::Symmetric) => {
            let segments = abs_segments(stats);
            ClipRange::symmetric(percentile(&segments, stats.count(), p / 100.0) as f32)
        }
        (RangeMethod::Percentile(p), Symmetry::Asymmetric) => {
            let segments = signed_segments(stats);
            let lo = percentile(&segments, stats.count(), 1.0 - p / 100.0);
            let hi = percentile(&segments, stats.count(), p / 100.0);
            ClipRange::new(lo as f32, hi as f32)
        }
        (RangeMethod::Mse, Symmetry::Symmetric) => {
            let width = stats.histogram().bin_width();
            let t = mse_threshold(&abs_segments(stats), width, max_abs, symmetric_levels);
            ClipRange::symmetric(t as f32)
        }
        (RangeMethod::Mse, Symmetry::Asymmetric) => {
            let (lo, hi) = mse_range(
                &signed_segments(stats),
                stats.histogram().bin_width(),
                min as f64,
                max as f64,
                asymmetric_steps,
            );
            ClipRange::new(lo as f32, hi as f32)
        }
        (RangeMethod::Kl, symmetry) => {
            let levels = 1usize << (bits - 1);
            let t = kl_threshold(
                &stats.histogram().abs_counts(),
                stats.histogram().bin_width(),
                max_abs,
                levels,
            );
            match symmetry {
                Symmetry::Symmetric => ClipRange::symmetric(t as f32),
                Symmetry::Asymmetric => ClipRange::new(min.max(-t as f32), max.min(t as f32)),
            }
        }
    };
    Ok(range)
}

/// The values of one non-empty histogram bin, taken as uniform on `[lo, hi]`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    lo: f64,
    hi: f64,
    count: f64,
}

/// The non-empty signed bins, the outermost ones trimmed to the exact min and max.
fn signed_segments(stats: &TensorStats) -> Vec<Segment> {
    let h = stats.histogram();
    let w = h.bin_width();
    let (min, max) = (
        stats.min().unwrap_or(0.0) as f64,
        stats.max().unwrap_or(0.0) as f64,
    );
    let mut segments = Vec::new();
    for (j, &n) in h.counts().iter().enumerate() {
        if n > 0 {
            let lo = h.lower_edge(j);
            segments.push(Segment {
                lo: lo.max(min),
                hi: (lo + w).min(max),
                count: n as f64,
            });
        }
    }
    segments
}

/// The non-empty bins of |x|, the last one trimmed to max |x|.
fn abs_segments(stats: &TensorStats) -> Vec<Segment> {
    let h = stats.histogram();
    let w = h.bin_width();
    let max_abs = stats.max_abs() as f64;
    let mut segments = Vec::new();
    for (a, &n) in h.abs_counts().iter().enumerate() {
        if n > 0 {
            let lo = a as f64 * w;
            segments.push(Segment {
                lo,
                hi: (lo + w).min(max_abs),
                count: n as f64,
            });
        }
    }
    segments
}

/// The value below which a fraction `q` of the `count` values lie, linear within a segment.
fn percentile(segments: &[Segment], count: u64, q: f64) -> f64 {
    let target = q.clamp(0.0, 1.0) * count as f64;
    let mut below = 0.0;
    for s in segments {
        if below + s.count >= target {
            let fraction = ((target - below) / s.count).clamp(0.0, 1.0);
            return s.lo + fraction * (s.hi - s.lo);
        }
        below += s.count;
    }
    segments.last().map_or(0.0, |s| s.hi)
}

/// `∫_{-step/2}^{x} e(t)² dt` for the rounding error `e(t) = t - step·round(t/step)`: whole
/// periods contribute `step³/12` each, the partial one `(u³ + step³/8)/3`.
fn rounding_error_integral(x: f64, step: f64) -> f64 {
    let k = (x / step + 0.5).floor();
    let u = x - k * step;
    k * step * step * step / 12.0 + (u * u * u + step * step * step / 8.0) / 3.0
}

/// The expected total squared error of quantizing the segments' values to the grid
/// `k·step` clipped to `[lo, hi]`.
fn quantization_error(segments: &[Segment], lo: f64, hi: f64, step: f64) -> f64 {
    let mut total = 0.0;
    for s in segments {
        let width = s.hi - s.lo;
        if width <= 0.0 {
            // A point mass (a bin trimmed to a single value).
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
        // Below the range: clipped to lo.
        if s.lo < lo {
            let b = s.hi.min(lo);
            integral += ((lo - s.lo).powi(3) - (lo - b).powi(3)) / 3.0;
        }
        // Inside: rounded.
        let (a, b) = (s.lo.max(lo), s.hi.min(hi));
        if a < b {
            integral += rounding_error_integral(b, step) - rounding_error_integral(a, step);
        }
        // Above the range: clipped to hi.
        if s.hi > hi {
            let a = s.lo.max(hi);
            integral += ((s.hi - hi).powi(3) - (a - hi).powi(3)) / 3.0;
        }
        total += s.count * integral / width;
    }
    total
}

/// Up to `limit` values evenly spread over `candidates` (always keeping the last).
fn spread(candidates: Vec<f64>, limit: usize) -> Vec<f64> {
    if candidates.len() <= limit {
        return candidates;
    }
    let n = candidates.len();
    (0..limit)
        .map(|i| candidates[(i * (n - 1)) / (limit - 1)])
        .collect()
}

/// The bin edges strictly between 0 and `extreme` (either sign), then `extreme` itself.
/// `extreme` is inside the histogram, so there are at most `bins/2` edges.
fn edge_candidates(width: f64, extreme: f64) -> Vec<f64> {
    const MAX_BINS_PER_SIDE: usize = 1 << 15;
    let steps = ((extreme.abs() / width).ceil() as usize).min(MAX_BINS_PER_SIDE);
    let mut edges: Vec<f64> = (1..steps)
        .map(|t| (t as f64 * width).copysign(extreme))
        .collect();
    edges.push(extreme);
    edges
}

const SYMMETRIC_CANDIDATES: usize = 2048;
const GRID_CANDIDATES: usize = 48;
const DESCENT_CANDIDATES: usize = 512;

/// The symmetric threshold minimising the expected error with `levels` steps on each side.
fn mse_threshold(abs_segments: &[Segment], width: f64, max_abs: f64, levels: f64) -> f64 {
    let candidates = spread(edge_candidates(width, max_abs), SYMMETRIC_CANDIDATES);
    let error = |t: f64| quantization_error(abs_segments, 0.0, t, t / levels);
    argmin(&candidates, error).unwrap_or(max_abs)
}

/// The asymmetric range minimising the expected error with `steps` steps from lo to hi.
fn mse_range(segments: &[Segment], width: f64, min: f64, max: f64, steps: f64) -> (f64, f64) {
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
            quantization_error(segments, lo, hi, (hi - lo) / steps)
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
    // Coordinate descent over the finer candidate lists.
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

/// TensorRT's entropy threshold on the |x| histogram `abs_counts` of bin width `width`.
fn kl_threshold(abs_counts: &[u64], width: f64, max_abs: f64, levels: usize) -> f64 {
    let end = abs_counts
        .iter()
        .rposition(|&n| n > 0)
        .map_or(0, |last| last + 1);
    if end <= levels {
        // Fewer bins than levels: nothing to gain from clipping.
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
        // Merge bins [0, i) into levels; spread each level over its bins where P > 0.
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

/// KL(P‖Q) of two unnormalised distributions over the same bins. Where P > 0 and Q = 0, Q
/// gets 1e-12 of the mass (not renormalised: the divergence is then large, not infinite).
/// A Q with no mass at all (every value beyond the candidate) is infinitely bad.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    const SMOOTHING: f64 = 1e-12;
    let p_total: f64 = p.iter().sum();
    let q_total: f64 = q.iter().sum();
    if p_total == 0.0 {
        return 0.0;
    }
    if q_total == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(&pb, _)| pb > 0.0)
        .map(|(&pb, &qb)| {
            let (pb, qb) = (pb / p_total, (qb / q_total).max(SMOOTHING));
            pb * (pb / qb).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
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
        let segments = [
            Segment {
                lo: -1.3,
                hi: -0.9,
                count: 3.0,
            },
            Segment {
                lo: 0.31,
                hi: 0.77,
                count: 2.0,
            },
            Segment {
                lo: 1.0,
                hi: 1.6,
                count: 1.0,
            },
            Segment {
                lo: 0.2,
                hi: 0.2,
                count: 5.0,
            },
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
}
