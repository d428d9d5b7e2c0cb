//! `qcc`: the command-line interface. Each subcommand is a thin layer over the library:
//! `onnx` (import/export), `zoo` (reference architectures), `driver` (load and run) and
//! `inspect` (per-node facts, `--after-passes` through the `qcc_passes` pipeline, `--dot`).

use clap::{Parser, Subcommand, ValueEnum};
use qcc::driver::{self, DriverError, InputSource};
use qcc::{inspect, npy, onnx, zoo};
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
        /// Run the reference interpreter. It is the only engine until compiled targets land,
        /// so this is currently the default too.
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
        /// The target whose cost model the optimizer uses (see `qcc targets`). Compiled
        /// execution on targets comes with the back end; until then the graph is interpreted.
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
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
            reference: _,
            seed,
            batch,
            after_passes,
            target,
        } => {
            let target = target.as_deref().map(driver::parse_target).transpose()?;
            let mut g = driver::load_model(&model, batch)?;
            if after_passes {
                let opts = driver::pipeline_options(target.as_ref());
                let reports = driver::optimize(&mut g, &opts, None, None)?;
                eprintln!("cost model: {}", opts.egraph.cost_model.name);
                eprint!("{}", inspect::format_pass_report(&reports));
            }
            let files = driver::parse_input_specs(&inputs)?;
            let prepared = driver::prepare_inputs(&g, &files, seed)?;
            for (name, t, source) in &prepared {
                if let InputSource::Random { seed } = source {
                    eprintln!("input '{name}': no --input given, using seeded random data {} (seed {seed})", t.ty());
                }
            }
            let outputs = driver::run_reference(&g, &prepared)?;
            std::fs::create_dir_all(&output_dir)
                .map_err(|e| DriverError::Other(format!("{}: {e}", output_dir.display())))?;
            for (name, t) in outputs {
                let path = output_dir.join(npy::file_name_for(&name));
                npy::write(&path, &t)?;
                eprintln!("output '{name}': {} -> {}", t.ty(), path.display());
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
        Command::Targets => {
            for t in qcc_codegen::Target::known_targets() {
                println!("{:24} {}", t.name, t.description);
                println!("{:24} features: {}", "", t.features);
            }
            Ok(())
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
