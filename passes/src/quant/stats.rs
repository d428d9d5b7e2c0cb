//! Calibration statistics in bounded memory.
//!
//! A [`TensorStats`] keeps, for one tensor, the number of values seen, their exact minimum
//! and maximum, and a [`Histogram`] of the values themselves (signed, not of |x|: asymmetric
//! range methods need both tails; symmetric methods fold it, see [`Histogram::abs_counts`]).
//! The histogram has a fixed number of bins (4096 by default: 32 KiB per tensor whatever the
//! sample count), half below zero and half above, all of width `2^k`. `k` is the smallest
//! integer (not below [`MIN_WIDTH_LOG2`]) for which the histogram covers every value seen,
//! `bins/2 · 2^k > max |x|`. When a value outside that range arrives, `k` grows and adjacent
//! bins merge pairwise; because every grid of width `2^(k+1)` is a coarsening of the grid of
//! width `2^k` (bin `i` goes to bin `floor(i/2)`), the result is exactly the histogram that
//! observing all values at the final width gives. So observation order, batch boundaries and
//! merging never change the statistics (tested below).

use super::QuantError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bins of a new histogram: 2048 on each side of zero, as many as TensorRT's |x| histogram.
pub const DEFAULT_BINS: usize = 4096;
/// The narrowest bin: values below `2^-100 · bins/2` in magnitude all share bins near zero,
/// which no 8-bit scale can tell apart anyway.
pub const MIN_WIDTH_LOG2: i32 = -100;
/// The `format` field of every stats file.
pub const STATS_FORMAT: &str = "qcc-calibration-stats";
/// The stats file version this code writes and reads.
pub const STATS_VERSION: u32 = 1;

const MIN_BINS: usize = 64;
const MAX_BINS: usize = 65536;

/// A histogram of f32 values with power-of-two bin width, symmetric about zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[j]` counts values in `[(j - bins/2)·w, (j - bins/2 + 1)·w)`, `w = 2^width_log2`.
    counts: Vec<u64>,
    width_log2: i32,
}

