//! Weight arithmetic for the folding rules, on flat row-major f32 data.
//!
//! Per-channel factors are computed in f64 and rounded once, so a folded weight differs from
//! the unfolded computation by about one rounding, far inside the 1e-5 tolerance.

use qcc_ir::Tensor;

/// A row-major f32 tensor as the rules handle it.
#[derive(Clone, Debug, PartialEq)]
pub struct Flat {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

impl Flat {
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Flat {
        Flat { dims, data }
    }
    pub fn from_pair((dims, data): (Vec<usize>, Vec<f32>)) -> Flat {
        Flat { dims, data }
    }
    /// The values of an f32 tensor (empty for another type, which the rules exclude).
    pub fn of(t: &Tensor) -> Flat {
        let data = match t.as_f32() {
            Ok(a) => match a.as_slice() {
                Some(contiguous) => contiguous.to_vec(),
                None => a.iter().copied().collect(),
            },
            Err(_) => Vec::new(),
        };
        Flat::new(t.dims().to_vec(), data)
    }
    pub fn into_tensor(self) -> Tensor {
        Tensor::from_f32(&self.dims, self.data)
    }
}

/// Inference batch norm as `x * s + t` per channel: `s = scale / sqrt(var + eps)`,
/// `t = bias - mean * s`. `None` when a variance makes the scale non-finite.
pub fn bn_scale_shift(
    eps: f32,
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
) -> Option<(Vec<f32>, Vec<f32>)> {
    let mut s = Vec::with_capacity(scale.len());
    let mut t = Vec::with_capacity(scale.len());
    for i in 0..scale.len() {
        let si = scale[i] as f64 / (var[i] as f64 + eps as f64).sqrt();
        let ti = bias[i] as f64 - mean[i] as f64 * si;
        if !si.is_finite() || !ti.is_finite() {
            return None;
        }
        s.push(si as f32);
        t.push(ti as f32);
    }
    Some((s, t))
}

/// Multiplies each slice along axis 0 (an output channel of a conv weight) by `s[row]`.
pub fn scale_rows(mut w: Flat, s: &[f32]) -> Flat {
    let rows = w.dims.first().copied().unwrap_or(1).max(1);
    let len = (w.data.len() / rows).max(1);
    for (row, &k) in w.data.chunks_mut(len).zip(s) {
        row.iter_mut().for_each(|v| *v *= k);
    }
    w
}

/// Multiplies column `j` of a 2-D matrix by `s[j]`.
pub fn scale_cols(mut w: Flat, s: &[f32]) -> Flat {
    let cols = w.dims.get(1).copied().unwrap_or(1).max(1);
    for row in w.data.chunks_mut(cols) {
        row.iter_mut().zip(s).for_each(|(v, &k)| *v *= k);
    }
    w
}

/// `a[i] * s[i] + t[i]`, computed in f64.
pub fn affine(a: &[f32], s: &[f32], t: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(s)
        .zip(t)
        .map(|((&a, &s), &t)| (a as f64 * s as f64 + t as f64) as f32)
        .collect()
}

/// The input channel each weight element of a grouped conv reads: weight dims
/// `[M, C/group, k...]`, output channel `m` in group `m / (M / group)`.
fn input_channel(dims: &[usize], group: usize, index: usize) -> usize {
    let m_total = dims[0];
    let cg = dims[1];
    let per_m: usize = dims[1..].iter().product();
    let m = index / per_m.max(1);
    let cl = (index % per_m.max(1)) / dims[2..].iter().product::<usize>().max(1);
    let g = m / (m_total / group).max(1);
    g * cg + cl
}

/// The weight of `conv(x * s)` (s per input channel) as a weight of `conv(x)`.
pub fn scale_conv_inputs(mut w: Flat, group: usize, s: &[f32]) -> Option<Flat> {
    if w.dims.len() < 2 || s.len() != w.dims[1] * group {
        return None;
    }
    let dims = w.dims.clone();
    for (i, v) in w.data.iter_mut().enumerate() {
        *v *= s[input_channel(&dims, group, i)];
    }
    Some(w)
}

/// What `conv(x + t)` (t per input channel, no padding) adds to each output channel's bias:
/// the sum of the output channel's weights times the shifts they read.
pub fn conv_shift_bias(w: &Flat, group: usize, t: &[f32]) -> Option<Vec<f64>> {
    if w.dims.len() < 2 || t.len() != w.dims[1] * group {
        return None;
    }
    let m = w.dims[0];
    let per_m = w.data.len() / m.max(1);
    let mut extra = vec![0.0f64; m];
    for (i, &v) in w.data.iter().enumerate() {
        extra[i / per_m.max(1)] += v as f64 * t[input_channel(&w.dims, group, i)] as f64;
    }
    Some(extra)
}

/// A Gemm's `beta * C` as one value per output column, when C is per-column (or absent, which
/// is zero). `None` for a C that varies along rows.
pub fn gemm_bias_per_column(c: Option<&Flat>, beta: f32, n: usize) -> Option<Vec<f32>> {
    let Some(c) = c else {
        return Some(vec![0.0; n]);
    };
    let values: Vec<f32> = match c.dims.as_slice() {
        [] | [1] | [1, 1] => vec![c.data[0]; n],
        [d] | [1, d] if *d == n => c.data.clone(),
        _ => return None,
    };
    Some(values.iter().map(|&v| v * beta).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_input_channels_follow_the_group_layout() {
        // 4 output channels, 2 groups of 2 input channels, 1x1 kernel.
        let dims = [4, 2, 1, 1];
        let seen: Vec<usize> = (0..8).map(|i| input_channel(&dims, 2, i)).collect();
        assert_eq!(seen, vec![0, 1, 0, 1, 2, 3, 2, 3]);
    }

    #[test]
    fn bn_scale_shift_matches_the_formula() {
        let (s, t) = bn_scale_shift(0.0, &[2.0], &[1.0], &[3.0], &[4.0]).unwrap();
        assert_eq!(s, vec![1.0]);
        assert_eq!(t, vec![-2.0]);
        assert!(bn_scale_shift(0.0, &[1.0], &[0.0], &[0.0], &[0.0]).is_none());
    }

    #[test]
    fn gemm_bias_rejects_a_row_varying_c() {
        let c = Flat::new(vec![2, 3], vec![0.0; 6]);
        assert!(gemm_bias_per_column(Some(&c), 1.0, 3).is_none());
        let c = Flat::new(vec![3], vec![1.0, 2.0, 3.0]);
        assert_eq!(
            gemm_bias_per_column(Some(&c), 2.0, 3),
            Some(vec![2.0, 4.0, 6.0])
        );
    }
}
