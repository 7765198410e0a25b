//! Typed flag values: the enums, sizes, durations and lists clip-retrieval's flags take, each parsed once here with
//! an error naming what was expected, and each rendering back to a spelling the parser accepts (`Display`/serde).

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Parses Python-style booleans, as Python fire passes them (`True`, `false`, `1`, `no`, `None`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "none" => Ok(false),
        _ => Err(format!("expected True or False, got {s:?}")),
    }
}

/// How a dataset is stored (`--input_format`, `--output_format`; the EmbeddingJob's `inputFormat`).
#[derive(ValueEnum, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// A folder of images with .txt captions.
    #[default]
    Files,
    /// Tar shards.
    Webdataset,
    /// Parquet files with image bytes.
    Parquet,
}

/// Which indices of a folder to build.
#[derive(ValueEnum, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// image.index from img_emb/.
    Image,
    /// text.index from text_emb/.
    Text,
}

impl Modality {
    /// Both modalities, image first (the default of `index --modalities`).
    pub const ALL: [Modality; 2] = [Modality::Image, Modality::Text];

    /// Parses one list item, ignoring the spaces of `image, text`.
    pub fn parse_item(s: &str) -> Result<Self, String> {
        match s.trim() {
            "image" => Ok(Self::Image),
            "text" => Ok(Self::Text),
            other => Err(format!("unknown modality {other:?} (image or text)")),
        }
    }
}

/// Element type of the embedding `.npy` files (`--embedding_dtype`; the EmbeddingJob's `embeddingDtype`).
#[derive(ValueEnum, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    /// Half precision, clip-retrieval's format.
    #[default]
    #[value(alias = "f16")]
    Float16,
    /// Single precision.
    #[value(alias = "f32")]
    Float32,
}

/// Numeric precision of a model tower (`--precision`, `--image_precision`, `--text_precision`).
#[derive(ValueEnum, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32: the folder's `model.fused.onnx` when it has one, else `model.onnx`.
    #[default]
    Fp32,
    /// `model.int8.onnx` (written by `models/scripts/quantize.py`): int8 weights; check it with `evaluate` first.
    Int8,
}

/// clip-retrieval's `--distribution_strategy` values; only `sequential` runs here (`pyspark` is refused with advice).
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DistributionStrategy {
    /// Partitions one after another in this process.
    #[default]
    Sequential,
    /// clip-retrieval's Spark mode (not supported: scale out with `--partition_ids`).
    Pyspark,
}

/// Index distance (`--metric`; the IndexBuild's `metric`).
#[derive(ValueEnum, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Inner product (cosine on normalised embeddings).
    #[default]
    #[value(alias = "inner_product")]
    Ip,
    /// Euclidean distance.
    L2,
}

/// `index --rerank`: whether compressed indices get exact re-ranking from float16 vectors.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Rerank {
    /// Every index that is not exact gets re-rank vectors (on disk, beside it); tuning picks `k_factor`.
    #[default]
    Auto,
    /// No re-rank vectors.
    Off,
}

/// How `filter --query` is read.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueryType {
    /// An existing file is an image, anything else text.
    #[default]
    Auto,
    /// Always text.
    Text,
    /// Always an image path.
    Image,
}

/// Execution provider: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on GPU N.
    Cuda(u32),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A size in bytes written as autofaiss writes memory sizes: `4G`, `512M`, `16GB`, `1.5G` or a byte count, with
