//! Copies, Concat and Transpose, JIT-compiled for the host, against the reference interpreter.
//! Data movement must be bit-exact: inputs are random bit patterns, NaN payloads included.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Op, Tensor};

use super::{lower_concat, lower_copy, lower_transpose, StridedCopyKernel, TransposePlan};
use crate::lower::test_support::{native, values};
use crate::model::run_node;
use crate::target::Target;

/// `n` random bit patterns (any float, NaNs with payloads included) other than the canonical
/// NaN `run_node` pre-fills outputs with, so an unwritten element can never pass.
fn random_bits(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32;
            let value = f32::from_bits(bits);
            if bits == f32::NAN.to_bits() {
                1.0
            } else {
                value
            }
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A shape of `rank` dims in 1..=max (some 1s, many not multiples of 4) and a permutation.
fn shape_and_perm(max_rank: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1..=max_rank)
        .prop_flat_map(|rank| {
            (
                proptest::collection::vec(1usize..=7, rank),
                Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_filter("at most 4096 elements", |(dims, _)| {
            dims.iter().product::<usize>() <= 4096
        })
}

fn check_transpose(perm: &[usize], dims: &[usize], seed: u64) {
    let data = random_bits(seed, dims.iter().product());
    let x = Tensor::from_f32(dims, data.clone());
    let op = Op::Transpose {
        perm: perm.to_vec(),
    };
    let want = eval_op(&op, &[&x])
        .expect("interpreter evaluates")
        .remove(0);
    let lowering = lower_transpose(native().arch(), perm, dims).expect("transpose lowers");
    let got = run_node(&native(), &lowering, &[&data], &[data.len()]).expect("node runs");
    assert_eq!(
        bits(&got[0]),
        bits(&values(&want)),
        "perm {perm:?} on {dims:?} ({})",
        lowering.description
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transpose_matches_the_interpreter_bit_for_bit(
        (dims, perm) in shape_and_perm(6),
        seed in any::<u64>(),
    ) {
        check_transpose(&perm, &dims, seed);
    }

    /// Every input of a Concat with `copy` set lands in its slice of the output; the slices
    /// of the others stay unwritten (their producers write them in place).
    #[test]
    fn concat_copies_exactly_the_flagged_inputs(
        rank in 1usize..=5,
        axis_choice in any::<prop::sample::Index>(),
        base in proptest::collection::vec(1usize..=6, 5),
        extents in proptest::collection::vec(0usize..=9, 1..=4),
        copy_mask in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let axis = axis_choice.index(rank);
        let input_dims: Vec<Vec<usize>> = extents
            .iter()
            .map(|&e| {
                let mut dims = base[..rank].to_vec();
                dims[axis] = e;
                dims
            })
            .collect();
        let copy: Vec<bool> = (0..input_dims.len()).map(|i| copy_mask >> i & 1 == 1).collect();
        let data: Vec<Vec<f32>> = input_dims
            .iter()
            .enumerate()
            .map(|(i, d)| random_bits(seed.wrapping_add(i as u64), d.iter().product()))
            .collect();
        let tensors: Vec<Tensor> = input_dims
            .iter()
            .zip(&data)
            .map(|(d, v)| Tensor::from_f32(d, v.clone()))
            .collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let want = eval_op(&Op::Concat { axis }, &refs).expect("interpreter evaluates").remove(0);
        // The same Concat with only input `i`'s elements kept says where input `i` lands.
        let owner: Vec<usize> = {
            let marked: Vec<Tensor> = input_dims
                .iter()
                .enumerate()
                .map(|(i, d)| Tensor::from_f32(d, vec![i as f32; d.iter().product()]))
                .collect();
            let refs: Vec<&Tensor> = marked.iter().collect();
            let owners = eval_op(&Op::Concat { axis }, &refs).expect("interpreter evaluates");
            values(&owners[0]).iter().map(|&v| v as usize).collect()
        };
        let lowering = lower_concat(native().arch(), axis, &input_dims, &copy)
            .expect("concat lowers");
        let inputs: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
        let got = run_node(&native(), &lowering, &inputs, &[want.numel()]).expect("node runs");
        let want = values(&want);
        for (j, (g, w)) in got[0].iter().zip(&want).enumerate() {
            let expected = if copy[owner[j]] { w.to_bits() } else { f32::NAN.to_bits() };
            prop_assert_eq!(
                g.to_bits(),
                expected,
                "element {} of {:?} along {} copy {:?}",
                j,
                input_dims,
                axis,
                copy
            );
        }
    }

    #[test]
    fn copy_moves_every_element_from_the_named_input_to_the_named_output(
        len in 0usize..=200,
        seed in any::<u64>(),
    ) {
        let decoy = vec![0.0f32; len];
        let data = random_bits(seed, len);
        let lowering = lower_copy(native().arch(), 1, 1, len * 4).expect("copy lowers");
        let got = run_node(&native(), &lowering, &[&decoy, &data], &[3, len])
            .expect("node runs");
        prop_assert_eq!(bits(&got[1]), bits(&data));
        prop_assert!(got[0].iter().all(|v| v.to_bits() == f32::NAN.to_bits()));
    }
}

/// ShuffleNet's channel shuffle, batch > 1, and shapes whose every run is shorter than a vector
/// or not a multiple of one.
#[test]
fn channel_shuffle_and_fixed_transposes_match_the_interpreter() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 2, 58, 7, 7], &[0, 2, 1, 3, 4]),
        (&[3, 4, 3, 5, 5], &[0, 2, 1, 3, 4]),
        (&[1, 3, 17, 13], &[0, 2, 3, 1]),
        (&[2, 5, 6, 7], &[0, 3, 1, 2]),
        (&[37, 41], &[1, 0]),
        (&[2, 3, 4, 5, 6, 7], &[5, 4, 3, 2, 1, 0]),
        (&[2, 3, 1, 5, 1, 7], &[0, 4, 3, 2, 5, 1]),
        (&[1, 1, 1], &[2, 0, 1]),
        (&[4, 1, 9], &[1, 0, 2]),
        (&[3, 0, 2], &[2, 1, 0]),
    ];
    for (i, (dims, perm)) in cases.iter().enumerate() {
        check_transpose(perm, dims, 1000 + i as u64);
    }
}

