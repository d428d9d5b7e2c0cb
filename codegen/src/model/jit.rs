//! A program compiled into this process: `qcc run --target`, `qcc bench` and the tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

use super::program::{define_program, Base, Place, Program, ProgramOptions, Step, WeightBlob};
use crate::emit::{kernel_context, EmitError};
use crate::lower::NodeLowering;
use crate::plan::ALIGNMENT;
use crate::target::{Emission, IsaOptions, Target};

type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;

/// A 64-byte aligned, zero-initialised byte buffer (a workspace, or a tensor to pass in).
pub struct AlignedBuffer {
    pointer: *mut u8,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively; access goes through &/&mut self.
unsafe impl Send for AlignedBuffer {}
unsafe impl Sync for AlignedBuffer {}

impl AlignedBuffer {
    pub fn new(len: usize) -> AlignedBuffer {
        // One byte at least: a zero-size allocation is not allowed.
        let layout = Layout::from_size_align(len.max(1), ALIGNMENT)
            .unwrap_or_else(|_| panic!("buffer of {len} bytes exceeds the address space"));
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        if pointer.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuffer {
            pointer,
            layout,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pointer
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.pointer
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes (zeroed at allocation) owned by self.
        unsafe { std::slice::from_raw_parts(self.pointer, self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.len) }
    }

    /// Copies `values` in as little-endian f32 (the buffer must be large enough).
    pub fn write_f32(&mut self, values: &[f32]) {
        for (chunk, v) in self.as_bytes_mut().chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn read_f32(&self) -> Vec<f32> {
        self.as_bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.pointer, self.layout) };
    }
}

/// A program's code in executable memory. Freed on drop.
pub struct JitProgram {
    module: Option<JITModule>,
    run: RunFn,
    /// Per-step entries, when compiled for profiling.
    steps: Vec<RunFn>,
    workspace_bytes: usize,
    num_inputs: usize,
    num_outputs: usize,
}

// SAFETY: the generated code is reentrant (no mutable globals: see `program`), and the
// module is only touched again on drop.
unsafe impl Send for JitProgram {}
unsafe impl Sync for JitProgram {}

impl JitProgram {
    /// Compiles `program` for `target`, which must run on this machine.
    pub fn new(
        target: &Target,
        options: &IsaOptions,
        program: &Program,
    ) -> Result<JitProgram, EmitError> {
        JitProgram::build(target, options, program, false)
    }

    /// As [`JitProgram::new`], with an entry per step as well ([`JitProgram::run_step`]).
    pub fn with_steps(
        target: &Target,
        options: &IsaOptions,
        program: &Program,
    ) -> Result<JitProgram, EmitError> {
        JitProgram::build(target, options, program, true)
    }

    fn build(
        target: &Target,
        options: &IsaOptions,
        program: &Program,
        per_step: bool,
    ) -> Result<JitProgram, EmitError> {
        let isa = target.isa_with(&IsaOptions {
            emission: Emission::Jit,
            ..*options
        })?;
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let context = kernel_context(&module, target);
        let options = ProgramOptions {
            per_step_entries: per_step,
            far_references: true,
        };
        let ids = define_program(&mut module, &context, program, options)?;
        module
            .finalize_definitions()
            .map_err(|e| EmitError::Module {
                kernel: format!("{}_run", program.name),
                message: format!("{e:?}"),
            })?;
        let code = module.get_finalized_function(ids.run);
        // SAFETY: `code` is the entry of the function `define_program` built with exactly
        // this C signature; it stays mapped until `module` is freed in `drop`.
        let run = unsafe { std::mem::transmute::<*const u8, RunFn>(code) };
        let steps = ids
            .steps
            .iter()
            .map(|&id| {
                let code = module.get_finalized_function(id);
                // SAFETY: as above; every step entry has the run signature.
                unsafe { std::mem::transmute::<*const u8, RunFn>(code) }
            })
            .collect();
        Ok(JitProgram {
            module: Some(module),
            run,
            steps,
            workspace_bytes: program.workspace_bytes,
            num_inputs: program.num_inputs,
            num_outputs: program.num_outputs,
        })
    }

    pub fn workspace_bytes(&self) -> usize {
        self.workspace_bytes
    }

    /// Steps with their own entry (0 unless built by [`JitProgram::with_steps`]).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Runs step `index` alone on the same buffers as [`JitProgram::run`]: running every step
    /// in order is one run. For timing layers.
    pub fn run_step(
        &self,
        index: usize,
        inputs: &[&AlignedBuffer],
        outputs: &mut [&mut AlignedBuffer],
        workspace: &mut AlignedBuffer,
    ) -> Result<(), EmitError> {
        let entry = *self.steps.get(index).ok_or_else(|| EmitError::Module {
            kernel: "run_step".to_string(),
            message: format!("no step {index} (the program has {})", self.steps.len()),
        })?;
        self.call(entry, inputs, outputs, workspace)
    }

    /// Runs once. Every buffer must be 64-byte aligned and as large as the compiled model's
    /// tensors (the caller's contract, as in C); the counts are checked.
    pub fn run(
        &self,
        inputs: &[&AlignedBuffer],
        outputs: &mut [&mut AlignedBuffer],
        workspace: &mut AlignedBuffer,
    ) -> Result<(), EmitError> {
        self.call(self.run, inputs, outputs, workspace)
    }

