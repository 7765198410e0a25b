//! The three custom resources, group `clip-retrieval.io`, version `v1alpha1`: spec structs (what users write, with
//! bounds and enums the API server enforces) and status structs (what the operator reports).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// core/v1 types the pod template takes as they are.
pub mod k8s {
    pub use k8s_openapi::api::core::v1::{
        Affinity, LocalObjectReference, PodSecurityContext, SecurityContext, TopologySpreadConstraint, Volume,
        VolumeMount,
    };
}

/// The CLI's value types, shared so that a spec value is exactly a flag value.
pub use clip_cli::{EmbeddingDtype, InputFormat, Metric, Modality as IndexModality, Precision};

/// API group of every resource.
pub const GROUP: &str = "clip-retrieval.io";

/// Compute resources of the pods the operator starts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodResources {
    /// GPUs per pod (`nvidia.com/gpu`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpu: u32,
    /// CPU request and limit, in Kubernetes quantity syntax (`2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|[eE][0-9]+)?$"))]
    pub cpu: Option<String>,
    /// Memory request and limit, a Kubernetes quantity: `16Gi` is 16 x 2^30 bytes, `16G` 16 x 10^9 (the pods'
    /// flags get the exact bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][0-9]+)?$"))]
    pub memory: Option<String>,
}

/// A toleration copied to the pods (the fields of core/v1 Toleration).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Exists or Equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// What a cluster requires of pods, merged onto every pod the operator builds for the resource (the fields of
/// core/v1 PodSpec and Container they name, validated by the CRD's schema). Security: pods run restricted by
/// default (README "Running in production"); `securityContext` / `containerSecurityContext` replace those defaults
/// field by field, e.g. `runAsUser` where a cluster wants a fixed UID.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels added to the pods (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// ServiceAccount of the pods (cloud S3 credentials through IRSA or Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Mount the ServiceAccount's API token (default false: no child calls the Kubernetes API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Secrets to pull the image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<k8s::LocalObjectReference>,
    /// Volumes of the pods (a dataset or model cache on a PVC, a CA bundle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<k8s::Volume>,
    /// Where the container mounts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<k8s::VolumeMount>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<k8s::Affinity>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// RuntimeClass of the pods (e.g. `nvidia` for GPU runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// How the pods spread over zones or nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<k8s::TopologySpreadConstraint>,
    /// Pod security context fields replacing the restricted defaults (set fields only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<k8s::PodSecurityContext>,
    /// Container security context fields replacing the restricted defaults (set fields only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<k8s::SecurityContext>,
}

