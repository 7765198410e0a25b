//! Errors of the model crate: every variant names the file or input it is about.

use std::path::PathBuf;

/// What can go wrong loading a CLIP model folder or encoding with it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A required file of the model folder is absent.
    #[error("model file {path} is missing ({what})")]
    MissingFile {
        /// The expected path.
        path: PathBuf,
        /// What the file should contain.
        what: &'static str,
    },
    /// A file exists but is not what the layout requires.
    #[error("model file {path} is invalid: {reason}")]
    InvalidFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library not available: {0}")]
    Runtime(String),
    /// ONNX Runtime failed while building a session or running one.
    #[error("ONNX Runtime error in {context}: {source}")]
    Ort {
        /// Which model or step failed.
        context: String,
        /// The runtime's own error.
        #[source]
        source: ort::Error,
    },
    /// An image could not be decoded.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// An image's header says it has more pixels than allowed (a decompression bomb, or simply too big).
    #[error(
        "image is {width} x {height} = {} pixels, over the limit of {max_pixels} (--max_image_pixels)",
        *width as u64 * *height as u64
    )]
    ImageTooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// A caption could not be tokenized.
    #[error("cannot tokenize caption: {0}")]
    Tokenize(String),
    /// The model returned something other than a `[batch, dim]` float tensor.
    #[error("{model} returned an unexpected output: {reason}")]
    BadOutput {
        /// visual or textual.
        model: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl ModelError {
    pub(crate) fn ort(context: impl Into<String>) -> impl FnOnce(ort::Error) -> Self {
        let context = context.into();
        move |source| Self::Ort { context, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