/// binary units (K = 1024). Renders as the largest unit that divides it exactly (`1536M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || format!("{text:?}: a size must look like 4G, 512M, 16GB or a byte count");
        let upper = text.trim().to_ascii_uppercase();
        let t = upper.strip_suffix('B').unwrap_or(&upper);
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (number, unit) = (t[..split].trim(), &t[split..]);
        let shift = match unit {
            "" => 0,
            _ => UNITS.iter().find(|(name, _)| *name == unit).map(|(_, shift)| *shift).ok_or_else(shape)?,
        };
        let value: f64 = number.parse().map_err(|_| shape())?;
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("{text:?}: a size must be positive"));
        }
        let bytes = value * (1u64 << shift) as f64;
        if bytes >= u64::MAX as f64 {
            return Err(format!("{text:?}: too large"));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS.iter().find(|(_, shift)| self.0 > 0 && self.0.is_multiple_of(1u64 << shift)) {
            Some((unit, shift)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A positive, finite number of seconds (`--request_timeout 2.5`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Seconds(pub f64);

impl Seconds {
    /// As a `Duration`.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Self(v)),
            _ => Err(format!("{s:?}: expected a positive number of seconds")),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Metadata column names: `url,caption`, `["url", "caption"]` or `['url', 'caption']` (as Python fire passes lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnList(pub Vec<String>);

impl FromStr for ColumnList {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let inner = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(t);
        let columns: Vec<String> = inner
            .split(',')
            .map(|c| c.trim().trim_matches(|ch| ch == '"' || ch == '\'').to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if columns.is_empty() {
            return Err(format!("{text:?}: no column names"));
        }
        Ok(Self(columns))
    }
}

impl fmt::Display for ColumnList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Embedding partition numbers: `0-9,12,15-20` (ranges inclusive), kept sorted and without repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionIds(pub Vec<usize>);

/// Partition lists longer than this are refused (an operator slice is a range; a typo like `0-99999999999` is not).
pub const MAX_PARTITION_IDS: usize = 1_000_000;

impl PartitionIds {
    /// Whether partition `n` is in the list.
    pub fn contains(&self, n: usize) -> bool {
        self.0.binary_search(&n).is_ok()
    }
}

impl FromStr for PartitionIds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let number =
            |s: &str| s.trim().parse::<usize>().map_err(|_| format!("{text:?}: {s:?} is not a partition number"));
        let mut ids = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(item)?, number(item)?),
            };
            if last < first {
                return Err(format!("{text:?}: range {item} ends before it starts"));
            }
            if ids.len() + (last - first) >= MAX_PARTITION_IDS {
                return Err(format!("{text:?}: more than {MAX_PARTITION_IDS} partitions"));
            }
            ids.extend(first..=last);
        }
        if ids.is_empty() {
            return Err(format!("{text:?}: no partition numbers"));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Self(ids))
    }
}

impl fmt::Display for PartitionIds {
    /// Runs of consecutive numbers as ranges: `0-9,12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            parts.push(if i == j { self.0[i].to_string() } else { format!("{}-{}", self.0[i], self.0[j]) });
            i = j + 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// Serializes the values that render through `Display` as their flag spelling.
macro_rules! serialize_as_display {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_display!(Device, ByteSize, Seconds, ColumnList, PartitionIds);

/// Displays the value enums as their flag spelling (`webdataset`).
macro_rules! display_as_value_name {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.to_possible_value().expect("no skipped variants").get_name())
            }
        }
    )*};
}
display_as_value_name!(InputFormat, Modality, EmbeddingDtype, DistributionStrategy, Metric, QueryType, Precision);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_parse_ranges_and_render_them_back() {
        let ids: PartitionIds = "12, 0-3,2,5-6".parse().unwrap();
        assert_eq!(ids.0, vec![0, 1, 2, 3, 5, 6, 12]);
        assert_eq!(ids.to_string(), "0-3,5-6,12");
        assert!(ids.contains(5) && !ids.contains(4));
        assert!("3-1".parse::<PartitionIds>().unwrap_err().contains("ends before"));
        assert!("a".parse::<PartitionIds>().unwrap_err().contains("not a partition number"));
        assert!("".parse::<PartitionIds>().unwrap_err().contains("no partition"));
        assert!("0-99999999999".parse::<PartitionIds>().unwrap_err().contains("more than"));
    }

    #[test]
    fn sizes_parse_as_autofaiss_and_render_back() {
        let parse = |s: &str| s.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(parse("4G"), Ok(4 << 30));
        assert_eq!(parse("16GB"), Ok(16 << 30));
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("1000"), Ok(1000));
        assert!(parse("4X").unwrap_err().contains("4X"));
        assert!(parse("-1G").unwrap_err().contains("positive"));
        assert!(parse("99999999999T").unwrap_err().contains("too large"));
        for text in ["4G", "1536M", "1000", "3K", "2T"] {
            assert_eq!(text.parse::<ByteSize>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn devices_and_seconds_round_trip() {
        for text in ["cpu", "cuda", "cuda:3"] {
            assert_eq!(text.parse::<Device>().unwrap().to_string(), text);
        }
        assert_eq!("cuda:0".parse::<Device>(), Ok(Device::Cuda(0)));
        assert!("tpu".parse::<Device>().unwrap_err().contains("cpu, cuda or cuda:N"));
        assert_eq!("2.5".parse::<Seconds>().unwrap().duration(), std::time::Duration::from_millis(2500));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad}");
        }
    }

    #[test]
    fn columns_as_comma_list_or_python_list() {
        let parse = |s: &str| s.parse::<ColumnList>().map(|c| c.0);
        assert_eq!(parse("url,caption").unwrap(), vec!["url", "caption"]);
        assert_eq!(parse("['url', 'caption']").unwrap(), vec!["url", "caption"]);
        assert_eq!(parse(r#"["image_path"]"#).unwrap(), vec!["image_path"]);
        assert!(parse("[]").is_err());
    }

    #[test]
    fn enums_display_as_their_flag_value() {
        assert_eq!(InputFormat::Webdataset.to_string(), "webdataset");
        assert_eq!(EmbeddingDtype::Float16.to_string(), "float16");
        assert_eq!(serde_json::to_value(Metric::L2).unwrap(), "l2");
    }

    #[test]
    fn python_booleans() {
        for t in ["True", "true", "1", "yes"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["False", "0", "no", "None"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("maybe").unwrap_err().contains("expected True or False"));
    }
}
