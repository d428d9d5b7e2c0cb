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
//!   Candidates that a lower bound on their error rules out are skipped, the others
//!   evaluated exactly: the choice is bit for bit that of evaluating every candidate.
//! - `kl`: TensorRT's entropy calibration on the |x| histogram. For each candidate
//!   `i >= 2^(bits-1)` bins: the reference distribution P is bins `[0, i)` with the count of
//!   every bin beyond folded into bin `i-1`; the candidate Q merges bins `[0, i)` (without the
//!   outliers) into `2^(bits-1)` levels (bin `b` goes to level `floor(b·levels/i)`) and
//!   spreads each level's count evenly over the bins where P is non-zero; the smallest
//!   KL(P‖Q) wins and the threshold is the upper edge of bin `i-1` (TensorRT adds half a
//!   bin; we keep the edge so that P covers exactly what is kept). Q is zero where P is not
//!   only when a whole level is empty: such bins get 1e-12 of the mass, which makes the
//!   candidate lose rather than the divergence infinite. Like TensorRT's, the method needs
//!   a populated histogram: on a handful of values its threshold is arbitrary. KL is
//!   symmetric by construction (as TensorRT is); for an asymmetric range the threshold clips
//!   each side of `[min, max]`.
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

/// The `minmax` range of values whose smallest and largest are `min` and `max` (`None`: no
/// value): `±max(|min|, |max|)` when symmetric. All zeros give the empty range `[0, 0]`.
pub fn min_max_range(min_max: Option<(f32, f32)>, symmetry: Symmetry) -> ClipRange {
    let Some((min, max)) = min_max else {
        return ClipRange::new(0.0, 0.0);
    };
    let max_abs = min.abs().max(max.abs());
    if max_abs == 0.0 {
        return ClipRange::new(0.0, 0.0);
    }
    match symmetry {
        Symmetry::Symmetric => ClipRange::symmetric(max_abs),
        Symmetry::Asymmetric => ClipRange::new(min, max),
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
        (RangeMethod::MinMax, symmetry) => min_max_range(Some((min, max)), symmetry),
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

/// `v.floor()`, bit for bit, for every f64, without the libm call `floor` is on baseline
/// x86-64 (no SSE4.1 `roundsd`): the MSE search floors twice per bin and candidate.
///
/// From 2^52 up every f64 is an integer, its own floor (NaN fails `<` and is returned too,
/// as are the infinities). Below, `as i64` truncates toward zero exactly and the conversion back is exact; the
/// truncation exceeds `v` exactly when `v` is a negative non-integer, whose floor is one
/// less (still exact). The only result whose sign the integer loses is `floor(-0.0) = -0.0`:
/// `copysign` restores it, and is a no-op on every other result (a non-zero truncation has
/// the sign of `v`; a zero one of a non-negative `v` is +0.0, as floor's is).
fn floor_exact(v: f64) -> f64 {
    const ALL_INTEGERS: f64 = 4_503_599_627_370_496.0; // 2^52
    if v.abs() < ALL_INTEGERS {
        let t = v as i64 as f64;
        if t > v {
            t - 1.0
        } else {
            t.copysign(v)
        }
    } else {
        v
    }
}

/// `∫_{-step/2}^{x} e(t)² dt` for the rounding error `e(t) = t - step·round(t/step)`: whole
/// periods contribute `step³/12` each, the partial one `(u³ + step³/8)/3`.
#[derive(Clone, Copy)]
struct RoundingIntegral {
    step: f64,
    /// `step³/8`, the same bits wherever it is computed: hoisted out of the per-bin work.
    eighth_cube: f64,
}

impl RoundingIntegral {
    fn new(step: f64) -> RoundingIntegral {
        RoundingIntegral {
            step,
            eighth_cube: step * step * step / 8.0,
        }
    }

    fn at(&self, x: f64) -> f64 {
        let step = self.step;
        let k = floor_exact(x / step + 0.5);
        let u = x - k * step;
        k * step * step * step / 12.0 + (u * u * u + self.eighth_cube) / 3.0
    }
}

/// The expected total squared error of quantizing the segments' values to the grid
/// `k·step` clipped to `[lo, hi]`.
///
/// This is the search's inner loop. Every candidate's error must come out bit for bit as
/// the straightforward evaluation's (the reference in the tests), or a near-tie could pick
/// another range; so the floating-point operations and the summation order are those of
/// that evaluation, and the savings are only ones that cannot change a bit: the integer
/// floor, `step³/8` computed once, and the rounding integral at an edge that two adjacent
/// bins share computed once (it is a pure function of the edge).
fn quantization_error(segments: &[Segment], lo: f64, hi: f64, step: f64) -> f64 {
    let rounding = RoundingIntegral::new(step);
    // (edge bits, integral there) of the last upper edge evaluated.
    let mut last_edge = (f64::NAN.to_bits(), 0.0);
    let mut integral_at = |x: f64| {
        if x.to_bits() != last_edge.0 {
            last_edge = (x.to_bits(), rounding.at(x));
        }
        last_edge.1
    };
    let mut total = 0.0;
    for s in segments {
        total += segment_error(s, lo, hi, step, &mut integral_at);
    }
    total
}

/// One segment's term of [`quantization_error`], `integral_at` giving the rounding integral.
fn segment_error(
    s: &Segment,
    lo: f64,
    hi: f64,
    step: f64,
    integral_at: &mut impl FnMut(f64) -> f64,
) -> f64 {
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
        return s.count * e * e;
    }
    let mut integral = 0.0;
    // Below the range: clipped to lo.
    if s.lo < lo {
        let b = s.hi.min(lo);
        integral += ((lo - s.lo).powi(3) - (lo - b).powi(3)) / 3.0;
    }
    // Inside: rounded. The lower edge first: it is the previous bin's upper edge.
    let (a, b) = (s.lo.max(lo), s.hi.min(hi));
    if a < b {
        let below = integral_at(a);
        integral += integral_at(b) - below;
    }
    // Above the range: clipped to hi.
    if s.hi > hi {
        let a = s.lo.max(hi);
        integral += ((s.hi - hi).powi(3) - (a - hi).powi(3)) / 3.0;
    }
    s.count * integral / width
}

/// A lower bound, in O(log n), on what [`quantization_error`] computes: the squared
/// clipping error of the whole bins entirely outside `[lo, hi]` (closed form from prefix
/// sums), the exact terms of the segments narrower than a bin (at most the two trimmed to
/// min and max), everything else counted as 0, minus a bound on every rounding error
/// involved. The search skips a candidate whose bound shows it cannot win, so the bound
/// must never exceed the computed error; the slack is about 1e-5 of a typical error at
/// 4096 bins, so the bound is tight wherever clipping dominates, which is where candidates
/// are skipped.
///
/// The rounding errors, with ε = 2^-53, `Y` the larger of max |x| and the bin width `w`
/// and `Z = 2Y`, which bounds every distance between a value, a clip bound and its grid
/// point (|lo|, |hi| <= max |x|, step <= hi - lo):
/// - A whole bin's computed term vs its exact value, per value in the bin: the clipped
///   cubes are each within 6ε·Z³ (two products, a difference), the rounding integrals
///   within 6ε·(|x| + step)·step² <= 12ε·Z³ each (the whole periods `k·step³/12` with
///   `|k| <= |x|/step + 1`, and `u = x - k·step` off by ε·(|x| + step)), the sums and the
///   final product and quotient add a few ε more; all over `w`. Bounded by `256ε·Z³/w`.
/// - The total's summation of up to n terms: within γ_n·Σ|term|, γ_n = nε/(1 - nε), and
///   every whole-bin term is at most count·(Z² + its own error above).
/// - The closed form, from prefix sums of n terms: within 8γ·(lo² + hi² + the sums'
///   magnitudes) <= 64γ·Y² per value.
struct ErrorBound {
    /// Over the segments before index `i`, whole bins only: count, count·centre and
    /// count·(centre² + w²/12) (`∫(x - c)²` over a bin is `w·((c - x₀)² + w²/12)`).
    count: Vec<f64>,
    first: Vec<f64>,
    second: Vec<f64>,
    /// Segments narrower than a bin: their terms are computed exactly.
    narrow: Vec<usize>,
    /// Per value of a whole bin: the bound on the term's, the summation's and the closed
    /// form's rounding errors.
    slack_per_value: f64,
    gamma: f64,
}

impl ErrorBound {
    fn new(segments: &[Segment], width: f64) -> ErrorBound {
        let n = segments.len();
        let max_abs = segments
            .iter()
            .fold(0f64, |m, s| m.max(s.lo.abs()).max(s.hi.abs()));
        let y = max_abs.max(width);
        let z = 2.0 * y;
        let epsilon = f64::EPSILON / 2.0;
        let terms = (n + 16) as f64;
        let gamma = terms * epsilon / (1.0 - terms * epsilon);
        let term_error = 256.0 * epsilon * z * z * z / width;
        let slack_per_value = term_error + gamma * (z * z + term_error) + 64.0 * gamma * y * y;
        let mut bound = ErrorBound {
            count: vec![0.0; n + 1],
            first: vec![0.0; n + 1],
            second: vec![0.0; n + 1],
            narrow: Vec::new(),
            slack_per_value,
            gamma,
        };
        for (i, s) in segments.iter().enumerate() {
            let (mut count, mut first, mut second) = (0.0, 0.0, 0.0);
            if s.hi - s.lo == width {
                let c = s.lo + width / 2.0;
                (count, first, second) = (
                    s.count,
                    s.count * c,
                    s.count * (c * c + width * width / 12.0),
                );
            } else {
                bound.narrow.push(i);
            }
            bound.count[i + 1] = bound.count[i] + count;
            bound.first[i + 1] = bound.first[i] + first;
            bound.second[i + 1] = bound.second[i] + second;
        }
        bound
    }

    /// At most `quantization_error(segments, lo, hi, step)` (the segments of `new`).
    fn at(&self, segments: &[Segment], lo: f64, hi: f64, step: f64) -> f64 {
        if !(hi - lo > 0.0 && step > 0.0) {
            return f64::NEG_INFINITY;
        }
        let n = segments.len();
        // Whole bins entirely below lo: [0, below); entirely above hi: [above, n).
        let below = segments.partition_point(|s| s.hi <= lo);
        let above = segments.partition_point(|s| s.lo < hi).max(below);
        let clipped = lo * lo * self.count[below] - 2.0 * lo * self.first[below]
            + self.second[below]
            + hi * hi * (self.count[n] - self.count[above])
            - 2.0 * hi * (self.first[n] - self.first[above])
            + (self.second[n] - self.second[above]);
        let rounding = RoundingIntegral::new(step);
        let mut narrow = 0.0;
        let mut narrow_magnitude = 0.0;
        for &i in &self.narrow {
            let term = segment_error(&segments[i], lo, hi, step, &mut |x| rounding.at(x));
            narrow += term;
            narrow_magnitude += term.abs();
        }
        let slack = self.count[n] * self.slack_per_value + self.gamma * narrow_magnitude;
        clipped + narrow - slack
    }
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
    let bound = ErrorBound::new(abs_segments, width);
    let lower_bound = |t: f64| bound.at(abs_segments, 0.0, t, t / levels);
    // The last candidate, max |x|, clips nothing: an upper bound on the best.
    let seed = candidates.last().map_or(f64::INFINITY, |&t| error(t));
    pruned_argmin(&candidates, error, lower_bound, seed).unwrap_or(max_abs)
}

/// The last scan of one coordinate of the descent: the fixed coordinate's bits, the answer.
type LastScan = Option<(u64, f64)>;

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
    let bound = ErrorBound::new(segments, width);
    let lower_bound = |lo: f64, hi: f64| bound.at(segments, lo, hi, (hi - lo) / steps);
    let (coarse_los, coarse_his) = (
        spread(los.clone(), GRID_CANDIDATES),
        spread(his.clone(), GRID_CANDIDATES),
    );
    let (mut best_lo, mut best_hi, mut best) = (min, max, error(min, max));
    for &lo in &coarse_los {
        for &hi in &coarse_his {
            // A pair whose bound is not below the best cannot replace it.
            if lower_bound(lo, hi) >= best {
                continue;
            }
            let e = error(lo, hi);
            if e < best {
                (best_lo, best_hi, best) = (lo, hi, e);
            }
        }
    }
    // Coordinate descent over the finer candidate lists. A scan's answer depends only on
    // the coordinate it holds fixed (the lists are never empty, so the fallback is never
    // used): a scan repeating the previous one's fixed coordinate is skipped, which is most
    // of the descent once it has converged (and all of it but one scan when a side is
    // empty, as for a ReLU output). Each scan is seeded with the error at the candidate
    // nearest the current best.
    let (fine_los, fine_his) = (
        spread(los, DESCENT_CANDIDATES),
        spread(his, DESCENT_CANDIDATES),
    );
    let (mut hi_scan, mut lo_scan): (LastScan, LastScan) = (None, None);
    for _ in 0..3 {
        best_hi = match hi_scan {
            Some((lo, hi)) if lo == best_lo.to_bits() => hi,
            _ => {
                let seed = error(best_lo, nearest(&fine_his, best_hi));
                let hi = pruned_argmin(
                    &fine_his,
                    |hi| error(best_lo, hi),
                    |hi| lower_bound(best_lo, hi),
                    seed,
                )
                .unwrap_or(best_hi);
                hi_scan = Some((best_lo.to_bits(), hi));
                hi
            }
        };
        best_lo = match lo_scan {
            Some((hi, lo)) if hi == best_hi.to_bits() => lo,
            _ => {
                let seed = error(nearest(&fine_los, best_lo), best_hi);
                let lo = pruned_argmin(
                    &fine_los,
                    |lo| error(lo, best_hi),
                    |lo| lower_bound(lo, best_hi),
                    seed,
                )
                .unwrap_or(best_lo);
                lo_scan = Some((best_hi.to_bits(), lo));
                lo
            }
        };
    }
    (best_lo, best_hi)
}

