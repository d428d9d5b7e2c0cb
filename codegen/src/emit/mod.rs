//! Emission of lowered kernels through `cranelift_module::Module` (JIT or object file).
//!
//! [`define_kernel`] is the one path from a [`Kernel`] to a defined function, generic over the
//! module, so the JIT ([`JitKernels`]) and object files ([`object_kernels`]) share it.

mod jit;
mod object;

pub use jit::{FinalizedKernels, JitKernels, KernelArg, KernelFn};
pub use object::object_kernels;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{Function, Signature, UserFuncName};
use cranelift_codegen::isa::{TargetFrontendConfig, TargetIsa};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

use crate::lower::{Kernel, KernelContext, KernelError};
use crate::target::{Target, TargetError};

/// Errors from turning kernels into code.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("kernel `{kernel}`: Cranelift: {message}")]
    Module { kernel: String, message: String },
    #[error("kernel `{kernel}` is not defined in this module")]
    UnknownKernel { kernel: String },
    #[error("kernel `{kernel}` has C signature {expected:?}, not {requested:?}")]
    SignatureMismatch {
        kernel: String,
        expected: Vec<crate::lower::ParamKind>,
        requested: Vec<crate::lower::ParamKind>,
    },
    #[error("object file `{name}`: {message}")]
    Object { name: String, message: String },
}

/// What the kernels may assume about the target, derived once per module.
pub fn kernel_context<M: Module>(module: &M, target: &Target) -> KernelContext {
    KernelContext {
        pointer: module.target_config().pointer_type(),
        fma: target.fma(),
    }
}

/// Declares `kernel` as an exported function of `module` under its spec's name and defines
/// it from its CLIF body.
pub fn define_kernel<M: Module>(
    module: &mut M,
    context: &KernelContext,
    kernel: &dyn Kernel,
) -> Result<FuncId, EmitError> {
    let symbol = kernel.spec().name.clone();
    define_kernel_with_linkage(module, context, kernel, Linkage::Export, &symbol)
}

/// As [`define_kernel`], with the symbol's linkage and name chosen by the caller (a model's
/// kernels are local symbols prefixed with the model name, so two models link together).
pub fn define_kernel_with_linkage<M: Module>(
    module: &mut M,
    context: &KernelContext,
    kernel: &dyn Kernel,
    linkage: Linkage,
    symbol: &str,
) -> Result<FuncId, EmitError> {
    let spec = kernel.spec();
    let module_error = |e: cranelift_module::ModuleError| EmitError::Module {
        kernel: spec.name.clone(),
        message: format!("{e:?}"),
    };
    let signature = spec.signature(module.isa());
    let id = module
        .declare_function(symbol, linkage, &signature)
        .map_err(module_error)?;

    let mut function_context = module.make_context();
    let frontend = module.isa().frontend_config();
    function_context.func = build_function(kernel, context, frontend, signature, id.as_u32())?;
    module
        .define_function(id, &mut function_context)
        .map_err(module_error)?;
    Ok(id)
}

/// The CLIF function of `kernel`, named `u0:{index}`, verified by Cranelift when compiled.
pub fn build_function(
    kernel: &dyn Kernel,
    context: &KernelContext,
    frontend: TargetFrontendConfig,
    signature: Signature,
    index: u32,
) -> Result<Function, EmitError> {
    let mut function = Function::with_name_signature(UserFuncName::user(0, index), signature);
    let mut builder_context = FunctionBuilderContext::new();
    let mut builder = FunctionBuilder::new(&mut function, &mut builder_context);
    let entry = builder.create_block();
    builder.append_block_params_for_function_params(entry);
    builder.switch_to_block(entry);
    let params = builder.block_params(entry).to_vec();
    kernel.build_body(&mut builder, context, &params)?;
    builder.seal_all_blocks();
    builder.finalize(frontend);
    Ok(function)
}

/// The machine code of `kernel` for `isa`, disassembled (for tests that check instruction
/// selection, e.g. that the main loop really is f32x4).
pub fn disassemble_kernel(
    isa: &dyn TargetIsa,
    context: &KernelContext,
    kernel: &dyn Kernel,
) -> Result<String, EmitError> {
    let signature = kernel.spec().signature(isa);
    let function = build_function(kernel, context, isa.frontend_config(), signature, 0)?;
    let mut compile_context = Context::for_function(function);
    compile_context.set_disasm(true);
    let compiled = compile_context
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| EmitError::Module {
            kernel: kernel.spec().name.clone(),
            message: format!("{:?}", e.inner),
        })?;
    Ok(compiled.vcode.clone().unwrap_or_default())
}