impl Histogram {
    /// An empty histogram of `bins` bins (a power of two from 64 to 65536).
    pub fn new(bins: usize) -> Result<Histogram, QuantError> {
        if !(bins.is_power_of_two() && (MIN_BINS..=MAX_BINS).contains(&bins)) {
            return Err(QuantError::BadBins(bins));
        }
        Ok(Histogram {
            counts: vec![0; bins],
            width_log2: MIN_WIDTH_LOG2,
        })
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Counts of the signed bins, lowest first.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn width_log2(&self) -> i32 {
        self.width_log2
    }

    pub fn bin_width(&self) -> f64 {
        2f64.powi(self.width_log2)
    }

    /// The lower edge of signed bin `j`.
    pub fn lower_edge(&self, j: usize) -> f64 {
        (j as f64 - self.half() as f64) * self.bin_width()
    }

    /// Counts of |x|: `bins/2` bins, bin `a` covering `[a·w, (a+1)·w)` (a value `x < 0` in
    /// signed bin `i = floor(x/w)` has `|x|` in `(-(i+1)·w, -i·w]`, folded into bin `-i-1`).
    pub fn abs_counts(&self) -> Vec<u64> {
        let half = self.half();
        (0..half)
            .map(|a| self.counts[half + a] + self.counts[half - 1 - a])
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn half(&self) -> usize {
        self.counts.len() / 2
    }

    /// `bins/2 · w`: every value counted is strictly inside `(-half_range, half_range)`.
    fn half_range(&self, width_log2: i32) -> f64 {
        self.half() as f64 * 2f64.powi(width_log2)
    }

    /// Widens the bins until `max_abs` (finite) is strictly inside the histogram.
    fn cover(&mut self, max_abs: f64) {
        let mut k = self.width_log2;
        while self.half_range(k) <= max_abs {
            k += 1;
        }
        self.coarsen_to(k);
    }

    /// Re-bins at width `2^k` (`k >= width_log2`): signed bin `i` goes to `i >> (k - old)`.
    fn coarsen_to(&mut self, k: i32) {
        let steps = (k - self.width_log2) as u32;
        if steps == 0 {
            return;
        }
        let half = self.half() as i64;
        let mut merged = vec![0u64; self.counts.len()];
        for (j, &n) in self.counts.iter().enumerate() {
            if n != 0 {
                let i = (j as i64 - half) >> steps.min(63);
                merged[(i + half) as usize] += n;
            }
        }
        self.counts = merged;
        self.width_log2 = k;
    }

    /// Counts one finite value already inside the histogram's range.
    fn add(&mut self, x: f32, inverse_width: f64) {
        let j = signed_bin(x, inverse_width) + self.half() as i64;
        self.counts[j as usize] += 1;
    }

    /// Adds `other`'s counts, re-binning both to the wider of the two widths.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), QuantError> {
        if other.bins() != self.bins() {
            return Err(QuantError::BinsMismatch {
                left: self.bins(),
                right: other.bins(),
            });
        }
        let k = self.width_log2.max(other.width_log2);
        self.coarsen_to(k);
        let mut other = other.clone();
        other.coarsen_to(k);
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        Ok(())
    }
}

/// `floor(x / w)` for a finite `x` with `|x| < bins/2 · w`, `inverse_width = 1/w`: the
/// product is exact (an f32 times 2^-123..2^100, below 32768). Not `f64::floor`, a libm call
/// on baseline x86-64 (7.6% of a calibration run): truncation toward zero is exact, and above
/// `y` exactly when `y` is a negative non-integer, whose floor is one less (tested in range).
pub(super) fn signed_bin(x: f32, inverse_width: f64) -> i64 {
    let y = x as f64 * inverse_width;
    y as i64 - i64::from((y as i64) as f64 > y)
}

/// Calibration statistics of one tensor: count, exact min/max and a histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TensorStatsFile", into = "TensorStatsFile")]
pub struct TensorStats {
    count: u64,
    non_finite: u64,
    /// +inf / -inf while `count` is 0.
    min: f32,
    max: f32,
    histogram: Histogram,
}

impl Default for TensorStats {
    fn default() -> TensorStats {
        TensorStats::new()
    }
}

impl TensorStats {
    /// Empty statistics with [`DEFAULT_BINS`] bins.
    pub fn new() -> TensorStats {
        TensorStats {
            count: 0,
            non_finite: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            histogram: Histogram {
                counts: vec![0; DEFAULT_BINS],
                width_log2: MIN_WIDTH_LOG2,
            },
        }
    }

    /// Empty statistics with `bins` bins (a power of two from 64 to 65536).
    pub fn with_bins(bins: usize) -> Result<TensorStats, QuantError> {
        Ok(TensorStats {
            histogram: Histogram::new(bins)?,
            ..TensorStats::new()
        })
    }

    /// Accumulates a batch. NaN and ±inf are counted in [`TensorStats::non_finite`] and
    /// otherwise ignored (a calibration run should report them, not let them set the range).
    pub fn observe(&mut self, values: &[f32]) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut finite = 0u64;
        for &v in values {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
                finite += 1;
            }
        }
        self.non_finite += values.len() as u64 - finite;
        if finite == 0 {
            return;
        }
        // `+ 0.0` turns -0.0 into +0.0, so that min/max do not depend on the order of zeros.
        self.min = self.min.min(lo + 0.0);
        self.max = self.max.max(hi + 0.0);
        self.count += finite;
        self.histogram.cover((lo.abs() as f64).max(hi.abs() as f64));
        let inverse_width = 2f64.powi(-self.histogram.width_log2);
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.histogram.add(v, inverse_width);
        }
    }

    /// Adds another tensor's statistics: the same result as observing both value sets.
    pub fn merge(&mut self, other: &TensorStats) -> Result<(), QuantError> {
        self.histogram.merge(&other.histogram)?;
        self.count += other.count;
        self.non_finite += other.non_finite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// Finite values observed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// NaN and infinite values observed (and left out of everything else).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// The smallest value observed; `None` before any finite value.
    pub fn min(&self) -> Option<f32> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f32> {
        (self.count > 0).then_some(self.max)
    }

    /// `max(|min|, |max|)`, 0 before any value.
    pub fn max_abs(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }
}

