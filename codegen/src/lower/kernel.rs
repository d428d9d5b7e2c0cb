//! The kernel interface: what every lowered kernel promises, independent of how it is built.
//!
//! A kernel is one Cranelift function with the platform's C calling convention. It takes raw
//! pointers and sizes only and touches nothing else: no globals, no allocation, no syscalls
//! (IREE's microkernel rules). That makes a kernel a replaceable unit: a [`KernelSpec`] names
//! it (ISA, op, element type, vector width, tile, epilogue) and fixes its C signature, and
//! any implementation of [`Kernel`] with that spec can stand in for another, whether its body
//! is CLIF built here or machine code emitted by hand later.

use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Type, Value};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::FunctionBuilder;
use qcc_ir::Activation;

use crate::target::Arch;

/// What a kernel parameter carries. Every kind is pointer-sized in the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `const T *`: read only.
    ConstPtr,
    /// `T *`: written by the kernel.
    MutPtr,
    /// `size_t`: an element count or extent.
    Size,
}

/// One parameter of a kernel's C signature, named for documentation and the C header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelParam {
    pub name: &'static str,
    pub kind: ParamKind,
}

impl KernelParam {
    pub const fn input(name: &'static str) -> KernelParam {
        KernelParam {
            name,
            kind: ParamKind::ConstPtr,
        }
    }
    pub const fn output(name: &'static str) -> KernelParam {
        KernelParam {
            name,
            kind: ParamKind::MutPtr,
        }
    }
    pub const fn size(name: &'static str) -> KernelParam {
        KernelParam {
            name,
            kind: ParamKind::Size,
        }
    }
}

/// The type arithmetic is carried out in (the accumulator of a reduction kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accumulator {
    F32,
    /// Integer dot products (int8 kernels): i32 lanes, requantized in the epilogue.
    I32,
}

impl Accumulator {
    pub fn name(self) -> &'static str {
        match self {
            Accumulator::F32 => "f32",
            Accumulator::I32 => "i32",
        }
    }
}

/// The register block a kernel's inner loop produces per step: `rows × cols` elements.
/// Element-wise kernels have one row of one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub rows: u32,
    pub cols: u32,
}

/// Everything that identifies a kernel and its calling contract.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    /// Unique symbol name within a module; encodes ISA, element type and width, op and
    /// variant, e.g. `x86_64_f32x4_add_channel_rhs`.
    pub name: String,
    pub arch: Arch,
    /// The op family and variant, e.g. `add_channel_rhs` or `leakyrelu`.
    pub op: String,
    pub accumulator: Accumulator,
    /// Vector lanes of the main loop (4 for f32x4); the tail runs one lane at a time.
    pub lanes: u32,
    pub tile: Tile,
    /// An activation fused after the main computation, if any.
    pub epilogue: Option<Activation>,
    /// The C signature, in order. Kernels return nothing.
    pub params: Vec<KernelParam>,
}

impl KernelSpec {
    /// The symbol name for a kernel: `{arch}_{acc}x{lanes}_{op}`.
    pub fn symbol(arch: Arch, accumulator: Accumulator, lanes: u32, op: &str) -> String {
        format!("{}_{}x{}_{}", arch.name(), accumulator.name(), lanes, op)
    }

    /// The spec of an f32x4 streaming kernel (one row of 4 lanes per step: element-wise and
    /// pooling families), named by [`KernelSpec::symbol`].
    pub fn f32x4_stream(
        arch: Arch,
        op: String,
        epilogue: Option<qcc_ir::Activation>,
        params: Vec<KernelParam>,
    ) -> KernelSpec {
        KernelSpec {
            name: KernelSpec::symbol(arch, Accumulator::F32, 4, &op),
            arch,
            op,
            accumulator: Accumulator::F32,
            lanes: 4,
            tile: Tile { rows: 1, cols: 4 },
            epilogue,
            params,
        }
    }

