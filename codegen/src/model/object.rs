//! A program compiled into an ELF relocatable object (position independent, weights in
//! read-only data), for `qcc compile`.

use cranelift_module::default_libcall_names;
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::program::{define_program, Program, ProgramOptions};
use crate::emit::{kernel_context, EmitError};
use crate::target::{Emission, IsaOptions, Target};

/// The bytes of `NAME.o` for `program`: exports `NAME_run` and `NAME_workspace_size`; kernels
/// and weights are local symbols, so objects of several models link into one program.
pub fn object_program(
    target: &Target,
    options: &IsaOptions,
    program: &Program,
) -> Result<Vec<u8>, EmitError> {
    let isa = target.isa_with(&IsaOptions {
        emission: Emission::Object,
        ..*options
    })?;
    let object_error = |message: String| EmitError::Object {
        name: program.name.clone(),
        message,
    };
    let builder = ObjectBuilder::new(
        isa,
        program.name.as_bytes().to_vec(),
        default_libcall_names(),
    )
    .map_err(|e| object_error(format!("{e:?}")))?;
    let mut module = ObjectModule::new(builder);
    let context = kernel_context(&module, target);
    define_program(&mut module, &context, program, ProgramOptions::default())?;
    module
        .finish()
        .emit()
        .map_err(|e| object_error(e.to_string()))
}
