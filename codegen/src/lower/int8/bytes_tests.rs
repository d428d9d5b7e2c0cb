//! Byte copies, Concat and Transpose of u8 tensors, JIT-compiled, against the interpreter's
//! Concat and Transpose on u8 tensors (byte lengths around the 16-byte vector steps).

use qcc_ir::eval::eval_op;
use qcc_ir::{DType, Op, Tensor, TensorType};

use super::super::tests::{vnni, Bytes};
use super::{lower_byte_concat, lower_byte_copy, lower_byte_transpose};
use crate::model::run_node_bytes;

fn u8_tensor(dims: &[usize], values: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(DType::U8, dims.to_vec()), values).expect("u8 bytes")
}

fn random_bytes(rng: &mut Bytes, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.u8()).collect()
}

#[test]
fn byte_copy_copies_every_length() {
    let target = vnni();
    let mut rng = Bytes(0x3c6e_f372_fe94_f82b);
    for bytes in [0, 1, 3, 15, 16, 17, 31, 33, 64, 100, 257] {
        let x = random_bytes(&mut rng, bytes);
        let lowering = lower_byte_copy(target.arch(), bytes).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&x], &[bytes]).expect("runs");
        assert_eq!(got[0], x, "{bytes} bytes");
    }
}

#[test]
fn byte_concat_matches_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0xa54f_f53a_5f1d_36f1);
    for case in 0..32 {
        let rank = 1 + (rng.next() % 4) as usize;
        let axis = (rng.next() % rank as u64) as usize;
        let base: Vec<usize> = (0..rank).map(|_| 1 + (rng.next() % 6) as usize).collect();
        let inputs = 1 + (rng.next() % 3) as usize;
        let input_dims: Vec<Vec<usize>> = (0..inputs)
            .map(|_| {
                let mut dims = base.clone();
                dims[axis] = (rng.next() % 20) as usize;
                dims
            })
            .collect();
        let values: Vec<Vec<u8>> = input_dims
            .iter()
            .map(|d| random_bytes(&mut rng, d.iter().product()))
            .collect();
        let tensors: Vec<Tensor> = input_dims
            .iter()
            .zip(&values)
            .map(|(d, v)| u8_tensor(d, v))
            .collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let want = eval_op(&Op::Concat { axis }, &refs)
            .expect("interpreter")
            .remove(0)
            .to_le_bytes();
        let copy = vec![true; inputs];
        let lowering = lower_byte_concat(target.arch(), axis, &input_dims, &copy).expect("lowers");
        let value_refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let got = run_node_bytes(&target, &lowering, &value_refs, &[want.len()]).expect("runs");
        assert_eq!(got[0], want, "case {case}: {input_dims:?} along {axis}");
    }
}

#[test]
fn byte_concat_skips_inputs_written_in_place() {
    let target = vnni();
    let dims = vec![vec![2, 3, 5], vec![2, 4, 5]];
    let a: Vec<u8> = (0..30).collect();
    let b: Vec<u8> = (100..140).collect();
    let lowering = lower_byte_concat(target.arch(), 1, &dims, &[false, true]).expect("lowers");
    let got = run_node_bytes(&target, &lowering, &[&a, &b], &[70]).expect("runs");
    for row in 0..2 {
        // The skipped slot keeps the harness's fill byte; the copied slot holds b's row.
        assert!(
            got[0][row * 35..][..15].iter().all(|&v| v == 0xA5),
            "row {row}"
        );
        assert_eq!(
            &got[0][row * 35 + 15..][..20],
            &b[row * 20..][..20],
            "row {row}"
        );
    }
    assert!(lower_byte_concat(target.arch(), 3, &dims, &[true, true]).is_err());
    assert!(lower_byte_concat(target.arch(), 1, &dims, &[true]).is_err());
    let mismatched = vec![vec![2, 3, 5], vec![3, 4, 5]];
    assert!(lower_byte_concat(target.arch(), 1, &mismatched, &[true, true]).is_err());
}