/// Where and how the pods run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Container image holding the `clip-retrieval` binary.
    pub image: String,
    /// Resources per pod.
    #[serde(default)]
    pub resources: PodResources,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Environment variables of the container (e.g. `AWS_ENDPOINT_URL`, `AWS_REGION`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A Secret whose keys become environment variables (e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from_secret: Option<String>,
    /// Pod settings a cluster requires: service account, pull secrets, volumes, affinity, security, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Whether and when the resource's Jobs may run: paused by the user, or admitted by a batch queue (Kueue).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// Runs no Jobs while true: unfinished Jobs are deleted (their pods stop, as a suspended Job's do) and none
    /// are started; finished work is kept. Setting it back resumes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Kueue LocalQueue admitting the Jobs: they carry `kueue.x-k8s.io/queue-name` and are created suspended
    /// (`spec.suspend`; on servers before 1.22, parallelism 0 with the real value in the annotation
    /// `clip-retrieval.io/held-parallelism`), and run when the queue admits them. Status says `Queued` meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub queue_name: Option<String>,
}

/// A status condition, as metav1.Condition has it: type, status, reason, message, the time `status` last changed
/// and the spec generation it was computed from.
///
/// Empty strings are never sent: the v1.20 API server built for CI reads `""` as null and rejects it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Progressing, Complete, Failed, Ready, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// `metadata.generation` of the spec this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Embeds a dataset: its partitions run as parallel pods of `clip-retrieval inference`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clip-retrieval.io",
    version = "v1alpha1",
    kind = "EmbeddingJob",
    namespaced,
    status = "EmbeddingJobStatus",
    shortname = "ej",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Done","type":"integer","jsonPath":".status.partitionsSucceeded"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingJobSpec {
    /// Dataset location (s3:// or a path the pods see).
    pub input: String,
    /// Dataset format.
    #[serde(default)]
    pub input_format: InputFormat,
    /// Output folder (s3:// or path): img_emb/, text_emb/, metadata/.
    pub output: String,
    /// Model folder (s3:// or path); the image's shipped model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Inference batch size.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub batch_size: u32,
    /// Output partitions (each one pod run).
    #[schemars(range(min = 1, max = 100000))]
    pub partitions: u32,
    /// Partitions running at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: u32,
    /// Retries of one failed partition before the job fails.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 100))]
    pub retries_per_partition: u32,
    /// Image member extension (webdataset) or column (parquet): `--wds_image_key` (the CLI's default `jpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wds_image_key: Option<String>,
    /// Caption member extension (webdataset) or column (parquet): `--wds_caption_key` (default `txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wds_caption_key: Option<String>,
    /// Element type of the embedding files: `float16` (clip-retrieval's, the default) or `float32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dtype: Option<EmbeddingDtype>,
    /// Precision of both towers (`--precision`: `fp32`, the default, or `int8`: the model folder's
    /// `model.int8.onnx` files; check them with `clip-retrieval evaluate` first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// The image tower's precision, overriding `precision` (`--image_precision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_precision: Option<Precision>,
    /// The text tower's precision, overriding `precision` (`--text_precision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_precision: Option<Precision>,
    /// Compute image embeddings (`--enable_image`, default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_image: Option<bool>,
    /// Compute text embeddings (`--enable_text`, default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_text: Option<bool>,
    /// More `clip-retrieval inference` flags, appended to the ones the operator writes (e.g. `["--num_prepro_workers=8"]`). The
    /// whole command line is checked by the CLI's own parser before any pod is created: an unknown flag, a bad
    /// value or a flag the operator already sets fails the resource (`Failed`, reason `InvalidSpec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub extra_args: Vec<String>,
    /// Suspension and queue admission of the partitions' Jobs.
    #[serde(flatten)]
    pub admission: Admission,
    /// Pods: image, resources, node selection.
    #[serde(flatten)]
    pub placement: Placement,
}

/// What the operator reports on an EmbeddingJob.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingJobStatus {
    /// Pending, Queued, Running, Suspended, Complete or Failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Progressing, Complete, Failed, Queued, Suspended, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Partitions in all.
    #[serde(default)]
    pub partitions_total: u32,
    /// Partitions finished.
    #[serde(default)]
    pub partitions_succeeded: u32,
    /// Partitions failed past their retries.
    #[serde(default)]
    pub partitions_failed: u32,
    /// Ids of the finished partitions, as ranges (`0-3,7`): never recomputed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub succeeded_partition_ids: String,
    /// How partitions run: `JobPerPartition` (any server) or `IndexedJob` (servers with per-index retry limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_mode: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// RFC 3339 completion time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// Which embeddings an index is built from: an EmbeddingJob in the same namespace, or a folder URI (exactly one;
