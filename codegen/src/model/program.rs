//! A program: the kernel calls of a whole model with every argument resolved to a place in
//! one of four buffers, and the Cranelift function that performs them.
//!
//! The entry function has the C signature of the generated header:
//!
//! ```c
//! int NAME_run(const void *const *inputs, void *const *outputs, void *workspace);
//! size_t NAME_workspace_size(void);
//! ```
//!
//! Input and output pointers are loaded from the two arrays once, on entry; the weights are
//! one read-only data object of the module, addressed PC-relative (position independent);
//! the workspace holds the arena and, above it, the scratch of whichever node runs. Nothing
//! else is touched, so two calls with two workspaces may run at the same time.

use std::collections::HashMap;

use cranelift_codegen::ir::{
    types, AbiParam, Function, GlobalValueData, InstBuilder, MemFlagsData, Signature, UserFuncName,
    Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};

use crate::emit::{define_kernel_with_linkage, EmitError};
use crate::lower::{Arg, KernelCall, KernelContext};
use crate::plan::ALIGNMENT;

/// The buffer a place is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    /// The caller's input `i`.
    Input(usize),
    /// The caller's output `i`.
    Output(usize),
    /// The module's read-only weight blob.
    Weights,
    /// The caller's workspace.
    Workspace,
}

/// A byte address: a buffer and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub base: Base,
    pub offset: usize,
}

impl Place {
    pub fn new(base: Base, offset: usize) -> Place {
        Place { base, offset }
    }
}

/// The kernel calls of one node with the places their symbolic arguments stand for.
pub struct Step {
    pub calls: Vec<KernelCall>,
    /// Per node input / output / packed blob / table: where it is.
    pub inputs: Vec<Place>,
    pub outputs: Vec<Place>,
    pub packed: Vec<Place>,
    pub bytes: Vec<Place>,
    pub tables: Vec<Place>,
    pub scratch: Place,
}

/// Everything the entry function needs.
pub struct Program {
    /// Prefix of the exported symbols (`NAME_run`, `NAME_workspace_size`).
    pub name: String,
    pub num_inputs: usize,
    pub num_outputs: usize,
    pub steps: Vec<Step>,
    /// The weight blob (constants, pre-packed weights, tables), 64-byte aligned pieces.
    pub weights: Vec<u8>,
    pub workspace_bytes: usize,
}

/// Appends pieces to a 64-byte aligned weight blob.
#[derive(Default)]
pub struct WeightBlob {
    pub bytes: Vec<u8>,
}

impl WeightBlob {
    /// Appends `data` at the next aligned offset and returns that offset.
    pub fn push_bytes(&mut self, data: &[u8]) -> usize {
        let offset = self.bytes.len().next_multiple_of(ALIGNMENT);
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(data);
        offset
    }

    pub fn push_f32(&mut self, data: &[f32]) -> usize {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.push_bytes(&bytes)
    }

    pub fn push_sizes(&mut self, data: &[usize], pointer_bytes: usize) -> usize {
        let bytes: Vec<u8> = data
            .iter()
            .flat_map(|&x| (x as u64).to_le_bytes()[..pointer_bytes].to_vec())
            .collect();
        self.push_bytes(&bytes)
    }
}

/// How a program is emitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgramOptions {
    /// One more local entry per step (`NAME_step_I`, the signature of `NAME_run`), so a
    /// profiler can time layers alone.
    pub per_step_entries: bool,
    /// Reach the weights and kernels through absolute 64-bit addresses instead of 32-bit
    /// PC-relative ones: the JIT places code and a large weight blob in separate
    /// allocations that may lie more than 2 GiB apart. Objects leave this to the linker.
    pub far_references: bool,
}

/// Symbols of a program defined in a module.
pub struct ProgramIds {
    pub run: FuncId,
    pub workspace_size: FuncId,
    /// With `per_step`: one entry per step (same signature as `run`), for layer profiling.
    pub steps: Vec<FuncId>,
}

