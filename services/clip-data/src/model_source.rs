//! Resolving `--clip_model` to a local model folder: a path, an s3:// folder (copied to a cache), a model name as
//! clip-retrieval takes it (`ViT-B/32`, `open_clip:ViT-B-32/laion2b_s34b_b79k`, `hf_clip:ORG/NAME`) looked up in the
//! model cache under immich's export name (`ViT-B-32__openai`), or the shipped model.

use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use std::path::{Path, PathBuf};

/// Folder name of the model shipped in the repository.
pub const SHIPPED_MODEL: &str = "models/tiny-clip";

/// The shipped model: `CLIP_RETRIEVAL_MODEL`, or `models/tiny-clip` above the executable or the working directory.
fn shipped_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLIP_RETRIEVAL_MODEL") {
        return Some(PathBuf::from(p));
    }
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(SHIPPED_MODEL);
            if candidate.join("config.json").is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Turns the flag into a local folder, downloading s3:// folders into `cache` (`--clip_cache_path`, a local folder
/// or an s3:// model root; default [`default_cache`]).
pub fn resolve(storage: &Storage, clip_model: Option<&str>, cache: Option<&str>) -> Result<PathBuf> {
    let Some(spec) = clip_model else {
        return shipped_model().ok_or_else(|| {
            DataError::Config(format!(
                "no --clip_model given and the shipped {SHIPPED_MODEL} was not found; set CLIP_RETRIEVAL_MODEL"
            ))
        });
    };
    let folder = Location::parse(spec);
    // A local --clip_cache_path is the cache; an s3:// one is a model root searched for names, copied locally.
    let (local_cache, remote_root) = match cache.map(Location::parse) {
        Some(Location::Local(p)) => (p, None),
        remote => (default_cache(), remote),
    };
    if let Location::Local(p) = &folder {
        if !p.is_dir() {
            return match ModelName::parse(spec).map_err(|e| DataError::Config(format!("--clip_model {spec:?}: {e}")))? {
                Some(name) => resolve_name(storage, spec, &name, remote_root.as_ref(), &local_cache),
                None => Err(DataError::Config(format!(
                    "--clip_model {spec:?}: no such folder. Models are folders in the immich/OpenCLIP ONNX layout \
                     (local or s3://), or names as clip-retrieval takes them (ViT-B/32, open_clip:MODEL/TAG, \
                     hf_clip:ORG/NAME) found in the model cache ({})",
                    local_cache.display()
                ))),
            };
        }
    }
    storage.materialize_folder(&folder, &local_cache)
}

/// A model named the way clip-retrieval's `--clip_model` names checkpoints, and the folder immich would export it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    /// The folder's name in a model cache, as immich names its exports (`ViT-B-32__openai`).
    pub folder: String,
    /// `export_openclip.py --model` for it.
    pub open_clip_model: String,
    /// `export_openclip.py --pretrained` for it (`None` for a hub model, whose weights come with it).
    pub pretrained: Option<String>,
}

/// The checkpoints of OpenAI's `clip` package (clip-retrieval's `--clip_model ViT-B/32`) and open_clip's names for them.
const OPENAI_MODELS: [(&str, &str); 9] = [
    ("RN50", "RN50"),
    ("RN101", "RN101"),
    ("RN50x4", "RN50x4"),
    ("RN50x16", "RN50x16"),
    ("RN50x64", "RN50x64"),
    ("ViT-B/32", "ViT-B-32"),
    ("ViT-B/16", "ViT-B-16"),
    ("ViT-L/14", "ViT-L-14"),
    ("ViT-L/14@336px", "ViT-L-14-336"),
];

impl ModelName {
    /// `Ok(None)` for a string that is no model name (a path); an error for a malformed `open_clip:`/`hf_clip:` one.
    pub fn parse(spec: &str) -> std::result::Result<Option<Self>, String> {
        let safe = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        };
        if let Some(rest) = spec.strip_prefix("open_clip:") {
            let Some((model, tag)) = rest.split_once('/') else {
                return Err(
                    "expected open_clip:MODEL/PRETRAINED_TAG (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k)".into()
                );
            };
            if !safe(model) || !safe(tag) {
                return Err(format!("{model:?} / {tag:?} is not an open_clip model name and pretrained tag"));
            }
            return Ok(Some(Self {
                folder: format!("{model}__{tag}"),
                open_clip_model: model.into(),
                pretrained: Some(tag.into()),
            }));
        }
        if let Some(rest) = spec.strip_prefix("hf_clip:") {
            let Some((org, name)) = rest.split_once('/').filter(|(o, n)| safe(o) && safe(n)) else {
                return Err("expected hf_clip:ORG/NAME (a Hugging Face model id)".into());
            };
            return Ok(Some(Self {
                folder: name.into(),
                open_clip_model: format!("hf-hub:{org}/{name}"),
                pretrained: None,
            }));
        }
        if let Some((_, model)) = OPENAI_MODELS.iter().find(|(n, _)| *n == spec) {
            return Ok(Some(Self {
                folder: format!("{model}__openai"),
                open_clip_model: model.to_string(),
                pretrained: Some("openai".into()),
            }));
        }
        // An immich export name given as is (`ViT-B-32__laion2b_s34b_b79k`).
        if let Some((model, tag)) = spec.split_once("__").filter(|(m, t)| safe(m) && safe(t)) {
            return Ok(Some(Self { folder: spec.into(), open_clip_model: model.into(), pretrained: Some(tag.into()) }));
        }
        Ok(None)
    }

    /// The one command that writes this model into `folder` (run where a model hub is reachable).
    pub fn export_command(&self, folder: &Path) -> String {
        let pretrained = self.pretrained.as_ref().map(|t| format!(" --pretrained {t}")).unwrap_or_default();
        format!(
            "python models/scripts/export_openclip.py --model {}{pretrained} --out {}",
            self.open_clip_model,
            folder.display()
        )
    }
}

