//! `qcc`: the command-line interface. Each subcommand is a thin layer over the library:
//! `onnx` (import/export), `zoo` (reference architectures), `driver` (load and run) and
//! `inspect` (per-node facts, `--after-passes` through the `qcc_passes` pipeline, `--dot`).

use clap::{Parser, Subcommand, ValueEnum};
use qcc::driver::{self, DriverError, InputSource};
use qcc::quant_args::QuantArgs;
use qcc::{bench, compile, inspect, npy, onnx, zoo};
use qcc_ir::Graph;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "qcc",
    version,
    about = "An ahead-of-time compiler for neural networks (ONNX in, native code out)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a standard architecture with seeded random weights as an ONNX model.
    Zoo {
        /// Model name; see --list.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// Where to write the .onnx file.
        #[arg(short, long, required_unless_present = "list")]
        output: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fixed batch size of the model's input.
        #[arg(long, default_value_t = 1, conflicts_with = "dynamic_batch")]
        batch: usize,
        /// Declare the batch dimension symbolic ("N") instead of fixed.
        #[arg(long)]
        dynamic_batch: bool,
        /// List the models and exit.
        #[arg(long)]
        list: bool,
    },
    /// Run a model and write each output as DIR/<output name>.npy.
    Run {
        model: PathBuf,
        /// An input as NAME=FILE.npy (repeatable); inputs not given get seeded random data.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Also write the inputs used (given or random) as DIR/<input name>.npy.
        #[arg(long, value_name = "DIR")]
        save_inputs: Option<PathBuf>,
        /// Run the reference interpreter even when --target is given (the default without
        /// --target).
        #[arg(long)]
        reference: bool,
        /// Seed for random inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Run the optimized graph (the standard pass pipeline applied first).
        #[arg(long)]
        after_passes: bool,
        /// Compile for TARGET and run the compiled code in process (JIT; the target must run
        /// on this machine, e.g. native-fp32). See `qcc targets`.
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Compile a model into DIR/NAME.o (ELF, position independent, weights inside) and
    /// DIR/NAME.h (the C API: NAME_run, NAME_workspace_size, shapes).
    Compile {
        model: PathBuf,
        /// See `qcc targets`.
        #[arg(long, value_name = "TARGET")]
        target: String,
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Prefix of the C symbols and file names (default: the model file's name).
        #[arg(long)]
        name: Option<String>,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print compile times, the memory plan and each layer's kernel to stdout.
        #[arg(long)]
        report: bool,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Compile for a target that runs here and measure latency (p50/p90/p99) and throughput.
    Bench {
        model: PathBuf,
        #[arg(long, value_name = "TARGET", default_value = "native-fp32")]
        target: String,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Threads running the model concurrently, each with its own workspace.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Measured runs per thread.
        #[arg(long, conflicts_with = "seconds")]
        iterations: Option<usize>,
        /// Measure for this many seconds (default 5 when --iterations is not given).
        #[arg(long)]
        seconds: Option<f64>,
        /// Unmeasured runs per thread first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print the result as JSON on stdout (for scripts).
        #[arg(long)]
        json: bool,
        /// Print compile times and each layer's kernel to stderr first.
        #[arg(long)]
        report: bool,
        /// Also time every layer alone (median of --layer-repeats runs) and print the
        /// slowest --top layers with their GFLOP/s (all layers with --json, as "layers").
        #[arg(long)]
        layers: bool,
        #[arg(long, default_value_t = 20)]
        layer_repeats: usize,
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Collect per-tensor statistics (min/max, histograms; per-channel weight ranges) over
    /// calibration samples, for int8 quantization. The file stores statistics, not scales.
    Calibrate {
        model: PathBuf,
        /// A float32 .npy whose first axis is the sample, a directory of .npy files (one
        /// sample each), or a .npz with one such array per model input, named after it.
        #[arg(long, value_name = "PATH", required_unless_present = "synthetic")]
        data: Option<PathBuf>,
        /// Use N seeded random inputs instead of data (accuracy claims need real data).
        #[arg(long, value_name = "N", conflicts_with = "data")]
        synthetic: Option<usize>,
        /// Read at most N samples.
        #[arg(long, value_name = "N")]
        samples: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// What computes the tensors: the model compiled for native-fp32 (falls back to the
        /// interpreter, with a warning, when it does not compile) or the reference interpreter.
        #[arg(
            long,
            value_enum,
            value_name = "ENGINE",
            default_value_t = qcc::calibrate::CalibrationEngine::Compiled
        )]
        calibrate_with: qcc::calibrate::CalibrationEngine,
    },
    /// Quantize a model as an int8 target would and write the quantized graph as an ONNX QDQ
    /// model (QuantizeLinear/DequantizeLinear around standard ops, opset 13), which
    /// onnxruntime and other engines run.
    Quantize {
        model: PathBuf,
        /// Where to write the QDQ .onnx file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The int8 target whose quantization to reproduce (it picks the default profile).
        #[arg(long, value_name = "TARGET", default_value = qcc::quantize_export::DEFAULT_TARGET)]
        target: String,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Print per-node op, shapes, parameters and FLOPs, with totals.
    Inspect {
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Run the standard pass pipeline first: report op counts before → after and each
        /// pass's time, then describe the optimized graph.
        #[arg(long)]
        after_passes: bool,
        /// Print the graph (.qir) after the named pass to stdout, instead of the report
        /// (which goes to stderr). Implies --after-passes.
        #[arg(long, value_name = "PASS", conflicts_with = "format")]
        dump_after: Option<String>,
        /// Write the graph as Graphviz DOT (after passes when they run).
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
        /// The target whose cost model the optimizer uses (see `qcc targets`).
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
    },
    /// Run fp32 and int8 side by side: per-layer SQNR and cosine (interpreter, first
    /// --layer-samples samples), then top-1/top-5 agreement, cosine and mean absolute error
    /// of the outputs (compiled, every sample).
    Compare {
        model: PathBuf,
        /// An int8 target that runs here (e.g. x86_64-int8); fp32 runs as native-fp32.
        #[arg(long, value_name = "TARGET")]
        target: String,
        #[command(flatten)]
        quant: QuantArgs,
        /// A float32 .npy whose first axis is the sample, a directory of .npy files, or a .npz
        /// with one such array per model input.
        #[arg(long, value_name = "PATH", required_unless_present = "synthetic")]
        data: Option<PathBuf>,
        /// Use N seeded random inputs instead of data (says little about real accuracy).
        #[arg(long, value_name = "N", conflicts_with = "data")]
        synthetic: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use at most N samples for the output metrics.
        #[arg(long, value_name = "N")]
        samples: Option<usize>,
        /// Per-layer statistics on the first K samples (the interpreter is slow).
        #[arg(long, value_name = "K", default_value_t = 4)]
        layer_samples: usize,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print the result as JSON on stdout (for scripts).
        #[arg(long)]
        json: bool,
        /// Also plot SQNR per layer into FILE (SVG).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// List the compilation targets and their ISA features.
    Targets,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// A table for people.
    Text,
    /// The graph in qcc's .qir text form.
    Qir,
    /// The same facts as `text`, as JSON for scripts.
    Json,
}

/// `.qir` for people: weights elided, small constants in full.
const QIR_PRINT: qcc_ir::text::PrintOptions = qcc_ir::text::PrintOptions {
    elide_constants_over: Some(16),
};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcc: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), DriverError> {
    match cli.command {
        Command::Zoo { list: true, .. } => {
            for (name, about) in zoo::MODELS {
                println!("{name:20} {about}");
            }
            Ok(())
        }
        Command::Zoo {
            name,
            output,
            seed,
            batch,
            dynamic_batch,
            list: false,
        } => {
            let (Some(name), Some(output)) = (name, output) else {
                unreachable!("clap requires NAME and -o without --list")
            };
            let g = zoo::build(&name, &zoo::ZooOptions { seed, batch })
                .map_err(|e| DriverError::Other(e.to_string()))?;
            let opts = onnx::export::ExportOptions {
                dynamic_batch,
                ..Default::default()
            };
            onnx::export::write_model(&g, &opts, &output)
                .map_err(|e| DriverError::Other(e.to_string()))?;
            eprintln!("wrote {name} (seed {seed}) to {}", output.display());
            Ok(())
        }
        Command::Run {
            model,
            inputs,
            output_dir,
            save_inputs,
            reference,
            seed,
            batch,
            after_passes,
            target,
            quant,
        } => {
            let target = target.as_deref().map(driver::parse_target).transpose()?;
            let files = driver::parse_input_specs(&inputs)?;
            let outputs = match target {
                Some(target) if !reference => {
                    let name = default_name(&model);
                    let mut lowered = compile::lower_model(&model, &target, batch, &name, &quant)?;
                    let jit = compile::JitModel::new(&mut lowered)?;
                    eprintln!("{} ({})", lowered.times.summary(), target.name());
                    let prepared = driver::prepare_inputs(&lowered.graph, &files, seed)?;
                    report_random_inputs(&prepared);
                    save_input_files(save_inputs.as_deref(), &prepared)?;
                    let tensors: Vec<&qcc_ir::Tensor> =
                        prepared.iter().map(|(_, t, _)| t).collect();
                    jit.run(&tensors)?
                }
                target => {
                    // An int8 target's reference is the interpreter on the quantized graph.
                    let quantize = match &target {
                        Some(t) => quant.options(&model, t)?,
                        None => None,
                    };
                    let mut g = driver::load_model(&model, batch)?;
                    if after_passes || quantize.is_some() {
                        let mut opts = driver::pipeline_options(target.as_ref());
                        opts.quantize = quantize;
                        let reports = driver::optimize(&mut g, &opts, None, None)?;
                        eprintln!("cost model: {}", opts.egraph.cost_model.name);
                        eprint!("{}", inspect::format_pass_report(&reports));
                    }
                    let prepared = driver::prepare_inputs(&g, &files, seed)?;
                    report_random_inputs(&prepared);
                    save_input_files(save_inputs.as_deref(), &prepared)?;
                    driver::run_reference(&g, &prepared)?
                }
            };
            std::fs::create_dir_all(&output_dir)
                .map_err(|e| DriverError::Other(format!("{}: {e}", output_dir.display())))?;
            for (name, t) in outputs {
                let path = output_dir.join(npy::file_name_for(&name));
                npy::write(&path, &t)?;
                eprintln!("output '{name}': {} -> {}", t.ty(), path.display());
            }
            Ok(())
        }
        Command::Compile {
            model,
            target,
            output,
            name,
            batch,
            report,
            quant,
        } => {
            let target = driver::parse_target(&target)?;
            let name = match name {
                Some(n) if qcc_codegen::model::is_c_identifier(&n) => n,
                Some(n) => {
                    return Err(DriverError::Other(format!(
                        "--name {n:?} is not a C identifier (letters, digits, _; not starting \
                         with a digit)"
                    )))
                }
                None => default_name(&model),
            };
            let mut lowered = compile::lower_model(&model, &target, batch, &name, &quant)?;
            let files = compile::write_object(&mut lowered, &model, &output)?;
            if report {
                print!("{}", compile::report(&lowered));
            } else {
                eprintln!("{}", lowered.times.summary());
            }
            eprintln!(
                "wrote {} and {} ({}, workspace {} bytes)",
                files.object.display(),
                files.header.display(),
                target.name(),
                lowered.model.program.workspace_bytes
            );
            Ok(())
        }
        Command::Bench {
            model,
            target,
            batch,
            threads,
            iterations,
            seconds,
            warmup,
            json,
            report,
            layers,
            layer_repeats,
            top,
            quant,
        } => {
            let target = driver::parse_target(&target)?;
            let mut lowered =
                compile::lower_model(&model, &target, batch, &default_name(&model), &quant)?;
            let jit = if layers {
                compile::JitModel::with_layer_entries(&mut lowered)?
            } else {
                compile::JitModel::new(&mut lowered)?
            };
            if report {
                eprint!("{}", compile::report(&lowered));
            }
            let prepared = driver::prepare_inputs(&lowered.graph, &[], 0)?;
            let tensors: Vec<&qcc_ir::Tensor> = prepared.iter().map(|(_, t, _)| t).collect();
            let buffers = jit.input_buffers(&tensors)?;
            let stop = match (iterations, seconds) {
                (Some(n), _) => bench::StopAfter::Iterations(n.max(1)),
                (None, Some(s)) => bench::StopAfter::Seconds(s),
                (None, None) => bench::StopAfter::Seconds(5.0),
            };
            let result = bench::bench(
                &jit,
                &buffers,
                &bench::BenchOptions {
                    threads,
                    stop,
                    warmup,
                    batch,
                },
            )?;
            let profile = if layers {
                Some(bench::profile_layers(
                    &jit,
                    &lowered.model.layers,
                    &buffers,
                    layer_repeats,
                )?)
            } else {
                None
            };
            if json {
                let mut value = result.to_json();
                if let Some(profile) = &profile {
                    value["layers"] = bench::layer_profile_json(profile);
                }
                value["model"] = serde_json::json!(model.display().to_string());
                value["target"] = serde_json::json!(target.name());
                value["compile_ms"] = serde_json::json!(lowered.times.total().as_secs_f64() * 1e3);
                println!("{value}");
            } else {
                println!(
                    "{} on {} ({})",
                    model.display(),
                    target.name(),
                    lowered.times.summary()
                );
                println!("{}", result.summary());
                if let Some(profile) = &profile {
                    print!("{}", bench::format_layer_profile(profile, top));
                }
            }
            Ok(())
        }
        Command::Inspect {
            model,
            format,
            batch,
            after_passes,
            dump_after,
            dot,
            target,
        } => {
            let target = target.as_deref().map(driver::parse_target).transpose()?;
            let opts = driver::pipeline_options(target.as_ref());
            inspect_command(&model, format, batch, after_passes, dump_after, dot, &opts)
        }
        Command::Calibrate {
            model,
            data,
            synthetic,
            samples,
            seed,
            output,
            calibrate_with,
        } => {
            let source = match (data, synthetic) {
                (Some(path), _) => qcc::calibration_data::DataSource::Path(path),
                (None, Some(count)) => {
                    eprintln!(
                        "qcc: warning: calibrating on {count} seeded random inputs: the \
                         statistics say nothing about real data; accuracy claims need --data"
                    );
                    qcc::calibration_data::DataSource::Synthetic { count, seed }
                }
                (None, None) => unreachable!("clap requires --data or --synthetic"),
            };
            let g = driver::load_model(&model, 1)?;
            let stats =
                qcc::calibrate::calibrate_with(&model, &g, &source, samples, true, calibrate_with)?;
            let text = stats
                .to_json()
                .map_err(|e| DriverError::Other(e.to_string()))?;
            std::fs::write(&output, text)
                .map_err(|e| DriverError::Other(format!("{}: {e}", output.display())))?;
            eprintln!(
                "wrote statistics of {} tensors and {} weights over {} samples to {}",
                stats.tensors.len(),
                stats.weights.len(),
                stats.samples,
                output.display()
            );
            Ok(())
        }
        Command::Quantize {
            model,
            output,
            target,
            quant,
        } => {
            let target = qcc::quantize_export::int8_target(Some(&target))?;
            let quantized = qcc::quantize_export::quantize_model(&model, &target, &quant, &output)?;
            for r in &quantized.reports {
                for note in &r.notes {
                    eprintln!("qcc: warning: pass '{}': {note}", r.pass);
                }
            }
            for line in qcc::quantize_export::describe_outputs(&quantized.graph) {
                eprintln!("{line}");
            }
            eprintln!(
                "wrote the QDQ model ({} nodes, profile {}, opset {}) to {}",
                quantized.graph.node_count(),
                quant.profile(&target)?.name,
                qcc::quantize_export::QDQ_OPSET,
                output.display()
            );
            Ok(())
        }
        Command::Compare {
            model,
            target,
            quant,
            data,
            synthetic,
            seed,
            samples,
            layer_samples,
            batch,
            json,
            svg,
        } => qcc::compare::run_command(&qcc::compare::CompareRequest {
            model,
            target,
            quant,
            data,
            synthetic,
            seed,
            samples,
            layer_samples,
            batch,
            json,
            svg,
        }),
        Command::Targets => {
            for t in qcc_codegen::Target::known_targets() {
                println!("{:24} {}", t.name, t.description);
                println!("{:24} features: {}", "", t.features);
            }
            Ok(())
        }
    }
}

/// The symbol prefix for a model file: its stem as a C identifier.
fn default_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    qcc_codegen::model::c_identifier(&stem)
}

fn save_input_files(
    dir: Option<&Path>,
    prepared: &[(String, qcc_ir::Tensor, InputSource)],
) -> Result<(), DriverError> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir)
        .map_err(|e| DriverError::Other(format!("{}: {e}", dir.display())))?;
    for (name, t, _) in prepared {
        npy::write(&dir.join(npy::file_name_for(name)), t)?;
    }
    Ok(())
}

