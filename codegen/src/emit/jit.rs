//! Kernels compiled into this process's memory, callable through typed function pointers.

use std::collections::HashMap;

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId};

use super::{define_kernel, kernel_context, EmitError};
use crate::lower::{Kernel, KernelContext, ParamKind};
use crate::target::{Emission, IsaOptions, Target};

/// A Rust type that passes one kernel parameter through the C ABI.
pub trait KernelArg {
    const KIND: ParamKind;
}

impl KernelArg for *const f32 {
    const KIND: ParamKind = ParamKind::ConstPtr;
}
impl KernelArg for *const usize {
    const KIND: ParamKind = ParamKind::ConstPtr;
}
impl KernelArg for *mut f32 {
    const KIND: ParamKind = ParamKind::MutPtr;
}
impl KernelArg for usize {
    const KIND: ParamKind = ParamKind::Size;
}

/// An `unsafe extern "C" fn` pointer type that can stand for a kernel.
///
/// # Safety
/// Implementors must be function-pointer types whose C signature is `Self::params()` with no
/// return value; [`FinalizedKernels::get`] checks the kernel's spec against it.
pub unsafe trait KernelFn: Copy {
    fn params() -> Vec<ParamKind>;
    /// # Safety
    /// `code` must be the entry of a function with this C signature.
    unsafe fn from_code(code: *const u8) -> Self;
}

macro_rules! kernel_fn {
    ($($arg:ident),*) => {
        unsafe impl<$($arg: KernelArg),*> KernelFn for unsafe extern "C" fn($($arg),*) {
            fn params() -> Vec<ParamKind> {
                vec![$($arg::KIND),*]
            }
            unsafe fn from_code(code: *const u8) -> Self {
                // The one place JIT code becomes a Rust function pointer. Sound because the
                // caller checked that the kernel's spec has exactly these parameter kinds,
                // all pointer-sized, in the ISA's default (C) calling convention, and the
                // code stays mapped while the `FinalizedKernels` that produced it lives.
                unsafe { std::mem::transmute::<*const u8, Self>(code) }
            }
        }
    };
}

kernel_fn!(A, B, C);
kernel_fn!(A, B, C, D);
kernel_fn!(A, B, C, D, E);
kernel_fn!(A, B, C, D, E, F);
kernel_fn!(A, B, C, D, E, F, G);
kernel_fn!(A, B, C, D, E, F, G, H);
kernel_fn!(A, B, C, D, E, F, G, H, I);

/// Kernels being defined in a JIT module for a target the host can run.
pub struct JitKernels {
    module: JITModule,
    context: KernelContext,
    defined: HashMap<String, (FuncId, Vec<ParamKind>)>,
}

impl JitKernels {
    /// A JIT module for `target` (which must run on this machine: normally `native-*`).
    pub fn new(target: &Target) -> Result<JitKernels, EmitError> {
        JitKernels::with_options(target, &IsaOptions::default())
    }

    /// As [`JitKernels::new`], with the given Cranelift options (the optimisation level is
    /// per module; hand-scheduled kernels may run faster at `OptLevel::None`). The emission
    /// is always `Jit`, whatever `options` says.
    pub fn with_options(target: &Target, options: &IsaOptions) -> Result<JitKernels, EmitError> {
        let isa = target.isa_with(&IsaOptions {
            emission: Emission::Jit,
            ..*options
        })?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let context = kernel_context(&module, target);
        Ok(JitKernels {
            module,
            context,
            defined: HashMap::new(),
        })
    }

    /// Compiles `kernel`; a kernel whose name is already defined is compiled once.
    pub fn define(&mut self, kernel: &dyn Kernel) -> Result<(), EmitError> {
        let spec = kernel.spec();
        if self.defined.contains_key(&spec.name) {
            return Ok(());
        }
        let id = define_kernel(&mut self.module, &self.context, kernel)?;
        let kinds = spec.params.iter().map(|p| p.kind).collect();
        self.defined.insert(spec.name.clone(), (id, kinds));
        Ok(())
    }

    /// Links the kernels and makes their memory executable.
    pub fn finalize(mut self) -> Result<FinalizedKernels, EmitError> {
        self.module
            .finalize_definitions()
            .map_err(|e| EmitError::Module {
                kernel: "(finalize)".to_string(),
                message: format!("{e:?}"),
            })?;
        let entries = self
            .defined
            .into_iter()
            .map(|(name, (id, kinds))| {
                let code = self.module.get_finalized_function(id);
                (name, (code, kinds))
            })
            .collect();
        Ok(FinalizedKernels {
            module: Some(self.module),
            entries,
        })
    }
}

/// Executable kernels. Their code is freed when this is dropped: function pointers obtained
/// from [`FinalizedKernels::get`] must not be called afterwards.
pub struct FinalizedKernels {
    module: Option<JITModule>,
    entries: HashMap<String, (*const u8, Vec<ParamKind>)>,
}

impl FinalizedKernels {
    /// The kernel `name` as a function pointer of type `F`, if its C signature matches.
    /// Calling it is `unsafe`: the caller passes pointers valid for the sizes it passes, and
    /// keeps `self` alive.
    pub fn get<F: KernelFn>(&self, name: &str) -> Result<F, EmitError> {
        let (code, kinds) = self
            .entries
            .get(name)
            .ok_or_else(|| EmitError::UnknownKernel {
                kernel: name.to_string(),
            })?;
        let requested = F::params();
        if *kinds != requested {
            return Err(EmitError::SignatureMismatch {
                kernel: name.to_string(),
                expected: kinds.clone(),
                requested,
            });
        }
        // SAFETY: the signature matches the spec the code was compiled from (checked above).
        Ok(unsafe { F::from_code(*code) })
    }
}

impl Drop for FinalizedKernels {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: pointers handed out by `get` are documented to die with `self`.
            unsafe { module.free_memory() };
        }
    }
}
