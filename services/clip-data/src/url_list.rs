//! Reading the URL lists `download` takes, as img2dataset reads them: `txt` (one URL a line), `csv` and `tsv` (a
//! header row naming the columns), `jsonl` (one object a line) and `parquet`, with the URL in `url_col` and an
//! optional caption in `caption_col`. Rows stream to a callback in file order, so memory follows one row (or one
//! parquet batch), never the list; a row over `max_row_bytes` is refused before it is held whole. A row that is
//! unusable (no URL, bad JSON, too long) is reported as a [`UrlListEvent::Bad`] and the next row is read; a file that
//! is unusable as a whole (missing, not parquet, no such column) is an error naming the file and the problem.

use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

/// The format of a URL list (img2dataset's `--input_format` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlListFormat {
    /// One URL a line; no captions.
    Txt,
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// One JSON object a line.
    Jsonl,
    /// A parquet file (LAION's metadata format).
    Parquet,
}

/// How to read a URL list.
#[derive(Debug, Clone)]
pub struct UrlListOptions {
    /// The file's format.
    pub format: UrlListFormat,
    /// The column (or JSON key) holding the URL.
    pub url_col: String,
    /// The column (or JSON key) holding the caption, if any.
    pub caption_col: Option<String>,
    /// Longest row (line, record or parquet cell) accepted, in bytes; longer ones are skipped as bad rows.
    pub max_row_bytes: usize,
}

/// Default of [`UrlListOptions::max_row_bytes`]: far above any real URL + caption, far below a memory problem.
pub const DEFAULT_MAX_ROW_BYTES: usize = 1 << 20;

/// One usable row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRow {
    /// The row's number in the list, counting bad rows too (a header row is not counted).
    pub index: u64,
    /// The URL, trimmed.
    pub url: String,
    /// The caption, when the list has a caption column and the row a value.
    pub caption: Option<String>,
}

/// What the reader hands the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlListEvent {
    /// A row to fetch.
    Row(UrlRow),
    /// A row that cannot be used, with the reason.
    Bad {
        /// Its number in the list.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Streams the rows of the URL list at `loc` to `emit` (which returns false to stop early).
pub fn read_url_list(
    storage: &Storage,
    loc: &Location,
    o: &UrlListOptions,
    emit: &mut dyn FnMut(UrlListEvent) -> bool,
) -> Result<()> {
    let copy = storage.local_copy(loc)?;
    let file = std::fs::File::open(copy.path()).map_err(DataError::io(loc))?;
    match o.format {
        UrlListFormat::Txt => read_lines(loc, BufReader::new(file), o, emit, |line| Ok(Some((line.to_string(), None)))),
        UrlListFormat::Jsonl => read_lines(loc, BufReader::new(file), o, emit, |line| json_row(line, o)),
        UrlListFormat::Csv => read_delimited(loc, file, b',', o, emit),
        UrlListFormat::Tsv => read_delimited(loc, file, b'\t', o, emit),
        UrlListFormat::Parquet => read_parquet(loc, file, o, emit),
    }
}

/// A usable row from a URL and a caption, or the reason it is not usable.
fn event(index: u64, url: &str, caption: Option<String>) -> UrlListEvent {
    let url = url.trim();
    if url.is_empty() {
        return UrlListEvent::Bad { index, reason: "no URL".into() };
    }
    UrlListEvent::Row(UrlRow { index, url: url.to_string(), caption })
}

/// Line formats: each line of at most `max_row_bytes` is parsed by `parse` into (url, caption); blank lines are
/// skipped without a number.
fn read_lines(
    loc: &Location,
    mut reader: impl BufRead,
    o: &UrlListOptions,
    emit: &mut dyn FnMut(UrlListEvent) -> bool,
    parse: impl Fn(&str) -> std::result::Result<Option<(String, Option<String>)>, String>,
) -> Result<()> {
    let mut index = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = o.max_row_bytes as u64 + 1;
        let n = reader.by_ref().take(limit).read_until(b'\n', &mut buf).map_err(DataError::io(loc))?;
        if n == 0 {
            return Ok(());
        }
        let ev = if buf.len() as u64 == limit && buf.last() != Some(&b'\n') {
            skip_rest_of_line(&mut reader).map_err(DataError::io(loc))?;
            Some(UrlListEvent::Bad { index, reason: format!("a line over {} bytes", o.max_row_bytes) })
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Some(UrlListEvent::Bad { index, reason: "not UTF-8".into() }),
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => Some(match parse(line.trim()) {
                    Ok(Some((url, caption))) => event(index, &url, caption),
                    Ok(None) => UrlListEvent::Bad { index, reason: format!("no {:?}", o.url_col) },
                    Err(reason) => UrlListEvent::Bad { index, reason },
                }),
            }
        };
        if let Some(ev) = ev {
            index += 1;
            if !emit(ev) {
                return Ok(());
            }
        }
    }
}

