//! CLIP tokenization on a Hugging Face `tokenizer.json`, with OpenAI CLIP's text clean-up.
//!
//! OpenAI/OpenCLIP clean captions with ftfy and `html.unescape` before BPE; `tokenizer.json` only knows NFC,
//! whitespace collapsing and lower-casing. We apply the clean-up steps that change real captions (HTML
//! entities, curly quotes, ligatures, full-width forms, control characters) so token ids match OpenCLIP's.

use crate::error::{ModelError, Result};
use std::path::Path;

/// A CLIP tokenizer: start/end tokens, truncation with the end token last, zero padding.
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    start_token: u32,
    end_token: u32,
    context_length: usize,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` for captions of at most `context_length` tokens.
    pub fn load(path: &Path, context_length: usize) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidFile { path: path.into(), reason };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| invalid(e.to_string()))?;
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| invalid(format!("no {t} token in the vocabulary")));
        let (start_token, end_token) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        Ok(Self { inner, start_token, end_token, context_length })
    }

    /// Tokens per caption once padded.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of one caption: start, BPE tokens, end; truncated to the context length with the end token kept last.
    pub fn encode(&self, caption: &str) -> Result<Vec<u32>> {
        let cleaned = bounded_caption(caption, self.context_length);
        let encoding = self.inner.encode(cleaned.as_str(), true).map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let mut ids: Vec<u32> = encoding.get_ids().to_vec();
        if ids.first() != Some(&self.start_token) {
            ids.insert(0, self.start_token);
        }
        if ids.len() == 1 || ids.last() != Some(&self.end_token) {
            ids.push(self.end_token);
        }
        if ids.len() > self.context_length {
            ids.truncate(self.context_length);
            ids[self.context_length - 1] = self.end_token;
        }
        Ok(ids)
    }

    /// Padded `[n, len]` token matrix (row-major) where `len` is `context_length`, or the longest caption when
    /// `trim` is set (valid only for models whose text tower accepts shorter sequences).
    pub fn encode_batch(&self, captions: &[&str], trim: bool) -> Result<(Vec<i64>, usize)> {
        let encoded: Vec<Vec<u32>> = captions.iter().map(|c| self.encode(c)).collect::<Result<_>>()?;
        let len = if trim { encoded.iter().map(Vec::len).max().unwrap_or(2) } else { self.context_length };
        let mut out = vec![0i64; captions.len() * len];
        for (row, ids) in encoded.iter().enumerate() {
            for (j, &id) in ids.iter().enumerate() {
                out[row * len + j] = id as i64;
            }
        }
        Ok((out, len))
    }
}

/// Raw characters read per token of context: far more than any real caption needs for its first tokens.
const RAW_CHARS_PER_TOKEN: usize = 256;

/// The cleaned caption cut so that tokenizing costs what `context_length` tokens need, not what the caption weighs
/// (a multi-megabyte caption would otherwise be cleaned and tokenized whole on the text worker). Every
/// whitespace-separated word yields at least one token, so keeping the first `context_length` words keeps every
/// token that survives truncation; the raw text is first cut at `RAW_CHARS_PER_TOKEN` characters per token, which
/// only a caption whose first words average over 256 characters could notice.
pub fn bounded_caption(text: &str, context_length: usize) -> String {
    let raw_limit = context_length.max(1).saturating_mul(RAW_CHARS_PER_TOKEN);
    let raw = match text.char_indices().nth(raw_limit) {
        Some((cut, _)) => &text[..cut],
        None => text,
    };
    let cleaned = clean_caption(raw);
    match cleaned.split(' ').nth(context_length) {
        Some(_) => cleaned.split(' ').take(context_length).collect::<Vec<_>>().join(" "),
        None => cleaned,
    }
}

/// OpenAI CLIP's `basic_clean` + `whitespace_clean`: the ftfy fixes that matter for captions, HTML unescaped
/// twice, whitespace collapsed and trimmed.
pub fn clean_caption(text: &str) -> String {
    let unescaped = html_escape::decode_html_entities(&html_escape::decode_html_entities(text)).into_owned();
    let mut out = String::with_capacity(unescaped.len());
    for ch in unescaped.chars() {
        match ch {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(ch as u32 - 0xFEE0).unwrap_or(ch)),
            '\t' | '\n' | '\r' => out.push(ch),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::{bounded_caption, clean_caption};

    #[test]
    fn clean_up_follows_openai_basic_clean() {
        assert_eq!(clean_caption("  a&amp;amp;b \n\t c "), "a&b c");
        assert_eq!(clean_caption("\u{201C}hi\u{201D} it\u{2019}s \u{FB01}ne"), "\"hi\" it's fine");
        assert_eq!(clean_caption("\u{FF21}\u{FF22}\u{3000}c"), "AB c");
        assert_eq!(clean_caption(""), "");
    }

    #[test]
    fn long_captions_are_cut_to_what_the_context_can_hold() {
        assert_eq!(bounded_caption("a  b c d", 3), "a b c");
        assert_eq!(bounded_caption("a b", 77), "a b");
        let huge = "word ".repeat(1_000_000);
        let started = std::time::Instant::now();
        let cut = bounded_caption(&huge, 77);
        assert_eq!(cut.split(' ').count(), 77);
        assert!(started.elapsed().as_millis() < 500, "took {:?}", started.elapsed());
        let one_word = "x".repeat(5_000_000);
        assert_eq!(bounded_caption(&one_word, 77).len(), 77 * 256);
    }
}
