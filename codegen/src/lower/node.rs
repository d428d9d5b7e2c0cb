//! What lowering one graph node produces: kernel calls with symbolic arguments.
//!
//! A kernel family lowers a node into a [`NodeLowering`]: the kernels to call, in order, each
//! with arguments that name *which* buffer (a node input or output, constant data the lowering
//! packed, the node's scratch) and a byte offset in it, or a size. The model lowering
//! ([`crate::model`]) resolves those names against the memory plan and emits the calls into
//! the model's entry function. Kernel families therefore never see the memory plan, and the
//! model lowering never needs to know how a convolution is computed.

use qcc_ir::{ConvAttrs, Padding};

use super::kernel::{Kernel, KernelError, ParamKind};

/// One argument of a kernel call. Pointer arguments are byte offsets into a named buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Node input `index` (its first byte plus `offset`).
    Input { index: usize, offset: usize },
    /// Node output `index`.
    Output { index: usize, offset: usize },
    /// Blob `index` of [`NodeLowering::packed`] (read-only, in the weight section, 64-byte
    /// aligned).
    Packed { index: usize, offset: usize },
    /// The node's scratch buffer of [`NodeLowering::scratch_bytes`] (64-byte aligned, contents
    /// undefined on entry, dead after the node).
    Scratch { offset: usize },
    /// Blob `index` of [`NodeLowering::bytes`] (read-only raw bytes, e.g. int8 weights,
    /// in the weight section, 64-byte aligned).
    Bytes { index: usize, offset: usize },
    /// Table `index` of [`NodeLowering::tables`] (`const size_t *`, in the weight section).
    Table { index: usize },
    /// A `size_t` value.
    Size(usize),
}

impl Arg {
    pub fn input(index: usize) -> Arg {
        Arg::Input { index, offset: 0 }
    }
    pub fn output(index: usize) -> Arg {
        Arg::Output { index, offset: 0 }
    }
    pub fn packed(index: usize) -> Arg {
        Arg::Packed { index, offset: 0 }
    }

    /// Whether the argument may stand for a parameter of kind `kind`.
    pub fn fits(&self, kind: ParamKind) -> bool {
        match self {
            Arg::Input { .. } | Arg::Packed { .. } | Arg::Bytes { .. } | Arg::Table { .. } => {
                kind == ParamKind::ConstPtr
            }
            Arg::Output { .. } | Arg::Scratch { .. } => {
                matches!(kind, ParamKind::MutPtr | ParamKind::ConstPtr)
            }
            Arg::Size(_) => kind == ParamKind::Size,
        }
    }
}

/// One call of a kernel. `args` matches the kernel's [`super::KernelSpec::params`] one to one.
#[derive(Clone)]
pub struct KernelCall {
    pub kernel: std::sync::Arc<dyn Kernel + Send + Sync>,
    pub args: Vec<Arg>,
}

impl KernelCall {
    /// A call, checked against the kernel's signature.
    pub fn new(
        kernel: std::sync::Arc<dyn Kernel + Send + Sync>,
        args: Vec<Arg>,
    ) -> Result<KernelCall, KernelError> {
        let spec = kernel.spec();
        let fits = spec.params.len() == args.len()
            && spec.params.iter().zip(&args).all(|(p, a)| a.fits(p.kind));
        if !fits {
            return Err(KernelError::Unsupported {
                kernel: spec.name.clone(),
                reason: format!(
                    "call arguments {args:?} do not match parameters {:?}",
                    spec.params
                ),
            });
        }
        Ok(KernelCall { kernel, args })
    }
}

/// A node lowered to kernel calls.
#[derive(Default)]
pub struct NodeLowering {
    /// Run in order.
    pub calls: Vec<KernelCall>,
    /// Constant data made at compile time (pre-packed weights, folded biases), as f32.
    pub packed: Vec<Vec<f32>>,
    /// Constant raw data made at compile time (int8 weights, i32 biases, requantization
    /// multipliers), addressed by [`Arg::Bytes`].
    pub bytes: Vec<Vec<u8>>,
    /// Constant `size_t` tables (e.g. loop descriptors), addressed by [`Arg::Table`].
    pub tables: Vec<Vec<usize>>,
    /// Bytes of scratch the calls need (0 for none).
    pub scratch_bytes: usize,
    /// The kernel choice for people, e.g. `im2col 3x3/s2 + gemm 3x12`: shown per layer by
    /// `qcc compile --report`.
    pub description: String,
    /// Set when the node runs in a slower or less precise way than the target promises
    /// (e.g. a generic kernel instead of the target's): reported on stderr, never silent.
    pub fallback: Option<String>,
}

/// The epilogue of a convolution or matrix product: `act(acc + bias + residual)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue {
    /// The residual tensor, same shape as the output, is node input `Some(index)`.
    pub residual_input: Option<usize>,
    pub activation: Option<qcc_ir::Activation>,
}

/// The geometry of a 2-D NCHW convolution (1-D convolutions are 2-D with height 1), all
/// padding resolved to explicit begins and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub group: usize,
}

