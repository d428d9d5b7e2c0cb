//! Helpers the kernel families' tests share.

use qcc_ir::Tensor;

use crate::target::Target;

/// This machine, the target every kernel test runs on.
pub fn native() -> Target {
    Target::parse("native-fp32").expect("the test host is a valid target")
}

/// Deterministic xorshift values in [-1, 1), so failures reproduce.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, bound: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * bound as f32) as usize % bound
    }
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// The elements of an f32 tensor in order.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 tensor").iter().copied().collect()
}

/// Bitwise equality, any NaN equal to any NaN (payloads are not specified).
pub fn assert_identical(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(same, "{what}: element {i}: kernel {g:e}, interpreter {w:e}");
    }
}
