//! `qcc`: the command-line interface. Each subcommand is a thin layer over the library:
//! `onnx` (import/export), `zoo` (reference architectures), `driver` (load and run) and
//! `inspect` (per-node facts).

use clap::{Parser, Subcommand, ValueEnum};
use qcc::driver::{self, DriverError, InputSource};
use qcc::{inspect, npy, onnx, zoo};
use std::path::PathBuf;
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
    },
    /// Print per-node op, shapes, parameters and FLOPs, with totals.
    Inspect {
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Binds a symbolic batch dimension.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
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
        } => {
            let g = driver::load_model(&model, batch)?;
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
        } => {
            let g = driver::load_model(&model, batch)?;
            match format {
                Format::Qir => print!(
                    "{}",
                    qcc_ir::text::print_graph(
                        &g,
                        &qcc_ir::text::PrintOptions {
                            elide_constants_over: Some(16)
                        }
                    )
                ),
                Format::Text => print!("{}", inspect::format_table(&g, &inspect::graph_stats(&g)?)),
                Format::Json => {
                    let json = inspect::to_json(&g, &inspect::graph_stats(&g)?);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json)
                            .map_err(|e| DriverError::Other(e.to_string()))?
                    );
                }
            }
            Ok(())
        }
    }
}