#[test]
fn byte_transpose_matches_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0x510e_527f_ade6_82d1);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 3], vec![1, 0]),
        (vec![1, 17, 19], vec![0, 2, 1]),
        (vec![2, 3, 4, 5], vec![0, 2, 3, 1]),
        (vec![2, 3, 4, 5], vec![0, 3, 1, 2]),
        (vec![1, 2, 3, 4, 5], vec![0, 2, 1, 3, 4]),
        (vec![3, 1, 33], vec![1, 0, 2]),
        (vec![4, 5, 6], vec![2, 1, 0]),
        (vec![0, 5], vec![1, 0]),
    ];
    for (dims, perm) in cases {
        let x = random_bytes(&mut rng, dims.iter().product());
        let want = eval_op(
            &Op::Transpose { perm: perm.clone() },
            &[&u8_tensor(&dims, &x)],
        )
        .expect("interpreter")
        .remove(0)
        .to_le_bytes();
        let lowering = lower_byte_transpose(target.arch(), &perm, &dims).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&x], &[want.len()]).expect("runs");
        assert_eq!(got[0], want, "{dims:?} by {perm:?}");
    }
    assert!(lower_byte_transpose(target.arch(), &[0, 0], &[2, 2]).is_err());
}

/// Every element-wise int8 kernel compiles for both int8 targets, and the main loops are the
/// packed byte instructions they are meant to be (x86-64 with AVX, aarch64 NEON).
#[test]
fn stream_kernels_compile_for_x86_64_and_aarch64() {
    use qcc_ir::requant::{AddMultipliers, FixedPoint};
    use qcc_ir::{Padding, PoolAttrs};

    use crate::lower::int8::add::lower_qadd;
    use crate::lower::int8::pool::{lower_qglobal_avgpool, lower_qmaxpool};
    use crate::lower::int8::quantize::{lower_dequantize, lower_quantize};
    use crate::lower::KernelContext;
    use crate::target::Target;

    let checks = [
        ("x86_64-int8", ["roundps", "packus", "pmaxub"]),
        ("aarch64-int8", ["frintn", "sqxtun", "umax v"]),
    ];
    for (name, [nearest, narrow, byte_max]) in checks {
        let target = Target::parse(name).expect("target");
        let arch = target.arch();
        let isa = target.isa().expect("isa");
        let context = KernelContext {
            pointer: isa.pointer_type(),
            fma: target.fma(),
        };
        let pool = PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![1; 4]),
            ceil_mode: false,
        };
        let m = AddMultipliers {
            a: 3,
            b: 5,
            shift: 2,
        };
        let half = FixedPoint::from_real(0.5).expect("in range");
        let lowerings = [
            (
                "quantize",
                lower_quantize(arch, 64, 0.5, 3),
                vec![nearest, narrow],
            ),
            ("dequantize", lower_dequantize(arch, 64, 0.5, 3), vec![]),
            (
                "qadd",
                lower_qadd(arch, 64, 1, 2, 3, m, (0, 255)),
                vec![narrow],
            ),
            (
                "qmaxpool",
                lower_qmaxpool(arch, &pool, &[1, 2, 40, 40]),
                vec![byte_max],
            ),
            (
                "qgap",
                lower_qglobal_avgpool(arch, &[1, 2, 7, 7], 1, 2, half),
                vec![],
            ),
            ("copy", lower_byte_copy(arch, 64), vec![]),
            (
                "transpose",
                lower_byte_transpose(arch, &[1, 0], &[3, 5]),
                vec![],
            ),
        ];
        for (what, lowering, expected) in lowerings {
            let lowering = lowering.expect("lowers");
            assert!(!lowering.calls.is_empty(), "{name} {what}: no call");
            for call in &lowering.calls {
                let code = crate::emit::disassemble_kernel(isa.as_ref(), &context, &*call.kernel)
                    .expect("kernel compiles");
                for instruction in &expected {
                    assert!(
                        code.contains(instruction),
                        "{name} {what}: no `{instruction}` in\n{code}"
                    );
                }
            }
        }
    }
}