/// Consumes the reader up to and including the next newline, holding at most one buffer of it.
fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
}

/// A JSON line's url and caption; `Ok(None)` when the URL key is absent.
fn json_row(line: &str, o: &UrlListOptions) -> std::result::Result<Option<(String, Option<String>)>, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let field = |key: &str| match value.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key:?} is not a string: {other}")),
    };
    let Some(url) = field(&o.url_col)? else { return Ok(None) };
    let caption = match &o.caption_col {
        Some(key) => field(key)?,
        None => None,
    };
    Ok(Some((url, caption)))
}

/// A reader that fails once more than `limit` bytes were read since the counter was last reset: it bounds what the
/// csv parser can buffer for one record (an unterminated quote would otherwise pull in the rest of the file).
struct BoundedSinceReset<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for BoundedSinceReset<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.get() > self.limit {
            return Err(std::io::Error::other(format!("a record over {} bytes", self.limit)));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// csv / tsv with a header row naming the columns (quoted fields as the csv crate parses them).
fn read_delimited(
    loc: &Location,
    file: std::fs::File,
    delimiter: u8,
    o: &UrlListOptions,
    emit: &mut dyn FnMut(UrlListEvent) -> bool,
) -> Result<()> {
    let counter = Rc::new(Cell::new(0));
    // The csv reader reads ahead one buffer; the bound is on one record plus that buffer.
    let bounded = BoundedSinceReset { inner: file, read: counter.clone(), limit: o.max_row_bytes as u64 + (64 << 10) };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(bounded);
    let headers = reader.headers().map_err(|e| DataError::format(loc, format!("reading the header row: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let url_at = column(&o.url_col).ok_or_else(|| {
        DataError::format(loc, format!("no column {:?} in the header row (columns: {:?})", o.url_col, headers))
    })?;
    let caption_at = match &o.caption_col {
        Some(name) => Some(column(name).ok_or_else(|| {
            DataError::format(loc, format!("no column {name:?} in the header row (columns: {headers:?})"))
        })?),
        None => None,
    };
    let mut record = csv::StringRecord::new();
    let mut index = 0u64;
    loop {
        counter.set(0);
        let ev = match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let bytes: usize = record.iter().map(str::len).sum();
                if bytes > o.max_row_bytes {
                    UrlListEvent::Bad { index, reason: format!("a record over {} bytes", o.max_row_bytes) }
                } else {
                    let caption = caption_at.and_then(|i| record.get(i)).filter(|c| !c.is_empty());
                    event(index, record.get(url_at).unwrap_or_default(), caption.map(str::to_string))
                }
            }
            // A parse error past a record boundary leaves the reader able to go on; an I/O error (our bound
            // included) does not: the rest of the file is one bad row.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                emit(UrlListEvent::Bad { index, reason: format!("{e}; the rest of the file is skipped") });
                return Ok(());
            }
            Err(e) => UrlListEvent::Bad { index, reason: e.to_string() },
        };
        index += 1;
        if !emit(ev) {
            return Ok(());
        }
    }
}