/// Defines every kernel the program calls (local symbols, each once), the weight blob and
/// the two exported entry functions in `module`; with `per_step`, also one local entry per
/// step when `options` asks.
pub fn define_program<M: Module>(
    module: &mut M,
    context: &KernelContext,
    program: &Program,
    options: ProgramOptions,
) -> Result<ProgramIds, EmitError> {
    let module_error = |what: &str, e: cranelift_module::ModuleError| EmitError::Module {
        kernel: format!("{}{what}", program.name),
        message: format!("{e:?}"),
    };

    // Kernels, once per symbol name.
    let mut kernels: HashMap<String, FuncId> = HashMap::new();
    for step in &program.steps {
        for call in &step.calls {
            let name = &call.kernel.spec().name;
            if !kernels.contains_key(name) {
                let id = define_kernel_with_linkage(
                    module,
                    context,
                    call.kernel.as_ref(),
                    Linkage::Local,
                    &format!("{}_{name}", program.name),
                )?;
                kernels.insert(name.clone(), id);
            }
        }
    }

    // The weight blob. An empty blob still gets one aligned byte so its address exists.
    let weights_id = module
        .declare_data(
            &format!("{}_weights", program.name),
            Linkage::Local,
            false,
            false,
        )
        .map_err(|e| module_error("_weights", e))?;
    let mut data = DataDescription::new();
    let mut bytes = program.weights.clone();
    if bytes.is_empty() {
        bytes.push(0);
    }
    data.define(bytes.into_boxed_slice());
    data.set_align(ALIGNMENT as u64);
    module
        .define_data(weights_id, &data)
        .map_err(|e| module_error("_weights", e))?;

    let pointer = module.target_config().pointer_type();
    let call_conv = module.isa().default_call_conv();

    // size_t NAME_workspace_size(void)
    let mut size_signature = Signature::new(call_conv);
    size_signature.returns.push(AbiParam::new(pointer));
    let workspace_size = module
        .declare_function(
            &format!("{}_workspace_size", program.name),
            Linkage::Export,
            &size_signature,
        )
        .map_err(|e| module_error("_workspace_size", e))?;
    {
        let mut function = Function::with_name_signature(
            UserFuncName::user(1, workspace_size.as_u32()),
            size_signature,
        );
        let mut builder_context = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut function, &mut builder_context);
        let entry = b.create_block();
        b.switch_to_block(entry);
        let size = b.ins().iconst(pointer, program.workspace_bytes as i64);
        b.ins().return_(&[size]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
        let mut ctx = module.make_context();
        ctx.func = function;
        module
            .define_function(workspace_size, &mut ctx)
            .map_err(|e| module_error("_workspace_size", e))?;
    }

    // int NAME_run(const void *const *inputs, void *const *outputs, void *workspace)
    let all: Vec<&Step> = program.steps.iter().collect();
    let declared = Declared {
        weights: weights_id,
        kernels: &kernels,
        far_references: options.far_references,
    };
    let run = define_entry(
        module,
        program,
        &format!("{}_run", program.name),
        Linkage::Export,
        &all,
        &declared,
    )?;
    let mut steps = Vec::new();
    if options.per_step_entries {
        for (i, step) in program.steps.iter().enumerate() {
            steps.push(define_entry(
                module,
                program,
                &format!("{}_step_{i}", program.name),
                Linkage::Local,
                &[step],
                &declared,
            )?);
        }
    }
    Ok(ProgramIds {
        run,
        workspace_size,
        steps,
    })
}

/// What the entry functions call and read, already declared in the module.
struct Declared<'a> {
    weights: DataId,
    kernels: &'a HashMap<String, FuncId>,
    /// As [`ProgramOptions::far_references`].
    far_references: bool,
}