impl ConvGeometry {
    /// The geometry of `attrs` applied to an input of `input_dims` with weights of
    /// `weight_dims` (`[C_out, C_in / group, kH(, kW)]`).
    pub fn new(
        attrs: &ConvAttrs,
        input_dims: &[usize],
        weight_dims: &[usize],
    ) -> Result<ConvGeometry, KernelError> {
        let unsupported = |reason: String| KernelError::Unsupported {
            kernel: "Conv".to_string(),
            reason,
        };
        let spatial = input_dims.len().saturating_sub(2);
        if !(1..=2).contains(&spatial) || weight_dims.len() != input_dims.len() {
            return Err(unsupported(format!(
                "only 1-D and 2-D convolutions are compiled; input {input_dims:?}, weight \
                 {weight_dims:?}"
            )));
        }
        if attrs.kernel.len() != spatial
            || attrs.strides.len() != spatial
            || attrs.dilations.len() != spatial
        {
            return Err(unsupported(format!(
                "kernel {:?}, strides {:?}, dilations {:?} do not have {spatial} entries",
                attrs.kernel, attrs.strides, attrs.dilations
            )));
        }
        let (begins, ends) = qcc_ir::infer::resolve_pads(
            &attrs.padding,
            &input_dims[2..],
            &attrs.kernel,
            &attrs.strides,
            &attrs.dilations,
        )
        .map_err(unsupported)?;
        // Pad a 1-D convolution to 2-D with a height-1 axis in front.
        let two = |v: &[usize], fill: usize| -> [usize; 2] {
            if v.len() == 1 {
                [fill, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let [in_h, in_w] = two(&input_dims[2..], 1);
        let [kernel_h, kernel_w] = two(&attrs.kernel, 1);
        let [stride_h, stride_w] = two(&attrs.strides, 1);
        let [dilation_h, dilation_w] = two(&attrs.dilations, 1);
        let [pad_top, pad_left] = two(&begins, 0);
        let [pad_bottom, pad_right] = two(&ends, 0);
        let group = attrs.group;
        let (in_channels, out_channels) = (input_dims[1], weight_dims[0]);
        if group == 0
            || in_channels % group != 0
            || out_channels % group != 0
            || weight_dims[1] * group != in_channels
        {
            return Err(unsupported(format!(
                "group {group} does not divide input {input_dims:?} and weight {weight_dims:?}"
            )));
        }
        let out = |input: usize, pads: usize, kernel: usize, dilation: usize, stride: usize| {
            let span = (kernel - 1) * dilation + 1;
            (input + pads)
                .checked_sub(span)
                .map(|q| q / stride + 1)
                .ok_or_else(|| {
                    unsupported(format!(
                        "window span {span} exceeds padded input {}",
                        input + pads
                    ))
                })
        };
        let out_h = out(in_h, pad_top + pad_bottom, kernel_h, dilation_h, stride_h)?;
        let out_w = out(in_w, pad_left + pad_right, kernel_w, dilation_w, stride_w)?;
        Ok(ConvGeometry {
            batch: input_dims[0],
            in_channels,
            in_h,
            in_w,
            out_channels,
            out_h,
            out_w,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            pad_top,
            pad_left,
            pad_bottom,
            pad_right,
            group,
        })
    }

    /// Depthwise: one input channel per group and one output channel per input channel.
    pub fn is_depthwise(&self) -> bool {
        self.group == self.in_channels && self.out_channels == self.in_channels && self.group > 1
    }

    /// `C_in / group · kH · kW`: the reduction length of one output element.
    pub fn reduction(&self) -> usize {
        self.in_channels / self.group * self.kernel_h * self.kernel_w
    }

    pub fn has_padding(&self) -> bool {
        self.pad_top + self.pad_left + self.pad_bottom + self.pad_right > 0
    }

    /// Multiply-accumulates of the whole convolution.
    pub fn macs(&self) -> usize {
        self.batch * self.out_channels * self.out_h * self.out_w * self.reduction()
    }

    /// The geometry a convolution kernel walks: a 1×1, stride-1, unpadded convolution is one
    /// row of `H·W` pixels (its im2col matrix is the input itself), so all its panels but the
    /// last are contiguous and take the vector packing path.
    pub fn walked(&self) -> ConvGeometry {
        let pointwise = self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && !self.has_padding();
        if pointwise {
            ConvGeometry {
                in_h: 1,
                in_w: self.in_h * self.in_w,
                out_h: 1,
                out_w: self.out_h * self.out_w,
                dilation_h: 1,
                dilation_w: 1,
                ..*self
            }
        } else {
            *self
        }
    }

    /// The geometry spelled for symbol names and reports: `k3x3_s2x2_d1x1_p1,1,1,1_g1`.
    pub fn short_name(&self) -> String {
        format!(
            "k{}x{}_s{}x{}_d{}x{}_p{},{},{},{}_g{}",
            self.kernel_h,
            self.kernel_w,
            self.stride_h,
            self.stride_w,
            self.dilation_h,
            self.dilation_w,
            self.pad_top,
            self.pad_left,
            self.pad_bottom,
            self.pad_right,
            self.group
        )
    }
}

/// ONNX `auto_pad` names for diagnostics.
pub fn padding_name(padding: &Padding) -> &'static str {
    match padding {
        Padding::Explicit(_) => "explicit",
        Padding::SameUpper => "SAME_UPPER",
        Padding::SameLower => "SAME_LOWER",
    }
}