/// The candidate closest to `x` (`x` itself when there is none).
fn nearest(candidates: &[f64], x: f64) -> f64 {
    candidates
        .iter()
        .copied()
        .min_by(|a, b| (a - x).abs().total_cmp(&(b - x).abs()))
        .unwrap_or(x)
}

/// What `argmin(candidates, cost)` returns, evaluating `cost` only where it can matter.
/// `bound(c) <= cost(c)` always, and `seed` is the cost of one of the candidates, so at
/// least the minimum. Skipped are candidates with `bound(c) > seed` (their cost exceeds
/// the minimum) and with `bound(c) >=` the best cost so far (they cannot replace it). The
/// first candidate of least cost is never skipped: its bound is at most the minimum, which
/// is at most the seed, and strictly below every earlier cost. So it is found, and nothing
/// after it replaces it: the answer is argmin's.
fn pruned_argmin(
    candidates: &[f64],
    cost: impl Fn(f64) -> f64,
    bound: impl Fn(f64) -> f64,
    seed: f64,
) -> Option<f64> {
    let mut best: Option<(f64, f64)> = None;
    for &c in candidates {
        let b = bound(c);
        if b > seed || best.is_some_and(|(_, e)| b >= e) {
            continue;
        }
        let e = cost(c);
        if best.is_none_or(|(_, b)| e < b) {
            best = Some((c, e));
        }
    }
    best.map(|(c, _)| c)
}