    /// The Cranelift signature: every parameter is pointer-sized, the call convention is the
    /// ISA's default (System V on x86-64 Linux, AAPCS64 on aarch64), so C can call it.
    pub fn signature(&self, isa: &dyn TargetIsa) -> Signature {
        let mut signature = Signature::new(isa.default_call_conv());
        let pointer = isa.pointer_type();
        signature
            .params
            .extend(self.params.iter().map(|_| AbiParam::new(pointer)));
        signature
    }
}

/// What a kernel body may know about the code it is being built for.
#[derive(Clone, Copy, Debug)]
pub struct KernelContext {
    /// The integer type of pointers and sizes.
    pub pointer: Type,
    /// Whether `fma` on f32x4 is one instruction (otherwise it would become libcalls).
    pub fma: bool,
}

/// Errors from describing or building a kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("kernel `{kernel}`: {reason}")]
    Unsupported { kernel: String, reason: String },
    #[error("cannot broadcast {a:?} with {b:?}: {reason}")]
    Broadcast {
        a: Vec<usize>,
        b: Vec<usize>,
        reason: String,
    },
}

/// A kernel: its spec and a CLIF body for it.
pub trait Kernel {
    fn spec(&self) -> &KernelSpec;

    /// Builds the body. The builder is positioned in the entry block, whose parameters
    /// (`params`, in [`KernelSpec::params`] order) are already appended; the body must end
    /// every path with `return`. The emitter seals the blocks and finalizes.
    fn build_body(
        &self,
        builder: &mut FunctionBuilder,
        context: &KernelContext,
        params: &[Value],
    ) -> Result<(), KernelError>;
}

/// `f32` constant of type `ty` (`F32` or a vector of it), splatted if needed.
pub(crate) fn f32_constant(builder: &mut FunctionBuilder, ty: Type, value: f32) -> Value {
    let scalar = builder.ins().f32const(value);
    if ty.is_vector() {
        builder.ins().splat(ty, scalar)
    } else {
        scalar
    }
}

/// Emits `for i in (start..).step_by(step) while i + step <= end { body(i) }` and returns the
/// first index the loop did not process (the start of the tail). Sizes are unsigned.
pub(crate) fn counted_loop(
    builder: &mut FunctionBuilder,
    pointer: Type,
    start: Value,
    end: Value,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) -> Value {
    use cranelift_codegen::ir::condcodes::IntCC;
    let header = builder.create_block();
    let body_block = builder.create_block();
    let exit = builder.create_block();
    builder.append_block_param(header, pointer);
    builder.append_block_param(exit, pointer);
    builder.ins().jump(header, &[start.into()]);

    builder.switch_to_block(header);
    let index = builder.block_params(header)[0];
    let next = builder.ins().iadd_imm_s(index, step);
    let fits = builder
        .ins()
        .icmp(IntCC::UnsignedLessThanOrEqual, next, end);
    builder
        .ins()
        .brif(fits, body_block, &[], exit, &[index.into()]);

    builder.switch_to_block(body_block);
    body(builder, index);
    builder.ins().jump(header, &[next.into()]);

    builder.switch_to_block(exit);
    builder.block_params(exit)[0]
}

/// `base + index * 4`: the address of f32 element `index`.
pub(crate) fn f32_address(builder: &mut FunctionBuilder, base: Value, index: Value) -> Value {
    let offset = builder.ins().ishl_imm_u(index, 2);
    builder.ins().iadd(base, offset)
}

/// Flags of the kernels' memory accesses: the model lowering guarantees every address is
/// inside a buffer of the plan, so no access traps (alignment is not assumed).
pub(crate) fn flags() -> cranelift_codegen::ir::MemFlagsData {
    cranelift_codegen::ir::MemFlagsData::new().with_notrap()
}

/// The error of a kernel body called with the wrong number of parameters.
pub(crate) fn arity_error(spec: &KernelSpec, params: &[Value]) -> KernelError {
    KernelError::Unsupported {
        kernel: spec.name.clone(),
        reason: format!(
            "expected {} parameters, got {}",
            spec.params.len(),
            params.len()
        ),
    }
}
