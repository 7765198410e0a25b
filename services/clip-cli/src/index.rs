//! `clip-retrieval index` and `index_combiner` flags: autofaiss's names for the memory budget and tuning, plus the
//! modalities and the build summary the operator reads. Field order is the order `to_argv` writes flags in.

use crate::values::{parse_bool, ByteSize, Metric, Modality, PartitionIds, Rerank};
use crate::CommandArgs;
use clap::{ArgAction, Args};
use serde::Serialize;
use std::path::PathBuf;

/// `clip-retrieval index`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct IndexArgs {
    /// Folder written by `inference` (img_emb/, text_emb/, metadata/); local or s3://.
    #[arg(long, default_value = "", hide_default_value = true, required_unless_present_any = ["plan", "measure_costs"])]
    pub embeddings_folder: String,
    /// Where to write image.index, text.index, their reports and metadata.arrow; local or s3://.
    #[arg(long, default_value = "", hide_default_value = true, required_unless_present_any = ["plan", "measure_costs"])]
    pub index_folder: String,
    /// Memory the served index may take (e.g. 4G, 512M).
    #[arg(long, default_value_t = ByteSize::gib(4))]
    pub max_index_memory_usage: ByteSize,
    /// Indices to build: image, text or both (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "image,text", value_parser = Modality::parse_item)]
    pub modalities: Vec<Modality>,
    /// Also write a short JSON summary here (index key, bytes, recall@10 per modality; under 4 KiB): the operator
    /// points it at the pod's termination message (`/dev/termination-log`) to report the build in IndexBuild status.
    #[arg(long)]
    pub report_path: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Memory the build may use.
    #[arg(long, default_value_t = ByteSize::gib(16))]
    pub current_memory_available: ByteSize,
    /// Also copy metadata/*.parquet into the index folder.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub copy_metadata: bool,
    /// Sub-folder of image embeddings.
    #[arg(long, default_value = "img_emb")]
    pub image_subfolder: String,
    /// Sub-folder of text embeddings.
    #[arg(long, default_value = "text_emb")]
    pub text_subfolder: String,
    /// faiss threads (default: all cores).
    #[arg(long)]
    pub nb_cores: Option<usize>,
    /// Distance: ip (cosine on normalised embeddings) or l2.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Metric::Ip)]
    pub metric: Metric,
    /// Single-query latency budget for tuning, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub max_index_query_time_ms: f64,
    /// Recall@10 the tuned index should reach; a warning says when it does not.
    #[arg(long, default_value_t = 0.0)]
    pub min_recall: f64,
    /// Force a faiss factory string (autofaiss's index_key), e.g. "IVF256,SQ8".
    #[arg(long)]
    pub index_key: Option<String>,
    /// Reuse the trained indices of this index folder (written by --train_only, or any part's) so that parts can be
    /// merged by index_combiner or served as shards.
    #[arg(long)]
    pub trained_index_folder: Option<PathBuf>,
    /// Train only: write the trained, empty indices (and their reports) to --index_folder, from a sample drawn
    /// across every partition; the first stage of a distributed build (then `--trained_index_folder` parts).
    #[arg(long, conflicts_with_all = ["trained_index_folder", "append", "partition_ids"])]
    pub train_only: bool,
    /// Index only these embedding partitions (`img_emb_N.npy` numbers, e.g. `0-9,12`) and their metadata: a part
    /// folder whose ids start at 0, for index_combiner or a shard (parts in partition order give the single
    /// build's ids).
    #[arg(long)]
    pub partition_ids: Option<PartitionIds>,
    /// auto: a compressed index also keeps its vectors at float16 on disk (`image_vectors.npy`, not counted in
    /// --max_index_memory_usage) and re-scores `k * k_factor` candidates exactly; off: the compressed index alone.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Rerank::Auto)]
    pub rerank: Rerank,
    /// Add the embedding partitions the existing index folder does not hold yet (its image.json lists those it
    /// does), with the folder's own training; a local index folder.
    #[arg(long)]
    pub append: bool,
    /// Build nothing: print the structure a build of --count vectors of --dim would choose within
    /// --max_index_memory_usage, its resident and disk bytes, build time and peak RSS, extrapolated from measured
    /// machine costs (--costs).
    #[arg(long, requires_all = ["count", "dim"], conflicts_with = "measure_costs")]
    pub plan: bool,
    /// Vectors to plan for (--plan), or to measure with (--measure_costs, default 100000).
    #[arg(long)]
    pub count: Option<u64>,
    /// Dimension to plan for (--plan), or to measure at (--measure_costs, default 512).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Machine costs --plan extrapolates from (a file written by --measure_costs; default: the ones measured for
    /// the README, bench/index_costs.json).
    #[arg(long)]
    pub costs: Option<PathBuf>,
    /// Build nothing: time the faiss operations and I/O of a build on this machine (about a minute) and write the
    /// costs --plan uses to this file.
    #[arg(long)]
    pub measure_costs: Option<PathBuf>,
}

impl CommandArgs for IndexArgs {
    const NAME: &'static str = "index";
}

impl IndexArgs {
    /// Indexes `embeddings_folder` into `index_folder`, every other flag at its default.
    pub fn new(embeddings_folder: &str, index_folder: &str) -> Self {
        crate::parse_known(&[
            &format!("--embeddings_folder={embeddings_folder}"),
            &format!("--index_folder={index_folder}"),
        ])
    }
}

/// `clip-retrieval index_combiner`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct IndexCombinerArgs {
    /// Index folders of the parts, in id order (comma-separated, local).
    #[arg(long, value_delimiter = ',', required_unless_present = "input_folder", conflicts_with = "input_folder")]
    pub input_folders: Vec<String>,
    /// clip-retrieval's input: a folder of IVF `*.index` blocks (merged in name order, ids kept as stored) into
    /// `output_folder/populated.index` + `merged_index.ivfdata`.
    #[arg(long)]
    pub input_folder: Option<String>,
    /// Where the merged index folder goes (local).
    #[arg(long)]
    pub output_folder: String,
}

impl CommandArgs for IndexCombinerArgs {
    const NAME: &'static str = "index_combiner";
}

/// `clip-retrieval prune_generations`: deletes an index root's old generation folders (`g<N>/`, `g<N>-parts/`).
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct PruneGenerationsArgs {
    /// The index root holding `g<N>/` folders (an IndexBuild's `output`); local or s3://.
    #[arg(long)]
    pub index_root: String,
    /// Generations to keep (comma-separated numbers); every older generation not listed is deleted, newer ones
    /// (builds in progress) are left.
    #[arg(long, value_delimiter = ',', required = true)]
    pub keep_generations: Vec<u64>,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl CommandArgs for PruneGenerationsArgs {
    const NAME: &'static str = "prune_generations";
}

/// `clip-retrieval parquet_to_arrow`: clip-retrieval's metadata conversion for `back` (`metadata/*.arrow`).
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct ParquetToArrowArgs {
    /// Folder of `*.parquet` metadata files (read in sorted name order; ids follow that order).
    #[arg(long)]
    pub parquet_folder: String,
    /// Where the `.arrow` file goes (put it in the index folder's `metadata/` for `back`).
    #[arg(long)]
    pub output_arrow_folder: String,
    /// Columns kept, as clip-retrieval takes them (`'["url","caption"]'`) or comma-separated; all when absent.
    #[arg(long)]
    pub columns_to_return: Option<crate::values::ColumnList>,
}

impl CommandArgs for ParquetToArrowArgs {
    const NAME: &'static str = "parquet_to_arrow";
}