/// TensorRT's entropy threshold on the |x| histogram `abs_counts` of bin width `width`.
///
/// Per candidate the work is that of the definition (the divergence needs a logarithm per
/// bin); what does not depend on the candidate, or can be had without a division per bin,
/// is taken out of the loop, all in integers, so that every divergence has the same bits.
fn kl_threshold(abs_counts: &[u64], width: f64, max_abs: f64, levels: usize) -> f64 {
    let end = abs_counts
        .iter()
        .rposition(|&n| n > 0)
        .map_or(0, |last| last + 1);
    if end <= levels {
        // Fewer bins than levels: nothing to gain from clipping.
        return max_abs;
    }
    // `outliers_from[i]`: the count beyond candidate `i` (the total fits in u64: the stats
    // checked it).
    let mut outliers_from = vec![0u64; end + 1];
    for b in (0..end).rev() {
        outliers_from[b] = outliers_from[b + 1] + abs_counts[b];
    }
    let mut best: Option<(usize, f64)> = None;
    let mut p = vec![0f64; end];
    let mut q = vec![0f64; end];
    let mut level_of = vec![0usize; end];
    let mut level_sum = vec![0f64; levels];
    let mut level_support = vec![0usize; levels];
    for i in levels..=end {
        for (b, slot) in p[..i].iter_mut().enumerate() {
            *slot = abs_counts[b] as f64;
        }
        p[i - 1] += outliers_from[i] as f64;
        // Merge bins [0, i) into levels, bin b to level floor(b·levels/i): kept as
        // b·levels = level·i + rem, 0 <= rem < i; levels <= i, so it steps by at most one.
        let (mut level, mut rem) = (0usize, 0usize);
        for slot in level_of[..i].iter_mut() {
            *slot = level;
            rem += levels;
            if rem >= i {
                rem -= i;
                level += 1;
            }
        }
        // Spread each level over its bins where P > 0.
        level_sum.fill(0.0);
        level_support.fill(0);
        for b in 0..i {
            level_sum[level_of[b]] += abs_counts[b] as f64;
            if p[b] > 0.0 {
                level_support[level_of[b]] += 1;
            }
        }
        for b in 0..i {
            let l = level_of[b];
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
#[path = "range_tests.rs"]
mod tests;