/// Defines a function with the signature of `NAME_run` that performs `steps`.
fn define_entry<M: Module>(
    module: &mut M,
    program: &Program,
    symbol: &str,
    linkage: Linkage,
    steps: &[&Step],
    declared: &Declared,
) -> Result<FuncId, EmitError> {
    let Declared {
        weights: weights_id,
        kernels,
        far_references,
    } = *declared;
    let module_error = |e: cranelift_module::ModuleError| EmitError::Module {
        kernel: symbol.to_string(),
        message: format!("{e:?}"),
    };
    let pointer = module.target_config().pointer_type();
    let mut run_signature = Signature::new(module.isa().default_call_conv());
    run_signature.params.extend([AbiParam::new(pointer); 3]);
    run_signature.returns.push(AbiParam::new(types::I32));
    let run = module
        .declare_function(symbol, linkage, &run_signature)
        .map_err(module_error)?;
    let mut function =
        Function::with_name_signature(UserFuncName::user(1, run.as_u32()), run_signature);
    let mut builder_context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut function, &mut builder_context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let [inputs, outputs, workspace] = b.block_params(entry) else {
        unreachable!("the run signature has three parameters");
    };
    let (inputs, outputs, workspace) = (*inputs, *outputs, *workspace);
    let flags = MemFlagsData::trusted().with_readonly();
    let word = pointer.bytes() as i32;
    let input_bases: Vec<Value> = (0..program.num_inputs)
        .map(|i| b.ins().load(pointer, flags, inputs, i as i32 * word))
        .collect();
    let output_bases: Vec<Value> = (0..program.num_outputs)
        .map(|i| b.ins().load(pointer, flags, outputs, i as i32 * word))
        .collect();
    let weights_gv = module.declare_data_in_func(weights_id, b.func);
    if far_references {
        if let GlobalValueData::Symbol { colocated, .. } = &mut b.func.global_values[weights_gv] {
            *colocated = false;
        }
    }
    let weights = b.ins().symbol_value(pointer, weights_gv);
    let mut func_refs = HashMap::new();
    for step in steps {
        for call in &step.calls {
            let name = &call.kernel.spec().name;
            if !func_refs.contains_key(name) {
                let id = *kernels.get(name).ok_or_else(|| EmitError::UnknownKernel {
                    kernel: name.clone(),
                })?;
                let callee = module.declare_func_in_func(id, b.func);
                if far_references {
                    b.func.dfg.ext_funcs[callee].colocated = false;
                }
                func_refs.insert(name.clone(), callee);
            }
        }
    }

    let base_value = |base: Base| -> Result<Value, EmitError> {
        let missing = || EmitError::Module {
            kernel: symbol.to_string(),
            message: format!("{base:?} does not exist"),
        };
        Ok(match base {
            Base::Input(i) => *input_bases.get(i).ok_or_else(missing)?,
            Base::Output(i) => *output_bases.get(i).ok_or_else(missing)?,
            Base::Weights => weights,
            Base::Workspace => workspace,
        })
    };
    for (s, step) in steps.iter().enumerate() {
        for call in &step.calls {
            let spec = call.kernel.spec();
            let mut args = Vec::with_capacity(call.args.len());
            for arg in &call.args {
                let place = |list: &[Place], index: usize, offset: usize, what: &str| {
                    list.get(index)
                        .map(|p| Place::new(p.base, p.offset + offset))
                        .ok_or_else(|| EmitError::Module {
                            kernel: spec.name.clone(),
                            message: format!("step {s}: {what} {index} has no place"),
                        })
                };
                let place = match *arg {
                    Arg::Size(n) => {
                        args.push(b.ins().iconst(pointer, n as i64));
                        continue;
                    }
                    Arg::Input { index, offset } => place(&step.inputs, index, offset, "input")?,
                    Arg::Output { index, offset } => place(&step.outputs, index, offset, "output")?,
                    Arg::Packed { index, offset } => {
                        place(&step.packed, index, offset, "packed blob")?
                    }
                    Arg::Bytes { index, offset } => place(&step.bytes, index, offset, "byte blob")?,
                    Arg::Table { index } => place(&step.tables, index, 0, "table")?,
                    Arg::Scratch { offset } => {
                        Place::new(step.scratch.base, step.scratch.offset + offset)
                    }
                };
                let base = base_value(place.base)?;
                args.push(if place.offset == 0 {
                    base
                } else {
                    b.ins().iadd_imm_s(base, place.offset as i64)
                });
            }
            let callee = func_refs[&spec.name];
            b.ins().call(callee, &args);
        }
    }
    let ok = b.ins().iconst(types::I32, 0);
    b.ins().return_(&[ok]);
    b.seal_all_blocks();
    b.finalize(module.isa().frontend_config());
    let mut ctx = module.make_context();
    ctx.func = function;
    module
        .define_function(run, &mut ctx)
        .map_err(module_error)?;
    Ok(run)
}