#[test]
fn transpose_plans_merge_axes_that_stay_adjacent() {
    let shuffle = TransposePlan::new(&[0, 2, 1, 3, 4], &[8, 2, 58, 28, 28]);
    assert_eq!(
        shuffle,
        TransposePlan {
            outer: 8,
            dims: vec![2, 58, 784],
            perm: vec![1, 0, 2],
        }
    );
    // Extent-1 axes move nothing: dropping them merges their neighbours.
    let nhwc = TransposePlan::new(&[0, 2, 3, 1], &[1, 16, 5, 5]);
    assert_eq!(
        nhwc,
        TransposePlan {
            outer: 1,
            dims: vec![16, 25],
            perm: vec![1, 0],
        }
    );
    assert!(TransposePlan::new(&[1, 0, 2], &[1, 6, 9]).is_copy());
    assert!(!TransposePlan::new(&[1, 0, 2], &[2, 6, 9]).is_copy());
}

#[test]
fn invalid_layouts_are_errors() {
    let arch = native().arch();
    assert!(lower_transpose(arch, &[0, 0], &[2, 2]).is_err());
    assert!(lower_transpose(arch, &[0, 2], &[2, 2]).is_err());
    assert!(lower_transpose(arch, &[0], &[2, 2]).is_err());
    assert!(lower_copy(arch, 0, 0, 6).is_err());
    assert!(lower_concat(arch, 1, &[vec![2, 3], vec![3, 3]], &[true, true]).is_err());
    assert!(lower_concat(arch, 2, &[vec![2, 3]], &[true]).is_err());
    assert!(lower_concat(arch, 0, &[vec![2, 3]], &[true, false]).is_err());
    assert!(lower_concat(arch, 0, &[], &[]).is_err());
}

/// The copy loop really moves f32x4 vectors (x86-64 `vmovups`, aarch64 `q` registers).
#[test]
fn copy_kernel_moves_vectors() {
    for (name, vector_move) in [("x86_64-fp32", "vmovups %xmm"), ("aarch64-fp32", "str q")] {
        let target = Target::parse(name).expect("target");
        let isa = target.isa().expect("isa");
        let context = crate::lower::KernelContext {
            pointer: isa.pointer_type(),
            fma: target.fma(),
        };
        let kernel = StridedCopyKernel::new(target.arch());
        let code = crate::emit::disassemble_kernel(isa.as_ref(), &context, &kernel)
            .expect("kernel compiles");
        assert!(
            code.contains(vector_move),
            "{name}: no `{vector_move}` in\n{code}"
        );
    }
}