    fn call(
        &self,
        entry: RunFn,
        inputs: &[&AlignedBuffer],
        outputs: &mut [&mut AlignedBuffer],
        workspace: &mut AlignedBuffer,
    ) -> Result<(), EmitError> {
        let fail = |message: String| EmitError::Module {
            kernel: "run".to_string(),
            message,
        };
        if inputs.len() != self.num_inputs || outputs.len() != self.num_outputs {
            return Err(fail(format!(
                "model takes {} inputs and {} outputs, got {} and {}",
                self.num_inputs,
                self.num_outputs,
                inputs.len(),
                outputs.len()
            )));
        }
        if workspace.len() < self.workspace_bytes {
            return Err(fail(format!(
                "workspace of {} bytes, the model needs {}",
                workspace.len(),
                self.workspace_bytes
            )));
        }
        let input_pointers: Vec<*const u8> = inputs.iter().map(|b| b.as_ptr()).collect();
        let output_pointers: Vec<*mut u8> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: pointer arrays of the right length, buffers alive for the call, the
        // workspace large enough; tensor sizes are the caller's contract.
        let status = unsafe {
            entry(
                input_pointers.as_ptr(),
                output_pointers.as_ptr(),
                workspace.as_mut_ptr(),
            )
        };
        if status != 0 {
            return Err(fail(format!("the compiled model returned {status}")));
        }
        Ok(())
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: nothing holds the code after self is gone.
            unsafe { module.free_memory() };
        }
    }
}

/// JIT-compiles one node's lowering as a program whose inputs and outputs are the node's
/// (`inputs` and `outputs` buffers, by index) and whose workspace is the node's scratch.
/// Benchmarks of single kernels use it; tests use [`run_node`].
pub fn compile_node(
    target: &Target,
    lowering: &NodeLowering,
    inputs: usize,
    outputs: usize,
) -> Result<JitProgram, EmitError> {
    let mut weights = WeightBlob::default();
    let pointer_bytes = 8;
    let packed: Vec<Place> = lowering
        .packed
        .iter()
        .map(|blob| Place::new(Base::Weights, weights.push_f32(blob)))
        .collect();
    let bytes: Vec<Place> = lowering
        .bytes
        .iter()
        .map(|blob| Place::new(Base::Weights, weights.push_bytes(blob)))
        .collect();
    let tables: Vec<Place> = lowering
        .tables
        .iter()
        .map(|t| Place::new(Base::Weights, weights.push_sizes(t, pointer_bytes)))
        .collect();
    let step = Step {
        calls: lowering.calls.clone(),
        inputs: (0..inputs).map(|i| Place::new(Base::Input(i), 0)).collect(),
        outputs: (0..outputs)
            .map(|i| Place::new(Base::Output(i), 0))
            .collect(),
        packed,
        bytes,
        tables,
        scratch: Place::new(Base::Workspace, 0),
    };
    let program = Program {
        name: "node".to_string(),
        num_inputs: inputs,
        num_outputs: outputs,
        steps: vec![step],
        weights: weights.bytes,
        workspace_bytes: lowering.scratch_bytes,
    };
    // As compiled models: the micro-kernels are scheduled by hand (see qcc::compile).
    let options = IsaOptions {
        opt_level: crate::target::OptLevel::None,
        ..IsaOptions::default()
    };
    JitProgram::new(target, &options, &program)
}

/// JIT-compiles one node's lowering and runs it on `inputs` (node inputs, by index), with
/// outputs of `output_lens` f32 elements pre-filled with NaN so unwritten elements show.
/// The kernel families' tests use it against the reference interpreter.
pub fn run_node(
    target: &Target,
    lowering: &NodeLowering,
    inputs: &[&[f32]],
    output_lens: &[usize],
) -> Result<Vec<Vec<f32>>, EmitError> {
    let jit = compile_node(target, lowering, inputs.len(), output_lens.len())?;
    let input_buffers: Vec<AlignedBuffer> = inputs
        .iter()
        .map(|x| {
            let mut buffer = AlignedBuffer::new(x.len() * 4);
            buffer.write_f32(x);
            buffer
        })
        .collect();
    let mut output_buffers: Vec<AlignedBuffer> = output_lens
        .iter()
        .map(|&n| {
            let mut buffer = AlignedBuffer::new(n * 4);
            buffer.write_f32(&vec![f32::NAN; n]);
            buffer
        })
        .collect();
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    let input_refs: Vec<&AlignedBuffer> = input_buffers.iter().collect();
    let mut output_refs: Vec<&mut AlignedBuffer> = output_buffers.iter_mut().collect();
    jit.run(&input_refs, &mut output_refs, &mut workspace)?;
    Ok(output_buffers.iter().map(AlignedBuffer::read_f32).collect())
}

/// As [`run_node`] with raw bytes: inputs and outputs of any element type (int8 kernels).
/// Outputs are pre-filled with `0xA5` so unwritten bytes show.
pub fn run_node_bytes(
    target: &Target,
    lowering: &NodeLowering,
    inputs: &[&[u8]],
    output_bytes: &[usize],
) -> Result<Vec<Vec<u8>>, EmitError> {
    let jit = compile_node(target, lowering, inputs.len(), output_bytes.len())?;
    let input_buffers: Vec<AlignedBuffer> = inputs
        .iter()
        .map(|x| {
            let mut buffer = AlignedBuffer::new(x.len());
            buffer.as_bytes_mut().copy_from_slice(x);
            buffer
        })
        .collect();
    let mut output_buffers: Vec<AlignedBuffer> = output_bytes
        .iter()
        .map(|&n| {
            let mut buffer = AlignedBuffer::new(n);
            buffer.as_bytes_mut().fill(0xA5);
            buffer
        })
        .collect();
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    let input_refs: Vec<&AlignedBuffer> = input_buffers.iter().collect();
    let mut output_refs: Vec<&mut AlignedBuffer> = output_buffers.iter_mut().collect();
    jit.run(&input_refs, &mut output_refs, &mut workspace)?;
    Ok(output_buffers
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .collect())
}
