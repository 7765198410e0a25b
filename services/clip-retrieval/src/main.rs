//! `clip-retrieval`: the command line. A thin shell: flags parsed once into clip-cli's typed args, logging set up,
//! then one module per subcommand converts its args into engine options and calls one library entry point.

mod back;
mod convert;
mod end2end;
mod evaluate;
mod filter;
mod index;
mod inference;
mod sample_dataset;

use clip_cli::{Cli, Command};
use clip_data::Storage;

fn main() {
    let cli = Cli::try_parse_normalized(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CLIP_RETRIEVAL_LOG").unwrap_or_else(|_| "info,ort=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    // The one storage handle of the process: it owns the S3 client (built on first s3:// use).
    let storage = Storage::from_env();
    if let Err(e) = run(&storage, cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs one subcommand.
fn run(storage: &Storage, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inference(a) => inference::run(storage, *a),
        Command::SampleDataset(a) => sample_dataset::run(storage, a),
        Command::Index(a) => index::run(storage, *a),
        Command::IndexCombiner(a) => index::combine(storage, a),
        Command::ParquetToArrow(a) => index::parquet_to_arrow(storage, a),
        Command::PruneGenerations(a) => index::prune_generations(storage, a),
        Command::Filter(a) => filter::run(storage, *a),
        Command::Back(a) => back::run(storage, *a),
        Command::End2end(a) => end2end::run(storage, *a),
        Command::Evaluate(a) => evaluate::run(storage, *a),
    }
}