/// Parquet: only the URL and caption columns are decoded, in batches sized from the footer's bytes per row.
fn read_parquet(
    loc: &Location,
    file: std::fs::File,
    o: &UrlListOptions,
    emit: &mut dyn FnMut(UrlListEvent) -> bool,
) -> Result<()> {
    use arrow::array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let not_parquet =
        |e: parquet::errors::ParquetError| DataError::format(loc, format!("not a readable parquet file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(not_parquet)?;
    let schema = builder.parquet_schema();
    let leaf = |name: &str| {
        (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == name).ok_or_else(|| {
            let names: Vec<String> = (0..schema.num_columns()).map(|i| schema.column(i).path().string()).collect();
            DataError::format(loc, format!("no column {name:?} (columns: {names:?})"))
        })
    };
    let mut leaves = vec![leaf(&o.url_col)?];
    if let Some(c) = &o.caption_col {
        leaves.push(leaf(c)?);
    }
    let metadata = builder.metadata().clone();
    let rows: i64 = metadata.row_groups().iter().map(|g| g.num_rows()).sum();
    let bytes: i64 =
        metadata.row_groups().iter().flat_map(|g| leaves.iter().map(move |&i| g.column(i).uncompressed_size())).sum();
    let per_row = (bytes.max(0) as u64 / rows.max(1) as u64).max(1);
    let batch_rows = ((64u64 << 20) / per_row).clamp(1, 8192) as usize;
    let mask = ProjectionMask::leaves(schema, leaves.clone());
    let reader = builder.with_projection(mask).with_batch_size(batch_rows).build().map_err(not_parquet)?;
    let strings = |batch: &arrow::record_batch::RecordBatch, name: &str| -> Result<StringArray> {
        let col = batch.column_by_name(name).ok_or_else(|| DataError::format(loc, format!("no column {name:?}")))?;
        let cast = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| DataError::format(loc, format!("column {name:?} is not text: {e}")))?;
        Ok(cast.as_any().downcast_ref::<StringArray>().cloned().expect("cast to Utf8 gives a StringArray"))
    };
    let mut index = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::format(loc, format!("corrupt parquet: {e}")))?;
        let urls = strings(&batch, &o.url_col)?;
        let captions = o.caption_col.as_deref().map(|c| strings(&batch, c)).transpose()?;
        for row in 0..batch.num_rows() {
            let caption = captions.as_ref().filter(|c| c.is_valid(row)).map(|c| c.value(row).to_string());
            let url = if urls.is_valid(row) { urls.value(row) } else { "" };
            let ev = if url.len() + caption.as_ref().map_or(0, String::len) > o.max_row_bytes {
                UrlListEvent::Bad { index, reason: format!("a row over {} bytes", o.max_row_bytes) }
            } else {
                event(index, url, caption.filter(|c| !c.is_empty()))
            };
            index += 1;
            if !emit(ev) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn options(format: UrlListFormat, caption: Option<&str>) -> UrlListOptions {
        UrlListOptions {
            format,
            url_col: if format == UrlListFormat::Parquet { "URL".into() } else { "url".into() },
            caption_col: caption.map(str::to_string),
            max_row_bytes: 200,
        }
    }

    fn read(path: &std::path::Path, o: &UrlListOptions) -> Result<Vec<UrlListEvent>> {
        let mut events = Vec::new();
        read_url_list(&Storage::from_env(), &Location::Local(path.into()), o, &mut |e| {
            events.push(e);
            true
        })?;
        Ok(events)
    }

    fn row(index: u64, url: &str, caption: Option<&str>) -> UrlListEvent {
        UrlListEvent::Row(UrlRow { index, url: url.into(), caption: caption.map(str::to_string) })
    }

    fn is_bad(e: &UrlListEvent, index: u64, words: &str) -> bool {
        matches!(e, UrlListEvent::Bad { index: i, reason } if *i == index && reason.contains(words))
    }

    #[test]
    fn txt_lines_are_urls_and_an_over_long_line_is_one_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urls.txt");
        let long = format!("http://x/{}", "a".repeat(5000));
        std::fs::write(&path, format!("http://a/1.jpg\n\n  http://a/2.jpg  \n{long}\nhttp://a/3.jpg")).unwrap();
        let events = read(&path, &options(UrlListFormat::Txt, None)).unwrap();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0], row(0, "http://a/1.jpg", None));
        assert_eq!(events[1], row(1, "http://a/2.jpg", None));
        assert!(is_bad(&events[2], 2, "over 200 bytes"), "{:?}", events[2]);
        assert_eq!(events[3], row(3, "http://a/3.jpg", None), "the line after the long one is read whole");
    }

    #[test]
    fn csv_and_tsv_take_columns_by_header_name_with_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("urls.csv");
        std::fs::write(
            &csv_path,
            "id,url,caption\n1,http://a/1.jpg,\"a cat, sitting\"\n2,,no url\n3,http://a/3.jpg,\n",
        )
        .unwrap();
        let events = read(&csv_path, &options(UrlListFormat::Csv, Some("caption"))).unwrap();
        assert_eq!(events[0], row(0, "http://a/1.jpg", Some("a cat, sitting")));
        assert!(is_bad(&events[1], 1, "no URL"));
        assert_eq!(events[2], row(2, "http://a/3.jpg", None));
        let tsv_path = dir.path().join("urls.tsv");
        std::fs::write(&tsv_path, "caption\turl\na dog\thttp://a/9.jpg\n").unwrap();
        assert_eq!(
            read(&tsv_path, &options(UrlListFormat::Tsv, Some("caption"))).unwrap(),
            vec![row(0, "http://a/9.jpg", Some("a dog"))]
        );
        let err = read(&csv_path, &options(UrlListFormat::Csv, Some("TEXT"))).unwrap_err().to_string();
        assert!(err.contains("urls.csv") && err.contains("no column \"TEXT\""), "{err}");
    }

    #[test]
    fn an_unterminated_quote_does_not_pull_the_rest_of_a_csv_into_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urls.csv");
        let tail = "x".repeat(1 << 20);
        std::fs::write(&path, format!("url,caption\nhttp://a/1.jpg,ok\nhttp://a/2.jpg,\"open{tail}\n")).unwrap();
        let events = read(&path, &options(UrlListFormat::Csv, Some("caption"))).unwrap();
        assert_eq!(events[0], row(0, "http://a/1.jpg", Some("ok")));
        // Refused by the reader's bound while reading, not after holding the megabyte record.
        assert!(is_bad(&events[1], 1, "the rest of the file is skipped"), "{:?}", events[1]);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn jsonl_rows_with_bad_json_or_types_are_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urls.jsonl");
        std::fs::write(
            &path,
            "{\"url\": \"http://a/1.jpg\", \"caption\": \"one\"}\nnot json\n{\"url\": 7}\n{\"caption\": \"x\"}\n\
             {\"url\": \"http://a/5.jpg\", \"caption\": null}\n",
        )
        .unwrap();
        let events = read(&path, &options(UrlListFormat::Jsonl, Some("caption"))).unwrap();
        assert_eq!(events[0], row(0, "http://a/1.jpg", Some("one")));
        assert!(is_bad(&events[1], 1, "not a JSON object"));
        assert!(is_bad(&events[2], 2, "not a string"));
        assert!(is_bad(&events[3], 3, "no \"url\""));
        assert_eq!(events[4], row(4, "http://a/5.jpg", None));
    }

    #[test]
    fn laion_style_parquet_reads_url_and_text_and_names_a_missing_column() {
        use arrow::array::StringArray;
        use arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("URL", DataType::Utf8, true),
            Field::new("TEXT", DataType::Utf8, true),
            Field::new("WIDTH", DataType::Utf8, true),
        ]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("http://a/1.jpg"), None, Some("http://a/3.jpg")])),
                Arc::new(StringArray::from(vec![Some("one"), Some("two"), None])),
                Arc::new(StringArray::from(vec![Some("1"), Some("2"), Some("3")])),
            ],
        )
        .unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let events = read(&path, &options(UrlListFormat::Parquet, Some("TEXT"))).unwrap();
        assert_eq!(events[0], row(0, "http://a/1.jpg", Some("one")));
        assert!(is_bad(&events[1], 1, "no URL"));
        assert_eq!(events[2], row(2, "http://a/3.jpg", None));
        let err = read(&path, &options(UrlListFormat::Parquet, Some("caption"))).unwrap_err().to_string();
        assert!(err.contains("part.parquet") && err.contains("no column \"caption\""), "{err}");
        let text = dir.path().join("not.parquet");
        std::fs::write(&text, "url\nhttp://a\n").unwrap();
        let err = read(&text, &options(UrlListFormat::Parquet, None)).unwrap_err().to_string();
        assert!(err.contains("not a readable parquet file"), "{err}");
    }
}