/// The serialized form of [`TensorStats`]: see the module documentation of `quant`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorStatsFile {
    count: u64,
    #[serde(default)]
    non_finite: u64,
    min: Option<f32>,
    max: Option<f32>,
    histogram: HistogramFile,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramFile {
    bins: usize,
    bin_width_log2: i32,
    /// Bins before `first_bin` and after the last count are empty (the negative half of a
    /// ReLU output, the unused outer bins).
    first_bin: usize,
    counts: Vec<u64>,
}

impl From<TensorStats> for TensorStatsFile {
    fn from(stats: TensorStats) -> TensorStatsFile {
        let counts = &stats.histogram.counts;
        let first = counts.iter().position(|&n| n != 0).unwrap_or(0);
        let end = counts
            .iter()
            .rposition(|&n| n != 0)
            .map_or(first, |last| last + 1);
        TensorStatsFile {
            count: stats.count,
            non_finite: stats.non_finite,
            min: stats.min(),
            max: stats.max(),
            histogram: HistogramFile {
                bins: counts.len(),
                bin_width_log2: stats.histogram.width_log2,
                first_bin: first,
                counts: counts[first..end].to_vec(),
            },
        }
    }
}

impl TryFrom<TensorStatsFile> for TensorStats {
    type Error = QuantError;

    /// Accepts only what [`TensorStats::observe`] can produce, so that merging stays exact.
    fn try_from(file: TensorStatsFile) -> Result<TensorStats, QuantError> {
        let bad = |message: String| Err(QuantError::StatsFile(message));
        let h = file.histogram;
        let mut histogram = Histogram::new(h.bins)?;
        if h.first_bin
            .checked_add(h.counts.len())
            .is_none_or(|end| end > h.bins)
        {
            return bad(format!(
                "{} counts from bin {} do not fit in {} bins",
                h.counts.len(),
                h.first_bin,
                h.bins
            ));
        }
        histogram.counts[h.first_bin..h.first_bin + h.counts.len()].copy_from_slice(&h.counts);
        histogram.width_log2 = h.bin_width_log2;
        let total = histogram
            .counts
            .iter()
            .try_fold(0u64, |s, &n| s.checked_add(n));
        if total != Some(file.count) {
            return bad(format!(
                "histogram counts add up to {total:?}, not the count {}",
                file.count
            ));
        }
        let (min, max) = match (file.count, file.min, file.max) {
            (0, None, None) => (f32::INFINITY, f32::NEG_INFINITY),
            (n, Some(lo), Some(hi)) if n > 0 && lo.is_finite() && hi.is_finite() && lo <= hi => {
                (lo, hi)
            }
            _ => return bad("min and max must be finite, min <= max, null iff count is 0".into()),
        };
        let max_abs = if file.count == 0 {
            0.0
        } else {
            (min.abs() as f64).max(max.abs() as f64)
        };
        let k = h.bin_width_log2;
        let canonical = k >= MIN_WIDTH_LOG2
            && histogram.half_range(k) > max_abs
            && (k == MIN_WIDTH_LOG2 || histogram.half_range(k - 1) <= max_abs);
        if !canonical {
            return bad(format!(
                "bin width 2^{k} is not the narrowest covering max |x| = {max_abs}"
            ));
        }
        Ok(TensorStats {
            count: file.count,
            non_finite: file.non_finite,
            min,
            max,
            histogram,
        })
    }
}