/// the operator reports a spec with both or neither in a `Failed` condition, as the schema cannot say "one of").
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingsSource {
    /// Name of an EmbeddingJob; the build waits until it is Complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_job: Option<String>,
    /// Embeddings folder (s3:// or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Builds the faiss indices of an embeddings folder with `clip-retrieval index`, as a Job.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clip-retrieval.io",
    version = "v1alpha1",
    kind = "IndexBuild",
    namespaced,
    status = "IndexBuildStatus",
    shortname = "ib",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.stage"}"#,
    printcolumn = r#"{"name":"Parts","type":"string","jsonPath":".status.partsDone"}"#,
    printcolumn = r#"{"name":"Index","type":"string","jsonPath":".status.indexKey"}"#,
    printcolumn = r#"{"name":"Recall","type":"number","jsonPath":".status.recallAt10"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IndexBuildSpec {
    /// The embeddings to index.
    pub embeddings: EmbeddingsSource,
    /// Index root (s3:// or path): spec generation N is built into `<output>/g<N>` (distributed builds' trained
    /// index and parts into `<output>/g<N>-parts/`), its completion marker written last, so that a rebuild never
    /// writes where a SearchDeployment reads.
    pub output: String,
    /// Memory budget of the index (`--max_index_memory_usage`, e.g. `4G`).
    #[serde(default = "default_budget")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?[KMGT]?B?$"))]
    pub max_index_memory_usage: String,
    /// Indices to build (default both).
    #[serde(default = "both_modalities")]
    #[schemars(length(min = 1, max = 2))]
    pub modalities: Vec<IndexModality>,
    /// Add pods run in parallel: 1 is one build pod; N > 1 runs a training Job (a sample across every
    /// partition), then N add Jobs over contiguous slices of the partitions (`<output>-parts/<i>`), then a merge.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: u32,
    /// With shards: merge the parts into `output` (a merge Job). `false` leaves the parts as the result, for a
    /// SearchDeployment that serves them as shards (`sharded: true`).
    #[serde(default = "yes")]
    pub merge: bool,
    /// With shards: how many times a failed part Job is run again (alone) before the build fails.
    #[serde(default = "default_part_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub part_retries: u32,
    /// Finished generations whose folders are kept (the served one and the ones before it, for pods still rolling
    /// off them); after each build a Job (`clip-retrieval prune_generations`) deletes every older `g<N>/`, failed
    /// and superseded ones included. 0 keeps everything.
    #[serde(default = "default_keep_generations")]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_generations: u32,
    /// A faiss factory string to build instead of the tuned choice (`--index_key`, e.g. `IVF4096,PQ32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<String>,
    /// Distance: `ip` (cosine on normalised embeddings, the default) or `l2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Single-query latency budget of the tuning, in milliseconds (`--max_index_query_time_ms`, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 100000.0))]
    pub max_index_query_time_ms: Option<f64>,
    /// recall@10 the tuned index should reach (`--min_recall`, 0 to 1); the build warns when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_recall: Option<f64>,
    /// More `clip-retrieval index` flags, appended to the ones the operator writes (e.g. `["--nb_cores=8"]`). The
    /// whole command line is checked by the CLI's own parser before any pod is created: an unknown flag, a bad
    /// value or a flag the operator already sets fails the resource (`Failed`, reason `InvalidSpec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub extra_args: Vec<String>,
    /// Suspension and queue admission of the build's Jobs.
    #[serde(flatten)]
    pub admission: Admission,
    /// Pod: image, resources, node selection.
    #[serde(flatten)]
    pub placement: Placement,
}

/// One part of a distributed build: a slice of the embedding partitions added to the trained index.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexPart {
    /// Embedding partition numbers of the slice (`--partition_ids`, e.g. `0-9`).
    pub partitions: String,
    /// Rows of the slice.
    pub rows: u64,
    /// Global id of the part's first row (the rows of the parts before it).
    pub row_offset: u64,
    /// The part's index folder.
    pub folder: String,
    /// Pending, Running, Complete or Failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Runs of the part's Job so far (a failed Job is run again alone, up to `partRetries` times).
    #[serde(default)]
    pub attempts: u32,
    /// The Job of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// recall@10 the part measured on its own rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_at10: Option<f64>,
}

/// A build generation that finished: its folder (`<output>/g<N>`) holds its completion marker.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltGeneration {
    /// The spec generation that was built.
    pub generation: i64,
    /// Its index folder (the merge's, or the training folder's parent when the parts stay unmerged).
    pub folder: String,
    /// Its parts' folders, in id order, for a distributed build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// RFC 3339 completion time.
    pub completion_time: String,
}

