//! `clip-retrieval`: the command line. A thin shell: parse flags, set up logging and progress, call the engine.

mod args;
mod back;
mod commands;
mod filter;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CLIP_RETRIEVAL_LOG").unwrap_or_else(|_| "info,ort=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
