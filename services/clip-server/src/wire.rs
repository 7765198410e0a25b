//! clip-retrieval's request JSON, read as leniently as its Flask back reads it: bodies without a Content-Type,
//! explicit nulls, `aesthetic_score`/`aesthetic_weight` as "" or numbers or numeric strings, unknown extra fields
//! (`verbose`). Anything else wrong is a [`SearchError::BadRequest`] naming the field.

use base64::Engine;
use clip_search::{KnnQuery, Modality, QueryInput, SearchError};
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, SearchError>;

/// clip-retrieval's ClipClient default for `num_images` (its back requires the field; we default it).
pub const DEFAULT_NUM_IMAGES: usize = 40;

/// Largest `aesthetic_weight` accepted (either sign): the UI's slider goes to 1; beyond this the aesthetic term
/// alone decides the query, and at f32's range it overflows.
pub const MAX_AESTHETIC_WEIGHT: f64 = 1000.0;

/// Parses a body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(SearchError::bad("body", format!("expected a JSON object, got {}", kind(&other)))),
        Err(e) => Err(SearchError::bad("body", format!("not valid JSON: {e}"))),
    }
}

/// A `/knn-service` body.
pub fn knn_query(body: &[u8]) -> Result<KnnQuery> {
    let o = object(body)?;
    let text = string(&o, "text")?.filter(|t| !t.is_empty());
    let image = string(&o, "image")?.filter(|t| !t.is_empty());
    let image_url = string(&o, "image_url")?.filter(|t| !t.is_empty());
    let input = if let Some(t) = text {
        QueryInput::Text(t)
    } else if let Some(b64) = image {
        QueryInput::Image(decode_base64(&b64)?)
    } else if let Some(url) = image_url {
        QueryInput::ImageUrl(url)
    } else if let Some(e) = embedding(&o)? {
        QueryInput::Embedding(e)
    } else {
        return Err(SearchError::bad("text", "one of text, image, image_url or embedding_input is required"));
    };
    let modality = match string(&o, "modality")?.as_deref() {
        None | Some("image") => Modality::Image,
        Some("text") => Modality::Text,
        Some(other) => return Err(SearchError::bad("modality", format!("{other:?} is not image or text"))),
    };
    let num_images = count(&o, "num_images")?.unwrap_or(DEFAULT_NUM_IMAGES);
    let aesthetic_score = match loose_number(&o, "aesthetic_score")? {
        None => None,
        Some(s) if s.fract() == 0.0 && (0.0..=9.0).contains(&s) => Some(s as u8),
        Some(s) => return Err(SearchError::bad("aesthetic_score", format!("{s} is not a rating from 0 to 9"))),
    };
    let aesthetic_weight = match loose_number(&o, "aesthetic_weight")? {
        None => 0.5,
        Some(w) if w.abs() <= MAX_AESTHETIC_WEIGHT => w as f32,
        Some(w) => {
            return Err(SearchError::bad(
                "aesthetic_weight",
                format!("{w} is outside -{MAX_AESTHETIC_WEIGHT}..{MAX_AESTHETIC_WEIGHT}"),
            ))
        }
    };
    Ok(KnnQuery {
        input,
        modality,
        num_images,
        num_result_ids: count(&o, "num_result_ids")?.unwrap_or(num_images),
        indice_name: string(&o, "indice_name")?,
        deduplicate: boolean(&o, "deduplicate")?.unwrap_or(false),
        use_safety_model: boolean(&o, "use_safety_model")?.unwrap_or(false),
        use_violence_detector: boolean(&o, "use_violence_detector")?.unwrap_or(false),
        aesthetic: aesthetic_score.map(|s| (s, aesthetic_weight)),
        use_mclip: boolean(&o, "use_mclip")?.unwrap_or(false),
        allow_partial_results: boolean(&o, "allow_partial_results")?,
        return_vectors: boolean(&o, clip_search::shards::RETURN_VECTORS_FIELD)?.unwrap_or(false),
    })
}

/// A `/metadata` body: `(indice_name, ids)`.
pub fn metadata_query(body: &[u8]) -> Result<(Option<String>, Vec<i64>)> {
    let o = object(body)?;
    let ids = match o.get("ids") {
        None | Some(Value::Null) => return Err(SearchError::bad("ids", "a list of ids is required")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| integer(v).ok_or_else(|| SearchError::bad("ids", format!("{v} is not an integer id"))))
            .collect::<Result<Vec<i64>>>()?,
        Some(other) => return Err(SearchError::bad("ids", format!("expected a list, got {}", kind(other)))),
    };
    Ok((string(&o, "indice_name")?, ids))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string(o: &Map<String, Value>, key: &'static str) -> Result<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(SearchError::bad(key, format!("expected a string, got {}", kind(other)))),
    }
}

fn boolean(o: &Map<String, Value>, key: &'static str) -> Result<Option<bool>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(Some(true)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" | "" => Ok(Some(false)),
            _ => Err(SearchError::bad(key, format!("{s:?} is not true or false"))),
        },
        Some(other) => Err(SearchError::bad(key, format!("expected true or false, got {}", kind(other)))),
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        _ => None,
    }
}

fn count(o: &Map<String, Value>, key: &'static str) -> Result<Option<usize>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().parse::<usize>().is_ok() => Ok(s.trim().parse().ok()),
        Some(v) => match integer(v) {
            Some(n) if n >= 0 => Ok(Some(n as usize)),
            _ => Err(SearchError::bad(key, format!("expected a non-negative integer, got {v}"))),
        },
    }
}

