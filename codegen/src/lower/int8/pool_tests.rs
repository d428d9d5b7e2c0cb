//! The 8-bit pooling kernels, JIT-compiled, bit for bit: u8 MaxPool against the interpreter's
//! MaxPool on a u8 tensor over random geometries (kernel, stride, dilation, explicit and
//! SAME padding, ceil mode, 1-D and 2-D, widths around the 16-byte vector steps); the global
//! average pool against the interpreter's `Op::QuantizedGlobalAveragePool` and the op's doc
//! formula (which also covers hand-made multipliers).

use qcc_ir::eval::eval_op;
use qcc_ir::op::pool_multiplier;
use qcc_ir::quant::QParams;
use qcc_ir::requant::FixedPoint;
use qcc_ir::{DType, Op, Padding, PoolAttrs, Tensor, TensorType};

use super::super::tests::{vnni, Bytes};
use super::{lower_qglobal_avgpool, lower_qmaxpool};
use crate::model::run_node_bytes;

fn u8_tensor(dims: &[usize], values: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(DType::U8, dims.to_vec()), values).expect("u8 bytes")
}

/// Values mostly in a narrow band (so padding, which must never win, would show if it did),
/// with the extremes.
fn plane_values(rng: &mut Bytes, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| match rng.next() % 8 {
            0 => 0,
            1 => 255,
            _ => 1 + (rng.next() % 40) as u8,
        })
        .collect()
}

fn random_pool(rng: &mut Bytes, spatial: usize) -> PoolAttrs {
    let pick = |rng: &mut Bytes, n: u64| (rng.next() % n) as usize;
    let kernel: Vec<usize> = (0..spatial).map(|_| 1 + pick(rng, 4)).collect();
    let strides: Vec<usize> = (0..spatial).map(|_| 1 + pick(rng, 3)).collect();
    let dilations: Vec<usize> = (0..spatial)
        .map(|_| if rng.next().is_multiple_of(4) { 2 } else { 1 })
        .collect();
    let padding = match rng.next() % 6 {
        0 => Padding::SameUpper,
        1 => Padding::SameLower,
        _ => {
            let begins: Vec<usize> = kernel.iter().map(|&k| pick(rng, k as u64)).collect();
            let ends: Vec<usize> = kernel.iter().map(|&k| pick(rng, k as u64)).collect();
            Padding::Explicit([begins, ends].concat())
        }
    };
    PoolAttrs {
        kernel,
        strides,
        dilations,
        padding,
        ceil_mode: rng.next().is_multiple_of(3),
    }
}

fn check_maxpool(attrs: &PoolAttrs, dims: &[usize], x: &[u8], what: &str) {
    let target = vnni();
    let want = match eval_op(&Op::MaxPool(attrs.clone()), &[&u8_tensor(dims, x)]) {
        Ok(mut outputs) => outputs.remove(0),
        // A geometry the op rejects (window wider than the padded input): so must we.
        Err(_) => {
            assert!(
                lower_qmaxpool(target.arch(), attrs, dims).is_err(),
                "{what}: lowered a geometry the interpreter rejects"
            );
            return;
        }
    };
    let lowering = lower_qmaxpool(target.arch(), attrs, dims).expect("lowers");
    let want = want.to_le_bytes();
    let got = run_node_bytes(&target, &lowering, &[x], &[want.len()]).expect("runs");
    assert_eq!(got[0], want, "{what}: {attrs:?} on {dims:?}");
}

#[test]
fn maxpool_matches_the_interpreter_on_random_geometries() {
    let mut rng = Bytes(0x1405_7b7e_f767_814f);
    for case in 0..64 {
        let spatial = if case % 5 == 4 { 1 } else { 2 };
        let attrs = random_pool(&mut rng, spatial);
        let mut dims = vec![1 + (rng.next() % 2) as usize, 1 + (rng.next() % 3) as usize];
        for _ in 0..spatial {
            dims.push(1 + (rng.next() % 40) as usize);
        }
        let x = plane_values(&mut rng, dims.iter().product());
        check_maxpool(&attrs, &dims, &x, &format!("case {case}"));
    }
}

#[test]
fn maxpool_common_cnn_layers() {
    let mut rng = Bytes(0x6a09_e667_f3bc_c908);
    let layer = |k: usize, s: usize, p: usize, ceil_mode: bool| PoolAttrs {
        kernel: vec![k, k],
        strides: vec![s, s],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![p; 4]),
        ceil_mode,
    };
    // ResNet's stem pool, a 2x2/2 pool, SqueezeNet's ceil-mode 3x3/2, a 3x3/1 "same" pool,
    // on widths with vector steps and tails.
    let cases = [
        (layer(3, 2, 1, false), vec![1, 3, 56, 56]),
        (layer(2, 2, 0, false), vec![2, 2, 33, 47]),
        (layer(3, 2, 0, true), vec![1, 2, 55, 55]),
        (layer(3, 1, 1, false), vec![1, 2, 17, 35]),
        (layer(5, 3, 2, true), vec![1, 1, 64, 70]),
    ];
    for (attrs, dims) in cases {
        let x = plane_values(&mut rng, dims.iter().product());
        check_maxpool(&attrs, &dims, &x, "layer");
        // All 255: the maximum must survive every path; all 0: padding must not show.
        for fill in [0u8, 255] {
            let x = vec![fill; dims.iter().product()];
            check_maxpool(&attrs, &dims, &x, &format!("filled with {fill}"));
        }
    }
}