fn report_random_inputs(prepared: &[(String, qcc_ir::Tensor, InputSource)]) {
    for (name, t, source) in prepared {
        if let InputSource::Random { seed } = source {
            eprintln!(
                "input '{name}': no --input given, using seeded random data {} (seed {seed})",
                t.ty()
            );
        }
    }
}

/// `qcc inspect`: the graph as imported, or after the pass pipeline.
fn inspect_command(
    model: &Path,
    format: Format,
    batch: usize,
    after_passes: bool,
    dump_after: Option<String>,
    dot: Option<PathBuf>,
    opts: &qcc_passes::PipelineOptions,
) -> Result<(), DriverError> {
    let mut g = driver::load_model(model, batch)?;
    let before = inspect::graph_stats(&g)?;
    let mut reports = None;
    if after_passes || dump_after.is_some() {
        let dump: Option<qcc_passes::DumpFn> = match &dump_after {
            Some(_) => Some(Box::new(|pass: &str, graph: &Graph| {
                println!("; after pass {pass}");
                print!("{}", qcc_ir::text::print_graph(graph, &QIR_PRINT));
            })),
            None => None,
        };
        reports = Some(driver::optimize(&mut g, opts, dump_after.as_deref(), dump)?);
        eprintln!("cost model: {}", opts.egraph.cost_model.name);
    }
    if let Some(path) = &dot {
        let text = qcc::dot::to_dot(&g)?;
        std::fs::write(path, text)
            .map_err(|e| DriverError::Other(format!("{}: {e}", path.display())))?;
        eprintln!("wrote the graph as DOT to {}", path.display());
    }
    let stats = inspect::graph_stats(&g)?;
    if dump_after.is_some() {
        // stdout holds only the dump, so it can be redirected into a .qir file.
        if let Some(r) = &reports {
            eprint!("{}", inspect::format_pass_report(r));
        }
        eprint!(
            "{}",
            inspect::format_op_count_changes(&before.op_counts, &stats.op_counts)
        );
        return Ok(());
    }
    match format {
        Format::Qir => print!("{}", qcc_ir::text::print_graph(&g, &QIR_PRINT)),
        Format::Text => {
            print!("{}", inspect::format_table(&g, &stats));
            if let Some(r) = &reports {
                println!();
                print!("{}", inspect::format_pass_report(r));
                print!(
                    "{}",
                    inspect::format_op_count_changes(&before.op_counts, &stats.op_counts)
                );
            }
        }
        Format::Json => {
            let mut json = inspect::to_json(&g, &stats);
            if let (Some(r), Some(obj)) = (&reports, json.as_object_mut()) {
                obj.insert(
                    "op_counts_before".into(),
                    serde_json::json!(before.op_counts),
                );
                obj.insert("passes".into(), inspect::pass_report_json(r));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json)
                    .map_err(|e| DriverError::Other(e.to_string()))?
            );
        }
    }
    Ok(())
}