/// The folder of a named model: `<cache>/<name>` (an s3:// cache root is copied into `local_cache`), then the
/// local cache; an error listing both when neither has it.
fn resolve_name(
    storage: &Storage,
    spec: &str,
    name: &ModelName,
    remote_root: Option<&Location>,
    local_cache: &Path,
) -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(root) = remote_root {
        let remote = root.join(&name.folder);
        looked.push(remote.to_string());
        if !storage.list_or_empty(&remote)?.is_empty() {
            tracing::info!(model = spec, folder = %remote, "model name resolved");
            return storage.materialize_folder(&remote, local_cache);
        }
    }
    let local = local_cache.join(&name.folder);
    looked.push(local.display().to_string());
    if local.join("config.json").is_file() {
        tracing::info!(model = spec, folder = %local.display(), "model name resolved");
        return Ok(local);
    }
    Err(DataError::Config(format!(
        "--clip_model {spec:?}: the model {:?} is not in the model cache (looked in {}). Export it once, where a \
         model hub is reachable, with: {}",
        name.folder,
        looked.join(", "),
        name.export_command(&local)
    )))
}

/// `~/.cache/clip-retrieval/models`, where s3:// models are copied.
pub fn default_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| Path::new("/tmp").to_path_buf());
    home.join(".cache/clip-retrieval/models")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(spec: &str) -> ModelName {
        ModelName::parse(spec).unwrap().unwrap_or_else(|| panic!("{spec} is a name"))
    }

    #[test]
    fn clip_retrieval_names_map_to_immich_folder_names() {
        assert_eq!(name("ViT-B/32").folder, "ViT-B-32__openai");
        assert_eq!(name("ViT-L/14@336px").folder, "ViT-L-14-336__openai");
        assert_eq!(name("RN50").folder, "RN50__openai");
        let laion = name("open_clip:ViT-B-32/laion2b_s34b_b79k");
        assert_eq!(laion.folder, "ViT-B-32__laion2b_s34b_b79k");
        assert_eq!(
            laion.export_command(Path::new("/c/ViT-B-32__laion2b_s34b_b79k")),
            "python models/scripts/export_openclip.py --model ViT-B-32 --pretrained laion2b_s34b_b79k \
             --out /c/ViT-B-32__laion2b_s34b_b79k"
        );
        let hf = name("hf_clip:patrickjohncyh/fashion-clip");
        assert_eq!((hf.folder.as_str(), hf.pretrained), ("fashion-clip", None));
        assert_eq!(name("ViT-B-32__openai").open_clip_model, "ViT-B-32");
    }

    #[test]
    fn paths_are_not_names_and_malformed_names_are_errors() {
        for path in ["models/tiny-clip", "/data/model", "./ViT-B-32", "ViT-B/99", "tiny"] {
            assert_eq!(ModelName::parse(path).unwrap(), None, "{path}");
        }
        assert!(ModelName::parse("open_clip:ViT-B-32").unwrap_err().contains("MODEL/PRETRAINED_TAG"));
        assert!(ModelName::parse("open_clip:../x/y").is_err(), "no path escapes the cache");
        assert!(ModelName::parse("hf_clip:onlyname").is_err());
    }

    #[test]
    fn a_name_resolves_in_the_cache_and_a_missing_one_says_where_it_looked_and_how_to_export() {
        let cache = tempfile::tempdir().unwrap();
        let storage = Storage::from_env();
        let cache_path = cache.path().to_str().unwrap();
        let err = resolve(&storage, Some("ViT-B/32"), Some(cache_path)).unwrap_err().to_string();
        let expected = cache.path().join("ViT-B-32__openai");
        assert!(err.contains(&expected.display().to_string()), "{err}");
        assert!(err.contains("export_openclip.py --model ViT-B-32 --pretrained openai --out"), "{err}");
        std::fs::create_dir_all(&expected).unwrap();
        std::fs::write(expected.join("config.json"), "{}").unwrap();
        assert_eq!(resolve(&storage, Some("ViT-B/32"), Some(cache_path)).unwrap(), expected);
        assert_eq!(resolve(&storage, Some("ViT-B-32__openai"), Some(cache_path)).unwrap(), expected);
    }
}