#[test]
fn maxpool_rejects_what_it_cannot_lower() {
    let arch = vnni().arch();
    let attrs = PoolAttrs {
        kernel: vec![2, 2, 2],
        strides: vec![1, 1, 1],
        dilations: vec![1, 1, 1],
        padding: Padding::Explicit(vec![0; 6]),
        ceil_mode: false,
    };
    assert!(lower_qmaxpool(arch, &attrs, &[1, 1, 4, 4, 4]).is_err());
    let wide = PoolAttrs {
        kernel: vec![5, 5],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![0; 4]),
        ceil_mode: false,
    };
    assert!(lower_qmaxpool(arch, &wide, &[1, 1, 4, 4]).is_err());
}

/// The op's doc formula for one plane.
fn reference_gap(plane: &[u8], zx: i32, zy: i32, m: FixedPoint) -> u8 {
    let sum: i32 = plane.iter().map(|&v| i32::from(v) - zx).sum();
    (m.apply(sum) + i64::from(zy)).clamp(0, 255) as u8
}

#[test]
fn global_avgpool_matches_the_formula_and_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0xbb67_ae85_84ca_a73b);
    for case in 0..40 {
        let mut dims = vec![1 + (rng.next() % 2) as usize, 1 + (rng.next() % 5) as usize];
        match case % 4 {
            0 => dims.push(1 + (rng.next() % 40) as usize),
            3 if case > 30 => dims.extend([56, 56]),
            _ => dims.extend([
                1 + (rng.next() % 12) as usize,
                1 + (rng.next() % 12) as usize,
            ]),
        }
        let zx = [0, 255, (rng.next() % 256) as i32][case % 3];
        let zy = [(rng.next() % 256) as i32, 0, 255][case % 3];
        let unit = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
        let sx = (0.01 + unit) * 0.1;
        let sy = match case % 5 {
            // Saturating: the output scale far finer than the input's.
            0 => sx * 0.01,
            _ => sx * (0.25 + unit),
        };
        let qx = QParams::per_tensor(DType::U8, sx, zx).expect("x");
        let qy = QParams::per_tensor(DType::U8, sy, zy).expect("y");
        let size: usize = dims[2..].iter().product();
        let m = pool_multiplier(&qx, &qy, size).expect("multiplier");
        let planes = dims[0] * dims[1];
        let x: Vec<u8> = (0..planes * size).map(|_| rng.u8()).collect();
        let lowering = lower_qglobal_avgpool(target.arch(), &dims, zx, zy, m).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&x], &[planes]).expect("runs");
        let want: Vec<u8> = x
            .chunks(size)
            .map(|plane| reference_gap(plane, zx, zy, m))
            .collect();
        assert_eq!(
            got[0], want,
            "case {case}: {dims:?}, zx {zx}, zy {zy}, {m:?}"
        );
        let op = Op::QuantizedGlobalAveragePool { x: qx, y: qy };
        let interpreted = eval_op(&op, &[&u8_tensor(&dims, &x)])
            .expect("interpreter")
            .remove(0)
            .to_le_bytes();
        assert_eq!(got[0], interpreted, "case {case}: interpreter");
    }
}

#[test]
fn global_avgpool_extreme_planes() {
    let target = vnni();
    // All 0 and all 255 planes with zero points at both ends and a multiplier near 1/size.
    let dims = [1, 4, 7, 9];
    let size = 63;
    let x: Vec<u8> = [
        vec![0u8; size],
        vec![255; size],
        vec![0; size],
        vec![255; size],
    ]
    .concat();
    for (zx, zy) in [(0, 0), (255, 255), (0, 255), (255, 0), (128, 128)] {
        for real in [1.0 / size as f64, 0.9 / size as f64, 3.0 / size as f64] {
            let m = FixedPoint::from_real(real).expect("in range");
            let lowering = lower_qglobal_avgpool(target.arch(), &dims, zx, zy, m).expect("lowers");
            let got = run_node_bytes(&target, &lowering, &[&x], &[4]).expect("runs");
            let want: Vec<u8> = x
                .chunks(size)
                .map(|plane| reference_gap(plane, zx, zy, m))
                .collect();
            assert_eq!(got[0], want, "zx {zx}, zy {zy}, {m:?}");
        }
    }
    let m = FixedPoint::from_real(0.5).expect("in range");
    assert!(lower_qglobal_avgpool(target.arch(), &[1, 1, 4], 256, 0, m).is_err());
    assert!(lower_qglobal_avgpool(target.arch(), &[1, 1], 0, 0, m).is_err());
}