/// Per-channel min and max of a weight along one axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ChannelRangesFile", into = "ChannelRangesFile")]
pub struct ChannelRanges {
    axis: usize,
    min: Vec<f32>,
    max: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRangesFile {
    axis: usize,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl ChannelRanges {
    /// Min and max of each slice along `axis` of the row-major tensor `data` of shape `dims`.
    /// A channel with no elements (another dimension is 0) gets the range [0, 0].
    pub fn from_weights(
        data: &[f32],
        dims: &[usize],
        axis: usize,
    ) -> Result<ChannelRanges, QuantError> {
        check_weight(data, dims, axis)?;
        let channels = dims[axis];
        let inner: usize = dims[axis + 1..].iter().product();
        let mut min = vec![f32::INFINITY; channels];
        let mut max = vec![f32::NEG_INFINITY; channels];
        for (i, &v) in data.iter().enumerate() {
            let c = (i / inner.max(1)) % channels.max(1);
            min[c] = min[c].min(v + 0.0);
            max[c] = max[c].max(v + 0.0);
        }
        for (lo, hi) in min.iter_mut().zip(max.iter_mut()) {
            if *lo > *hi {
                (*lo, *hi) = (0.0, 0.0);
            }
        }
        Ok(ChannelRanges { axis, min, max })
    }

    pub fn axis(&self) -> usize {
        self.axis
    }

    pub fn channels(&self) -> usize {
        self.min.len()
    }

    pub fn min(&self) -> &[f32] {
        &self.min
    }

    pub fn max(&self) -> &[f32] {
        &self.max
    }
}

/// Checks that `data` has the shape `dims`, that `axis` exists and that every value is finite.
pub(super) fn check_weight(data: &[f32], dims: &[usize], axis: usize) -> Result<(), QuantError> {
    if dims.iter().product::<usize>() != data.len() {
        return Err(QuantError::ShapeMismatch {
            dims: dims.to_vec(),
            len: data.len(),
        });
    }
    if axis >= dims.len() {
        return Err(QuantError::BadAxis {
            axis,
            rank: dims.len(),
        });
    }
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFiniteWeight {
            index,
            value: data[index],
        });
    }
    Ok(())
}

impl From<ChannelRanges> for ChannelRangesFile {
    fn from(r: ChannelRanges) -> ChannelRangesFile {
        ChannelRangesFile {
            axis: r.axis,
            min: r.min,
            max: r.max,
        }
    }
}

impl TryFrom<ChannelRangesFile> for ChannelRanges {
    type Error = QuantError;

    fn try_from(f: ChannelRangesFile) -> Result<ChannelRanges, QuantError> {
        let consistent = f.min.len() == f.max.len()
            && f.min
                .iter()
                .zip(&f.max)
                .all(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo <= hi);
        if !consistent {
            return Err(QuantError::StatsFile(
                "channel ranges need as many finite min as max values, min <= max".into(),
            ));
        }
        Ok(ChannelRanges {
            axis: f.axis,
            min: f.min,
            max: f.max,
        })
    }
}

/// Everything one calibration run records: see the module documentation of `quant` for the
/// JSON format.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CalibrationStats {
    /// File name of the calibrated model.
    pub model: String,
    /// Calibration samples observed.
    pub samples: u64,
    /// Whether the inputs were seeded random data rather than real samples.
    pub synthetic_inputs: bool,
    /// Activation statistics by tensor name.
    pub tensors: BTreeMap<String, TensorStats>,
    /// Per-channel weight ranges by tensor name.
    pub weights: BTreeMap<String, ChannelRanges>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalibrationStatsFile {
    format: String,
    version: u32,
    model: String,
    samples: u64,
    synthetic_inputs: bool,
    tensors: BTreeMap<String, TensorStats>,
    weights: BTreeMap<String, ChannelRanges>,
}

