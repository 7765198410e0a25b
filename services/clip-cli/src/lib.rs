//! The typed command line of `clip-retrieval`: one clap struct per subcommand with typed values and their defaults
//! (the only place they are written), the argv normalisation that accepts `--flag-name` for `--flag_name`, and the
//! rendering of typed args back into argv. The CLI binary parses with it; the operator renders its pods' command
//! lines with it. It depends on no engine crate (no CLIP, faiss or ONNX Runtime).

pub mod argv;
mod back;
mod dataset;
mod end2end;
mod evaluate;
mod filter;
mod index;
mod inference;
mod model;
pub mod values;

pub use back::BackArgs;
pub use dataset::SampleDatasetArgs;
pub use end2end::End2endArgs;
pub use evaluate::EvaluateArgs;
pub use filter::FilterArgs;
pub use index::{IndexArgs, IndexCombinerArgs, ParquetToArrowArgs, PruneGenerationsArgs};
pub use inference::InferenceArgs;
pub use model::ModelArgs;
pub use values::{
    ByteSize, ColumnList, Device, DistributionStrategy, EmbeddingDtype, InputFormat, Metric, Modality, PartitionIds,
    Precision, QueryType, Seconds,
};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use std::ffi::OsString;

/// Compute CLIP embeddings, build indices and serve them.
#[derive(Debug, Parser, PartialEq)]
#[command(name = "clip-retrieval", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand, PartialEq)]
pub enum Command {
    /// Images and captions -> embeddings (img_emb/, text_emb/) and metadata/ partitions.
    Inference(Box<InferenceArgs>),
    /// Render the synthetic captioned dataset (coloured shapes) as files, webdataset shards or parquet.
    #[command(name = "sample-dataset", alias = "sample_dataset")]
    SampleDataset(SampleDatasetArgs),
    /// Embeddings -> faiss indices (image.index, text.index) under a memory budget, plus the metadata row store.
    Index(Box<IndexArgs>),
    /// Merge index folders built on consecutive shards into one.
    #[command(name = "index_combiner", alias = "index-combiner")]
    IndexCombiner(IndexCombinerArgs),
    /// Metadata parquet files -> Arrow IPC files `back` serves from `metadata/` (clip-retrieval's command).
    #[command(name = "parquet_to_arrow", alias = "parquet-to-arrow")]
    ParquetToArrow(ParquetToArrowArgs),
    /// Delete an index root's old generation folders (g<N>/), keeping the ones listed and any newer.
    #[command(name = "prune_generations", alias = "prune-generations")]
    PruneGenerations(PruneGenerationsArgs),
    /// Query an index and copy the matching images out, with results.parquet.
    Filter(Box<FilterArgs>),
    /// Serve indices over HTTP: clip-retrieval's knn service and the web UI.
    Back(Box<BackArgs>),
    /// inference -> index -> back on one dataset (the synthetic sample when none is given).
    End2end(Box<End2endArgs>),
    /// Measure how far a cheaper precision (int8) moves a model's embeddings and retrieval from fp32, on a dataset.
    Evaluate(Box<EvaluateArgs>),
}

impl Cli {
    /// Parses a full argv (program name first), accepting kebab-case flag spellings.
    pub fn try_parse_normalized<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self::try_parse_from(argv::normalize(argv))
    }
}

/// The clap command of the whole CLI (for help and introspection).
pub fn command() -> clap::Command {
    Cli::command()
}

/// One subcommand's args: its name on the command line, parseable and renderable.
pub trait CommandArgs: clap::Args + FromArgMatches + Serialize + Sized {
    /// The subcommand as users type it.
    const NAME: &'static str;

    /// Parses this subcommand's flags alone (no program or subcommand name), kebab-case accepted.
    fn parse_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv = [OsString::from("clip-retrieval"), OsString::from(Self::NAME)]
            .into_iter()
            .chain(flags.into_iter().map(Into::into));
        let normalized = argv::normalize(argv);
        let matches = Self::augment_args(clap::Command::new(Self::NAME)).try_get_matches_from(&normalized[1..])?;
        Self::from_arg_matches(&matches)
    }

    /// The argv that runs this subcommand with these args (subcommand name first; no program name).
    fn to_argv(&self) -> Vec<String> {
        argv::render(self, &[])
    }

    /// Like `to_argv`, with the `pinned` flags written even at their default value.
    fn to_argv_pinning(&self, pinned: &[&str]) -> Vec<String> {
        argv::render(self, pinned)
    }
}

/// Parses flags that the caller built and knows to be valid (the required flags of a constructor, as `--flag=value`
/// so that any value, even one starting with `-`, is read as a value).
fn parse_known<T: CommandArgs>(flags: &[&str]) -> T {
    T::parse_flags(flags).unwrap_or_else(|e| panic!("{} {flags:?} must parse: {e}", T::NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_args_name_is_its_subcommand() {
        let root = command();
        for name in [
            InferenceArgs::NAME,
            SampleDatasetArgs::NAME,
            IndexArgs::NAME,
            IndexCombinerArgs::NAME,
            PruneGenerationsArgs::NAME,
            FilterArgs::NAME,
            BackArgs::NAME,
            End2endArgs::NAME,
            EvaluateArgs::NAME,
        ] {
            assert_eq!(root.find_subcommand(name).map(|c| c.get_name()), Some(name));
        }
    }
}
