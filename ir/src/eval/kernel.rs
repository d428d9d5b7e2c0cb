//! The one matrix-product kernel behind Conv, Gemm, MatMul and their integer forms.
//!
//! `c += a * b` on row-major slices. The loop nest keeps a 4x8 tile of `c` in registers while
//! walking `k`, over blocks of `b` small enough to stay in the L2 cache, and splits the rows
//! of `c` between threads for large products. Float products accumulate in f32 in `k` order
//! within a block; integer products wrap on i32 overflow as the hardware kernels do (their
//! inputs are 8-bit, so real models stay far from overflow).

use std::ops::Range;

/// Element types the kernel multiplies: f32 and i32 (integer inputs are widened first).
pub(crate) trait MulAcc: Copy + Default + Send + Sync {
    fn mul_acc(self, a: Self, b: Self) -> Self;
}

impl MulAcc for f32 {
    #[inline(always)]
    fn mul_acc(self, a: f32, b: f32) -> f32 {
        self + a * b
    }
}

impl MulAcc for i32 {
    #[inline(always)]
    fn mul_acc(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

const MR: usize = 4;
const NR: usize = 8;
/// Columns of `b` per block: a block row is 1 KiB of f32.
const NB: usize = 256;
/// Rows of `b` per block: with `NB`, a 256 KiB block of f32.
const KB: usize = 256;
/// Products below this many multiply-adds are not worth a thread.
const PARALLEL_MIN_WORK: usize = 1 << 22;

/// The number of threads a large product may use (asked once: the query reads cgroup files).
fn thread_count() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// `c[m x n] += a[m x k] * b[k x n]`, all row-major and densely packed.
pub(crate) fn gemm<T: MulAcc>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T]) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = thread_count();
    let work = m.saturating_mul(n).saturating_mul(k);
    if threads < 2 || work < PARALLEL_MIN_WORK || m < 2 * MR {
        gemm_rows(0..m, n, k, a, b, c);
        return;
    }
    // Split rows in multiples of MR so every thread but the last runs full register tiles.
    let per_thread = m.div_ceil(threads).div_ceil(MR) * MR;
    std::thread::scope(|s| {
        for (i, chunk) in c[..m * n].chunks_mut(per_thread * n).enumerate() {
            let start = i * per_thread;
            let rows = start..start + chunk.len() / n;
            s.spawn(move || gemm_rows(rows.clone(), n, k, &a[rows.start * k..], b, chunk));
        }
    });
}

/// Rows `rows` of the product; `a` starts at row `rows.start`, `c` holds exactly these rows.
fn gemm_rows<T: MulAcc>(rows: Range<usize>, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T]) {
    let m = rows.len();
    for j0 in (0..n).step_by(NB) {
        let jn = NB.min(n - j0);
        for k0 in (0..k).step_by(KB) {
            let kn = KB.min(k - k0);
            let mut i = 0;
            while i + MR <= m {
                tile_rows::<T, MR>(i, j0, jn, k0, kn, n, k, a, b, c);
                i += MR;
            }
            while i < m {
                tile_rows::<T, 1>(i, j0, jn, k0, kn, n, k, a, b, c);
                i += 1;
            }
        }
    }
}

/// Rows `i..i+R` of `c`, columns `j0..j0+jn`, accumulating over `k0..k0+kn`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_rows<T: MulAcc, const R: usize>(
    i: usize,
    j0: usize,
    jn: usize,
    k0: usize,
    kn: usize,
    n: usize,
    k: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
) {
    let mut j = 0;
    while j + NR <= jn {
        let mut acc = [[T::default(); NR]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[(i + r) * n + j0 + j..][..NR]);
        }
        for kk in k0..k0 + kn {
            let bv = &b[kk * n + j0 + j..][..NR];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = a[(i + r) * k + kk];
                for (x, &bj) in row.iter_mut().zip(bv) {
                    *x = x.mul_acc(av, bj);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            c[(i + r) * n + j0 + j..][..NR].copy_from_slice(row);
        }
        j += NR;
    }
    // Leftover columns, one at a time.
    for jj in j..jn {
        for r in 0..R {
            let mut x = c[(i + r) * n + j0 + jj];
            for kk in k0..k0 + kn {
                x = x.mul_acc(a[(i + r) * k + kk], b[kk * n + j0 + jj]);
            }
            c[(i + r) * n + j0 + jj] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[i32], b: &[i32]) -> Vec<i32> {
        let mut c = vec![0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn blocked_product_matches_the_definition_on_ragged_sizes() {
        // Sizes that exercise partial register tiles, partial blocks and the threaded split.
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 9, 3),
            (7, 300, 260),
            (70, 17, 513),
            (130, 270, 130),
        ] {
            let a: Vec<i32> = (0..m * k).map(|v| (v as i32 * 7) % 13 - 6).collect();
            let b: Vec<i32> = (0..k * n).map(|v| (v as i32 * 5) % 11 - 5).collect();
            let mut c = vec![0; m * n];
            gemm(m, n, k, &a, &b, &mut c);
            assert_eq!(c, naive(m, n, k, &a, &b), "{m}x{n}x{k}");
            let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let bf: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            let mut cf = vec![1.0f32; m * n];
            gemm(m, n, k, &af, &bf, &mut cf);
            assert!(
                cf.iter().zip(&c).all(|(x, &y)| *x == y as f32 + 1.0),
                "{m}x{n}x{k} f32"
            );
        }
    }
}