/// clip-retrieval reads these with `int(x) if x != "" else None`: numbers, numeric strings, "" or null.
fn loose_number(o: &Map<String, Value>, key: &'static str) -> Result<Option<f64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| SearchError::bad(key, format!("{s:?} is not a number"))),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(SearchError::bad(key, format!("expected a number or \"\", got {}", kind(other)))),
    }
}

fn embedding(o: &Map<String, Value>) -> Result<Option<Vec<f32>>> {
    match o.get("embedding_input") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.is_empty() => Err(SearchError::bad("embedding_input", "is empty")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_f64().map(|x| x as f32) {
                Some(x) if x.is_finite() => Ok(x),
                // JSON has no NaN or infinity, but 1e39 is one once it is an f32.
                Some(_) => Err(SearchError::bad("embedding_input", format!("value {i} ({v}) is out of float32 range"))),
                None => Err(SearchError::bad("embedding_input", format!("value {i} ({v}) is not a number"))),
            })
            .collect::<Result<Vec<f32>>>()
            .map(Some),
        Some(other) => {
            Err(SearchError::bad("embedding_input", format!("expected a list of numbers, got {}", kind(other))))
        }
    }
}

/// Standard base64 (padding optional), URL-safe base64, or a `data:` URL.
fn decode_base64(text: &str) -> Result<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, data)| data).unwrap_or(rest),
        None => text,
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut last = None;
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        match engine.decode(&compact) {
            Ok(bytes) if !bytes.is_empty() => return Ok(bytes),
            Ok(_) => return Err(SearchError::bad("image", "is empty")),
            Err(e) => last = Some(e),
        }
    }
    Err(SearchError::bad("image", format!("not valid base64: {}", last.map(|e| e.to_string()).unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_client_body_with_nulls_and_empty_strings() {
        let body = br#"{"text": "a red circle", "image": null, "image_url": null, "embedding_input": null,
            "deduplicate": true, "use_safety_model": true, "use_violence_detector": true, "indice_name": "demo",
            "use_mclip": false, "aesthetic_score": "", "aesthetic_weight": "", "modality": "image",
            "num_images": 10, "num_result_ids": 10, "verbose": false}"#;
        let q = knn_query(body).unwrap();
        assert!(matches!(q.input, QueryInput::Text(ref t) if t == "a red circle"));
        assert!(q.deduplicate && q.use_safety_model && q.use_violence_detector && !q.use_mclip);
        assert_eq!(q.aesthetic, None);
        assert_eq!((q.num_images, q.num_result_ids), (10, 10));
        assert_eq!(q.indice_name.as_deref(), Some("demo"));
    }

    #[test]
    fn aesthetic_numbers_or_numeric_strings() {
        let q = knn_query(br#"{"text": "x", "aesthetic_score": 9, "aesthetic_weight": 0.5}"#).unwrap();
        assert_eq!(q.aesthetic, Some((9, 0.5)));
        let q = knn_query(br#"{"text": "x", "aesthetic_score": "7", "aesthetic_weight": "1.5"}"#).unwrap();
        assert_eq!(q.aesthetic, Some((7, 1.5)));
        let e = knn_query(br#"{"text": "x", "aesthetic_score": 12}"#).unwrap_err();
        assert!(e.to_string().starts_with("aesthetic_score:"), "{e}");
    }

    #[test]
    fn precedence_defaults_and_errors() {
        let q = knn_query(br#"{"text": "", "embedding_input": [0.5, 0.5]}"#).unwrap();
        assert!(matches!(q.input, QueryInput::Embedding(ref e) if e.len() == 2));
        assert_eq!((q.num_images, q.num_result_ids), (DEFAULT_NUM_IMAGES, DEFAULT_NUM_IMAGES));
        assert!(matches!(q.modality, Modality::Image));
        let q = knn_query(br#"{"image": "aGVsbG8", "image_url": "http://x"}"#).unwrap();
        assert!(matches!(q.input, QueryInput::Image(ref b) if b == b"hello"));
        let q = knn_query(br#"{"image": "data:image/png;base64,aGVsbG8="}"#).unwrap();
        assert!(matches!(q.input, QueryInput::Image(ref b) if b == b"hello"));
        let field = |b: &[u8]| match knn_query(b).unwrap_err() {
            SearchError::BadRequest { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(b"{}"), "text");
        assert_eq!(field(b"[1]"), "body");
        assert_eq!(field(b"{not json"), "body");
        assert_eq!(field(br#"{"image": "!!!"}"#), "image");
        assert_eq!(field(br#"{"embedding_input": [1, "a"]}"#), "embedding_input");
        assert_eq!(field(br#"{"text": "x", "modality": "audio"}"#), "modality");
        assert_eq!(field(br#"{"text": "x", "num_images": -1}"#), "num_images");
        assert_eq!(field(br#"{"text": "x", "deduplicate": "maybe"}"#), "deduplicate");
        assert_eq!(field(br#"{"text": 3}"#), "text");
    }

    #[test]
    fn metadata_bodies() {
        assert_eq!(
            metadata_query(br#"{"indice_name": "a", "ids": [1, 2.0]}"#).unwrap(),
            (Some("a".into()), vec![1, 2])
        );
        assert!(metadata_query(br#"{"ids": ["x"]}"#).is_err());
        assert!(metadata_query(br#"{"indice_name": "a"}"#).is_err());
    }
}
