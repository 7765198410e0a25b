//! Finding and loading the ONNX Runtime shared library (`load-dynamic`), once per process.
//!
//! Order: `ORT_DYLIB_PATH`; the library beside the executable; `.cache/onnxruntime/` in any parent of the executable
//! or of the working directory (where `scripts/setup.sh` installs it in a checkout); `~/.cache/clip-retrieval/onnxruntime/`.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file name the PyPI wheel `onnxruntime==1.32.0` ships.
pub const ORT_LIBRARY_NAME: &str = "libonnxruntime.so.1.32.0";

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionDevice {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on the given GPU (needs an onnxruntime-gpu library and CUDA 12 libraries).
    Cuda(i32),
}

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        out.push(dir.join(ORT_LIBRARY_NAME));
    }
    // A checkout's .cache/ above the executable (target/ inside it) or above the working directory.
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    for start in starts.iter().flatten() {
        for dir in start.ancestors() {
            out.push(dir.join(".cache/onnxruntime").join(ORT_LIBRARY_NAME));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        out.push(Path::new(&home).join(".cache/clip-retrieval/onnxruntime").join(ORT_LIBRARY_NAME));
    }
    out
}

/// Path of the ONNX Runtime library this process will load, if one is found.
pub fn find_library() -> Option<PathBuf> {
    candidates().into_iter().find(|p| p.is_file())
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        let Some(path) = find_library() else {
            let tried: Vec<String> = candidates().iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "{ORT_LIBRARY_NAME} not found (tried: {}). Run scripts/setup.sh, or set ORT_DYLIB_PATH to the library \
                 from the PyPI wheel onnxruntime==1.32.0 (onnxruntime/capi/)",
                tried.join(", ")
            ));
        };
        tracing::debug!(library = %path.display(), "loading ONNX Runtime");
        ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?
            .with_name("clip-retrieval")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    env.as_ref().map_err(|e| ModelError::Runtime(e.clone()))
}