impl CalibrationStats {
    pub fn new(model: &str, synthetic_inputs: bool) -> CalibrationStats {
        CalibrationStats {
            model: model.to_string(),
            synthetic_inputs,
            ..CalibrationStats::default()
        }
    }

    /// Accumulates a batch of values of tensor `name` (created on first sight).
    pub fn observe(&mut self, name: &str, values: &[f32]) {
        self.tensors
            .entry(name.to_string())
            .or_default()
            .observe(values);
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorStats> {
        self.tensors.get(name)
    }

    /// Adds another run over the same model: samples add up, tensor statistics merge
    /// exactly, weight ranges must agree (the weights are the same).
    pub fn merge(&mut self, other: &CalibrationStats) -> Result<(), QuantError> {
        if other.model != self.model {
            return Err(QuantError::ModelMismatch {
                left: self.model.clone(),
                right: other.model.clone(),
            });
        }
        for (name, ranges) in &other.weights {
            match self.weights.get(name) {
                Some(mine) if mine != ranges => {
                    return Err(QuantError::Mismatch(format!(
                        "weight '{name}' has different ranges in the two statistics"
                    )))
                }
                Some(_) => {}
                None => {
                    self.weights.insert(name.clone(), ranges.clone());
                }
            }
        }
        for (name, stats) in &other.tensors {
            match self.tensors.get_mut(name) {
                Some(mine) => mine.merge(stats).map_err(|e| e.for_tensor(name))?,
                None => {
                    self.tensors.insert(name.clone(), stats.clone());
                }
            }
        }
        self.samples += other.samples;
        self.synthetic_inputs |= other.synthetic_inputs;
        Ok(())
    }

    /// The stats file text (pretty-printed JSON, tensors sorted by name).
    pub fn to_json(&self) -> Result<String, QuantError> {
        let file = CalibrationStatsFile {
            format: STATS_FORMAT.to_string(),
            version: STATS_VERSION,
            model: self.model.clone(),
            samples: self.samples,
            synthetic_inputs: self.synthetic_inputs,
            tensors: self.tensors.clone(),
            weights: self.weights.clone(),
        };
        serde_json::to_string_pretty(&file).map_err(|e| QuantError::StatsFile(e.to_string()))
    }

    /// Reads a stats file, checking the format tag and version before the contents.
    pub fn from_json(text: &str) -> Result<CalibrationStats, QuantError> {
        let err = |e: serde_json::Error| QuantError::StatsFile(e.to_string());
        let value: serde_json::Value = serde_json::from_str(text).map_err(err)?;
        let format = value.get("format").and_then(|f| f.as_str());
        if format != Some(STATS_FORMAT) {
            return Err(QuantError::StatsFile(format!(
                "not a qcc statistics file (format is {format:?}, expected \"{STATS_FORMAT}\")"
            )));
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(STATS_VERSION as u64) {
            return Err(QuantError::StatsFile(format!(
                "version {version:?} is not supported (this qcc reads version {STATS_VERSION})"
            )));
        }
        let file: CalibrationStatsFile = serde_json::from_value(value).map_err(err)?;
        Ok(CalibrationStats {
            model: file.model,
            samples: file.samples,
            synthetic_inputs: file.synthetic_inputs,
            tensors: file.tensors,
            weights: file.weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn observed(batches: &[&[f32]]) -> TensorStats {
        let mut s = TensorStats::with_bins(64).unwrap();
        for b in batches {
            s.observe(b);
        }
        s
    }

    #[test]
    fn histogram_width_is_the_narrowest_power_of_two_covering_the_values() {
        let s = observed(&[&[0.5, -3.0, 2.0]]);
        // 32 bins per side: 32 · 2^-3 = 4 > 3, 32 · 2^-4 = 2 <= 3.
        assert_eq!(s.histogram().width_log2(), -3);
        assert_eq!((s.min(), s.max(), s.count()), (Some(-3.0), Some(2.0), 3));
        // -3.0 / 0.125 = -24 -> bin 8; 0.5 -> bin 36; 2.0 -> bin 48.
        let nonzero: Vec<usize> = (0..64).filter(|&j| s.histogram().counts()[j] > 0).collect();
        assert_eq!(nonzero, vec![8, 36, 48]);
        // A value exactly at the edge 4.0 is outside [-4, 4): the width must double.
        let s = observed(&[&[4.0]]);
        assert_eq!(s.histogram().width_log2(), -2);
    }

    #[test]
    fn abs_counts_fold_negative_bins_onto_positive_ones() {
        // 64 bins of width 1/8: -0.3 is in signed bin -3 = [-0.375, -0.25), |x| bin 2.
        let s = observed(&[&[-0.3, 0.3, -2.9, 2.9, 0.0]]);
        let abs = s.histogram().abs_counts();
        let w = s.histogram().bin_width();
        assert_eq!(abs.iter().sum::<u64>(), 5);
        assert_eq!(abs[(0.3 / w) as usize], 2);
        assert_eq!(abs[(2.9 / w) as usize], 2);
        assert_eq!(abs[0], 1);
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let s = observed(&[&[f32::NAN, 1.0, f32::INFINITY], &[f32::NAN]]);
        assert_eq!((s.count(), s.non_finite()), (1, 3));
        assert_eq!(s.max(), Some(1.0));
        let empty = observed(&[&[f32::NAN]]);
        assert_eq!((empty.min(), empty.max_abs()), (None, 0.0));
    }

    fn values() -> impl Strategy<Value = Vec<f32>> {
        let magnitude = prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32), Just(1e30f32)];
        (magnitude, prop::collection::vec(-1.0f32..1.0, 0..40))
            .prop_map(|(m, v)| v.into_iter().map(|x| x * m).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merging_equals_observing_everything_at_once(
            batches in prop::collection::vec(values(), 1..6),
            split in 0usize..6,
        ) {
            let split = split.min(batches.len());
            let all: Vec<f32> = batches.concat();
            let at_once = observed(&[&all]);
            let mut left = observed(&batches[..split].iter().map(|b| b.as_slice()).collect::<Vec<_>>());
            let right = observed(&batches[split..].iter().map(|b| b.as_slice()).collect::<Vec<_>>());
            left.merge(&right).unwrap();
            prop_assert_eq!(&left, &at_once);
            // Batch boundaries do not matter either.
            let batched = observed(&batches.iter().map(|b| b.as_slice()).collect::<Vec<_>>());
            prop_assert_eq!(&batched, &at_once);
            prop_assert_eq!(at_once.histogram().total(), all.len() as u64);
        }

        #[test]
        fn json_round_trip_is_exact(batches in prop::collection::vec(values(), 0..4)) {
            let mut stats = CalibrationStats::new("m.onnx", true);
            for (i, b) in batches.iter().enumerate() {
                stats.observe(&format!("t{}", i % 2), b);
            }
            stats.samples = batches.len() as u64;
            let text = stats.to_json().unwrap();
            prop_assert_eq!(CalibrationStats::from_json(&text).unwrap(), stats);
        }
    }

    #[test]
    fn calibration_stats_merge_adds_samples_and_checks_the_model() {
        let mut a = CalibrationStats::new("m.onnx", false);
        a.observe("x", &[1.0, 2.0]);
        a.samples = 1;
        let mut b = CalibrationStats::new("m.onnx", true);
        b.observe("x", &[-5.0]);
        b.observe("y", &[3.0]);
        b.samples = 2;
        a.merge(&b).unwrap();
        assert_eq!((a.samples, a.synthetic_inputs), (3, true));
        let x = a.tensor("x").unwrap();
        assert_eq!((x.count(), x.min(), x.max()), (3, Some(-5.0), Some(2.0)));
        assert_eq!(a.tensor("y").map(|y| y.count()), Some(1));
        let other = CalibrationStats::new("n.onnx", false);
        assert!(matches!(
            a.merge(&other),
            Err(QuantError::ModelMismatch { .. })
        ));
    }

    #[test]
    fn stats_file_has_the_documented_layout() {
        let mut stats = CalibrationStats::new("resnet.onnx", false);
        stats.observe("relu", &[0.0, 1.5, 3.0]);
        stats.weights.insert(
            "w".into(),
            ChannelRanges::from_weights(&[1.0, -2.0, 3.0, 4.0], &[2, 2], 0).unwrap(),
        );
        let value: serde_json::Value = serde_json::from_str(&stats.to_json().unwrap()).unwrap();
        assert_eq!(value["format"], "qcc-calibration-stats");
        assert_eq!(value["version"], 1);
        assert_eq!(value["synthetic_inputs"], false);
        let relu = &value["tensors"]["relu"];
        assert_eq!(relu["count"], 3);
        assert_eq!(relu["max"], 3.0);
        let h = &relu["histogram"];
        assert_eq!(h["bins"], 4096);
        // 2048 · 2^-9 = 4 > 3: the zero bin is 2048, the trailing empty bins are dropped.
        assert_eq!(h["bin_width_log2"], -9);
        assert_eq!(h["first_bin"], 2048);
        assert_eq!(h["counts"].as_array().map(|c| c.len()), Some(3 * 512 + 1));
        assert_eq!(value["weights"]["w"]["min"], serde_json::json!([-2.0, 3.0]));
    }

    #[test]
    fn stats_files_that_observe_cannot_produce_are_rejected() {
        let mut stats = CalibrationStats::new("m.onnx", false);
        stats.observe("x", &[1.0, -1.0]);
        let good = stats.to_json().unwrap();
        let cases = [
            ("\"version\": 1", "\"version\": 2", "version"),
            ("qcc-calibration-stats", "something-else", "format"),
            ("\"count\": 2", "\"count\": 3", "add up"),
            (
                "\"bin_width_log2\": -10",
                "\"bin_width_log2\": -9",
                "narrowest",
            ),
            ("\"bins\": 4096", "\"bins\": 4000", "power of two"),
            ("\"samples\"", "\"extra\": 1, \"samples\"", "unknown field"),
        ];
        for (from, to, expected) in cases {
            assert!(good.contains(from), "{from} not in {good}");
            let bad = good.replacen(from, to, 1);
            let message = CalibrationStats::from_json(&bad).unwrap_err().to_string();
            assert!(message.contains(expected), "{to}: {message}");
        }
    }

    #[test]
    fn channel_ranges_per_axis() {
        // Shape [2, 3]: axis 0 -> rows, axis 1 -> columns.
        let data = [1.0, -2.0, 3.0, -4.0, 5.0, 0.5];
        let rows = ChannelRanges::from_weights(&data, &[2, 3], 0).unwrap();
        assert_eq!(
            (rows.min(), rows.max()),
            (&[-2.0, -4.0][..], &[3.0, 5.0][..])
        );
        let cols = ChannelRanges::from_weights(&data, &[2, 3], 1).unwrap();
        assert_eq!(cols.min(), &[-4.0, -2.0, 0.5]);
        assert_eq!(cols.max(), &[1.0, 5.0, 3.0]);
        assert!(matches!(
            ChannelRanges::from_weights(&data, &[2, 2], 0),
            Err(QuantError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            ChannelRanges::from_weights(&data, &[2, 3], 2),
            Err(QuantError::BadAxis { axis: 2, rank: 2 })
        ));
        assert!(matches!(
            ChannelRanges::from_weights(&[f32::NAN], &[1], 0),
            Err(QuantError::NonFiniteWeight { index: 0, .. })
        ));
        let empty = ChannelRanges::from_weights(&[], &[2, 0], 0).unwrap();
        assert_eq!(empty.max(), &[0.0, 0.0]);
    }
}