/// What the operator reports on an IndexBuild, including what the build wrote in its `<modality>.json`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexBuildStatus {
    /// Waiting, Queued, Running, Suspended, Complete or Failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Progressing, Complete, Failed, Queued, Suspended, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// faiss index key of the image index (e.g. `IVF1024,SQ8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<String>,
    /// Size of the index file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_bytes: Option<u64>,
    /// Measured recall@10 on held-out rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall_at10: Option<f64>,
    /// Vectors in the image index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<u64>,
    /// Name of the Job that ran the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 completion time (SearchDeployments roll out when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Distributed builds: Training, Adding, Merging, Done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    /// Distributed builds: the parts in id order, with their slices and row offsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<IndexPart>,
    /// Distributed builds: `complete/total` parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_done: Option<String>,
    /// Finished generations whose folders are kept, newest first (at most `keepGenerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained_generations: Vec<i64>,
    /// The newest generation that finished: what SearchDeployments serve. A failed rebuild leaves it as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_complete: Option<BuiltGeneration>,
}

/// An index served under a name: an IndexBuild in the same namespace or a folder URI (exactly one).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSource {
    /// Name of an IndexBuild; a new completion rolls the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_build: Option<String>,
    /// Index folder (s3:// or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Serve the IndexBuild's parts as shards (a Deployment and Service per part, each pod downloading only its
    /// part; the SearchDeployment's pods are the front that fans queries out) instead of its merged folder.
    /// Required when the build does not merge.
    #[serde(default)]
    pub sharded: bool,
    /// Precision the index's model runs at for queries (`"precision"` in `indices_paths.json`): `fp32`, the
    /// default, or `int8` (the model folder's `model.int8.onnx` towers; check them with `clip-retrieval evaluate`).
    /// For a sharded index it applies to the front, which encodes the queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

/// Horizontal autoscaling of the query servers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Average CPU utilisation to keep, in percent of the request.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: u32,
}

/// An Ingress in front of the Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name.
    pub host: String,
    /// Path prefix.
    #[serde(default = "root_path")]
    pub path: String,
    /// Secret holding the TLS certificate, when TLS is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// IngressClass name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
}

/// A PodDisruptionBudget for the query pods (exactly one of the two; a count or a percentage like `50%`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// Pods of each Deployment kept through a voluntary disruption (a node drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Pods of each Deployment a voluntary disruption may take at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
}

/// Serves indices with `clip-retrieval back`: a Deployment, a Service, an HPA and optionally an Ingress.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clip-retrieval.io",
    version = "v1alpha1",
    kind = "SearchDeployment",
    namespaced,
    status = "SearchDeploymentStatus",
    shortname = "sd",
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SearchDeploymentSpec {
    /// Index name (as clients pass `indice_name`) -> where it comes from.
    pub indices: BTreeMap<String, IndexSource>,
    /// Model folder (s3:// or path); the image's shipped model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Fixed replica count (ignored when `autoscaling` is set).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: u32,
    /// Scale between bounds on CPU instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Service port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// Optional Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Sharded indices: replicas of each shard's Deployment (ignored when `shardAutoscaling` is set).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub shard_replicas: u32,
    /// Sharded indices: an HPA per shard Deployment instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_autoscaling: Option<Autoscaling>,
    /// Sharded indices: a front's answer leaves out a shard that fails (header `x-clip-retrieval-partial`)
    /// instead of failing with a 503.
    #[serde(default)]
    pub allow_partial_results: bool,
    /// A PodDisruptionBudget per query Deployment (the front's and each shard's), selecting its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<DisruptionBudget>,
    /// Metadata columns results carry (`--columns_to_return`; default url, image_path, caption, NSFW).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns_to_return: Vec<String>,
    /// Memory-map the index files instead of reading them into memory (`--enable_faiss_memory_mapping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_faiss_memory_mapping: Option<bool>,
    /// Load the safety model (`--provide_safety_model`; from `safetyModel` or the model's `filters/safety.onnx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provide_safety_model: Option<bool>,
    /// ONNX safety classifier over embeddings (`--safety_model`; implies `provideSafetyModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_model: Option<String>,
    /// Load the violence detector (`--provide_violence_detector`; from `violenceDetector` or the model's filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provide_violence_detector: Option<bool>,
    /// `.npy` of violence prompt embeddings (`--violence_detector`; implies `provideViolenceDetector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violence_detector: Option<String>,
    /// Load aesthetic embeddings (`--provide_aesthetic_embeddings`, default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provide_aesthetic_embeddings: Option<bool>,
    /// Folder of `rating0.npy` .. `rating9.npy` (`--aesthetic_embeddings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesthetic_embeddings: Option<String>,
    /// Cap on `num_images` per request (`--max_num_images`, default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_num_images: Option<u32>,
    /// Cap on `num_result_ids` per request (`--max_num_result_ids`, default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_num_result_ids: Option<u32>,
    /// Whole-request time limit in seconds (`--request_timeout`, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 3600.0))]
    pub request_timeout_seconds: Option<f64>,
    /// More `clip-retrieval back` flags, appended to the ones the operator writes (e.g. `["--search_threads=4"]`). The
    /// whole command line is checked by the CLI's own parser before any pod is created: an unknown flag, a bad
    /// value or a flag the operator already sets fails the resource (`Failed`, reason `InvalidSpec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub extra_args: Vec<String>,
    /// Pods: image, resources, node selection.
    #[serde(flatten)]
    pub placement: Placement,
}

