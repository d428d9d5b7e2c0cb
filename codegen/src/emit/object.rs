//! Kernels compiled into a relocatable object file (position-independent, for any linker).

use cranelift_module::default_libcall_names;
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::{define_kernel, kernel_context, EmitError};
use crate::lower::Kernel;
use crate::target::{Emission, IsaOptions, Target};

/// Compiles `kernels` for `target` into the bytes of one object file named `name`, each
/// kernel an exported symbol under its spec's name.
pub fn object_kernels(
    target: &Target,
    name: &str,
    kernels: &[&dyn Kernel],
) -> Result<Vec<u8>, EmitError> {
    let isa = target.isa_with(&IsaOptions {
        emission: Emission::Object,
        ..IsaOptions::default()
    })?;
    let object_error = |message: String| EmitError::Object {
        name: name.to_string(),
        message,
    };
    let builder = ObjectBuilder::new(isa, name, default_libcall_names())
        .map_err(|e| object_error(format!("{e:?}")))?;
    let mut module = ObjectModule::new(builder);
    let context = kernel_context(&module, target);
    for kernel in kernels {
        define_kernel(&mut module, &context, *kernel)?;
    }
    module
        .finish()
        .emit()
        .map_err(|e| object_error(e.to_string()))
}
