use super::*;

#[test]
fn broadcasting_follows_numpy() {
    assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
    assert!(broadcast(&[2, 3], &[4]).is_err());
}

#[test]
fn same_upper_and_lower_put_the_odd_pad_at_opposite_ends() {
    let (b, e) = resolve_pads(&Padding::SameUpper, &[5], &[2], &[1], &[1]).unwrap();
    assert_eq!((b, e), (vec![0], vec![1]));
    let (b, e) = resolve_pads(&Padding::SameLower, &[5], &[2], &[1], &[1]).unwrap();
    assert_eq!((b, e), (vec![1], vec![0]));
}

#[test]
fn reshape_handles_zero_and_minus_one() {
    assert_eq!(
        reshape_dims(&[2, 3, 4], &[0, -1], false).unwrap(),
        vec![2, 12]
    );
    assert!(reshape_dims(&[2, 3, 4], &[5, -1], false).is_err());
    assert_eq!(reshape_dims(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
}

#[test]
fn slices_clamp_like_onnx() {
    let r = slice_ranges(&[10], &[-3], &[i64::MAX], &[0], &[1]).unwrap();
    assert_eq!(
        r[0],
        SliceRange {
            axis: 0,
            start: 7,
            step: 1,
            len: 3
        }
    );
    let r = slice_ranges(&[10], &[i64::MAX], &[i64::MIN], &[0], &[-1]).unwrap();
    assert_eq!(
        r[0],
        SliceRange {
            axis: 0,
            start: 9,
            step: -1,
            len: 10
        }
    );
}

#[test]
fn ceil_mode_drops_a_window_starting_in_the_padding() {
    let p = PoolAttrs {
        kernel: vec![2],
        strides: vec![2],
        dilations: vec![1],
        padding: Padding::Explicit(vec![0, 1]),
        ceil_mode: true,
    };
    let x = TensorType::new(DType::F32, vec![1, 1, 4]);
    // Padded length 5: ceil((5-2)/2)+1 = 3 windows, but the third would start at 4, in the padding.
    assert_eq!(pool_output_dims(&p, &x).unwrap(), vec![1, 1, 2]);
    let x = TensorType::new(DType::F32, vec![1, 1, 5]);
    assert_eq!(pool_output_dims(&p, &x).unwrap(), vec![1, 1, 3]);
}