/// What the operator reports on a SearchDeployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchDeploymentStatus {
    /// Replicas passing /readyz.
    #[serde(default)]
    pub ready_replicas: u32,
    /// In-cluster URL of the Service (and the Ingress URL when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Index name -> the version (IndexBuild completion time or URI) the pods serve.
    #[serde(default)]
    pub loaded_indices: BTreeMap<String, String>,
    /// Ready, Progressing, Failed.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_budget() -> String {
    "4G".into()
}

fn both_modalities() -> Vec<IndexModality> {
    vec![IndexModality::Image, IndexModality::Text]
}

fn default_cpu_target() -> u32 {
    70
}

fn root_path() -> String {
    "/".into()
}

fn default_port() -> u32 {
    1234
}

fn default_batch_size() -> u32 {
    256
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn default_keep_generations() -> u32 {
    2
}

fn default_part_retries() -> u32 {
    2
}

fn default_retries() -> u32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_specs_get_the_documented_defaults() {
        let job: EmbeddingJobSpec = serde_json::from_value(serde_json::json!({
            "input": "s3://data/shards", "output": "s3://data/emb", "partitions": 4, "image": "clip-retrieval:0.1"
        }))
        .unwrap();
        assert_eq!((job.batch_size, job.parallelism, job.retries_per_partition), (256, 1, 3));
        assert_eq!(job.input_format, InputFormat::Files);
        assert_eq!(job.placement.image, "clip-retrieval:0.1");
        let build: IndexBuildSpec = serde_json::from_value(serde_json::json!({
            "embeddings": {"embeddingJob": "ej"}, "output": "s3://data/idx", "image": "clip-retrieval:0.1"
        }))
        .unwrap();
        assert_eq!(build.max_index_memory_usage, "4G");
        assert_eq!(build.modalities, vec![IndexModality::Image, IndexModality::Text]);
        let search: SearchDeploymentSpec = serde_json::from_value(serde_json::json!({
            "indices": {"laion": {"indexBuild": "ib"}}, "image": "clip-retrieval:0.1"
        }))
        .unwrap();
        assert_eq!((search.replicas, search.port), (1, 1234));
        let wrong = serde_json::from_value::<EmbeddingJobSpec>(serde_json::json!({
            "input": "a", "output": "b", "partitions": 1, "image": "i", "inputFormat": "zip"
        }));
        assert!(wrong.unwrap_err().to_string().contains("zip"));
    }
}
