//! The metadata row store: every row of `metadata/metadata_N.parquet` in id order, in one uncompressed Arrow IPC
//! file (`metadata.arrow`) that is memory-mapped, so fetching rows by id touches only the batches holding them.
//!
//! Row `i` of the store is row `i` of the index (ids are global row numbers across partitions). The file is a
//! standard Arrow IPC file: `pyarrow.ipc.open_file(pyarrow.memory_map(path))` reads it too.

use crate::embeddings::partition_number;
use crate::error::{IndexError, Result};
use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;

use arrow_ipc::Block;
use clip_data::arrow_json::row_json;
use clip_data::Location;
use clip_data::Storage;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// Rows per IPC batch: a lookup decodes (and validates) one batch per distinct batch it touches.
pub const ROWS_PER_BATCH: usize = 256;

/// Footer metadata key holding the row count of every batch (comma-separated), so that opening the store reads no
/// batch header (touching 10k headers would map a page, and its neighbours, per batch).
pub const BATCH_ROWS_KEY: &str = "clip_retrieval.batch_rows";

/// Writes batches to an IPC file and records their row counts in the footer.
pub struct RowStoreWriter<W: std::io::Write> {
    writer: FileWriter<W>,
    batch_rows: Vec<usize>,
}

impl<W: std::io::Write> RowStoreWriter<W> {
    /// Starts an IPC file with this schema.
    pub fn new(sink: W, schema: &Schema) -> arrow::error::Result<Self> {
        Ok(Self { writer: FileWriter::try_new(sink, schema)?, batch_rows: Vec::new() })
    }

    /// Appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> arrow::error::Result<()> {
        self.batch_rows.push(batch.num_rows());
        self.writer.write(batch)
    }

    /// Writes the footer.
    pub fn finish(mut self) -> arrow::error::Result<()> {
        let rows = self.batch_rows.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        self.writer.write_metadata(BATCH_ROWS_KEY, rows);
        self.writer.finish()
    }
}

/// The metadata partitions of an embeddings folder, in partition order.
pub fn metadata_partitions(storage: &Storage, folder: &Location) -> Result<Vec<(usize, Location)>> {
    let mut files: Vec<(usize, Location)> = storage
        .list(folder)?
        .into_iter()
        .filter_map(|loc| partition_number(&loc.file_name(), ".parquet").map(|n| (n, loc)))
        .collect();
    files.sort_by_key(|(n, _)| *n);
    Ok(files)
}

fn arrow_err(path: impl std::fmt::Display) -> impl FnOnce(arrow::error::ArrowError) -> IndexError {
    let path = path.to_string();
    move |e| IndexError::invalid(path, e)
}

fn parquet_err(path: impl std::fmt::Display) -> impl FnOnce(parquet::errors::ParquetError) -> IndexError {
    let path = path.to_string();
    move |e| IndexError::invalid(path, e)
}

/// Writes `target` from the metadata partitions; `expected_rows[i]` is the row count of embedding partition `i`
/// (partition numbers must match), so that row ids of the store and of the index agree.
pub fn write_row_store(
    storage: &Storage,
    partitions: &[(usize, Location)],
    expected_rows: &[(usize, usize)],
    target: &Location,
) -> Result<u64> {
    let numbers: Vec<usize> = partitions.iter().map(|(n, _)| *n).collect();
    let expected: Vec<usize> = expected_rows.iter().map(|(n, _)| *n).collect();
    if numbers != expected {
        return Err(IndexError::invalid(
            target,
            format!("metadata partitions {numbers:?} do not match embedding partitions {expected:?}"),
        ));
    }
    let files: Vec<Location> = partitions.iter().map(|(_, loc)| loc.clone()).collect();
    let rows: Vec<usize> = expected_rows.iter().map(|(_, r)| *r).collect();
    copy_parquet_rows(storage, &files, None, Some(&rows), target)
}

/// Writes `target` (an Arrow IPC row store) from parquet `files` in order, keeping `columns` (all when `None`; a
/// named column no file has is an error); `expected_rows[i]`, when given, must be file `i`'s row count.
pub fn copy_parquet_rows(
    storage: &Storage,
    files: &[Location],
    columns: Option<&[String]>,
    expected_rows: Option<&[usize]>,
    target: &Location,
) -> Result<u64> {
    let copies = files.iter().map(|loc| storage.local_copy(loc)).collect::<clip_data::Result<Vec<_>>>()?;
    let mut schemas = Vec::new();
    for (loc, copy) in files.iter().zip(&copies) {
        let file = std::fs::File::open(copy.path()).map_err(IndexError::io(loc))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(loc))?;
        schemas.push(relaxed(builder.schema()));
    }
    let mut schema = Schema::try_merge(schemas).map_err(arrow_err(target))?;
    if let Some(wanted) = columns {
        if let Some(missing) = wanted.iter().find(|c| schema.field_with_name(c).is_err()) {
            return Err(IndexError::invalid(
                files.first().map(|f| f.to_string()).unwrap_or_default(),
                format!("no column {missing:?} in the parquet files (they have: {})", field_names(&schema)),
            ));
        }
        let fields: Vec<_> = wanted.iter().map(|c| schema.field_with_name(c).expect("checked").clone()).collect();
        schema = Schema::new(fields);
    }
    let schema = Arc::new(schema);
    let mut out = storage.create(target)?;
    let mut writer = RowStoreWriter::new(out.file(), &schema).map_err(arrow_err(target))?;
    let mut total = 0u64;
    for (i, (loc, copy)) in files.iter().zip(&copies).enumerate() {
        let file = std::fs::File::open(copy.path()).map_err(IndexError::io(loc))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(ROWS_PER_BATCH).build())
            .map_err(parquet_err(loc))?;
        let mut seen = 0usize;
        for batch in reader {
            let batch = batch.map_err(arrow_err(loc))?;
            seen += batch.num_rows();
            writer.write(&conform(&batch, &schema, loc)?).map_err(arrow_err(target))?;
        }
        if let Some(rows) = expected_rows.and_then(|r| r.get(i)) {
            if seen != *rows {
                return Err(IndexError::invalid(
                    loc,
                    format!("has {seen} rows but its embedding partition has {rows}"),
                ));
            }
        }
        total += seen as u64;
    }
    writer.finish().map_err(arrow_err(target))?;
    out.commit()?;
    Ok(total)
}

fn field_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

/// clip-retrieval's `parquet_to_arrow`: every `*.parquet` of `parquet_folder` (sorted by name), `columns` kept
/// (all when `None`), written as one Arrow IPC file `output_folder/0.arrow` that `back` serves as
/// `metadata/*.arrow` (clip-retrieval starts a second file only past 10^10 rows). Returns `(files written, rows)`.
pub fn parquet_to_arrow(
    storage: &Storage,
    parquet_folder: &Location,
    output_folder: &Location,
    columns: Option<&[String]>,
) -> Result<(Vec<Location>, u64)> {
    let mut files: Vec<Location> =
        storage.list(parquet_folder)?.into_iter().filter(|l| l.file_name().ends_with(".parquet")).collect();
    files.sort_by_key(|l| l.to_string());
    if files.is_empty() {
        return Err(IndexError::invalid(parquet_folder, "no *.parquet files"));
    }
    let target = output_folder.join("0.arrow");
    let rows = copy_parquet_rows(storage, &files, columns, None, &target)?;
    Ok((vec![target], rows))
}

/// `(partition number, row count)` of local metadata partitions, read from their parquet footers.
pub fn parquet_row_counts(storage: &Storage, partitions: &[(usize, Location)]) -> Result<Vec<(usize, usize)>> {
    partitions
        .iter()
        .map(|(n, loc)| {
            let copy = storage.local_copy(loc)?;
            let file = std::fs::File::open(copy.path()).map_err(IndexError::io(loc))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(loc))?;
            Ok((*n, builder.metadata().file_metadata().num_rows() as usize))
        })
        .collect()
}

/// Every field nullable, so partitions where a column is sometimes missing merge.
fn relaxed(schema: &SchemaRef) -> Schema {
    Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>())
}

/// `batch` with the columns of `schema`, in its order; missing columns are null. `source` names the batch's file in
/// errors.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef, source: impl std::fmt::Display) -> Result<RecordBatch> {
    let source = source.to_string();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(arrow_err(&source)),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err(&source))
}

/// A memory-mapped row store opened for lookups, over one Arrow IPC file (`metadata.arrow`) or several read as
/// one in order (`metadata/*.arrow`, as clip-retrieval's `parquet_to_arrow` writes them); cheap to share between
/// threads.
pub struct RowStore {
    files: Vec<ArrowFile>,
    /// First row of each file, plus the total at the end.
    starts: Vec<u64>,
    columns: Vec<String>,
}

impl std::fmt::Debug for RowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|a| a.path.as_str()).collect();
        write!(f, "RowStore({}, {} rows)", names.join(", "), self.len())
    }
}

impl RowStore {
    /// Maps `path` and reads its footer.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::of(vec![ArrowFile::open(path)?]))
    }

    /// Maps every file of `paths` and reads them as one store, rows in file order.
    pub fn open_many(paths: &[std::path::PathBuf]) -> Result<Self> {
        Ok(Self::of(paths.iter().map(|p| ArrowFile::open(p)).collect::<Result<_>>()?))
    }

    /// Reads the footer of an IPC file held in `buffer`; `name` names it in errors (see [`ArrowFile`]).
    pub fn from_buffer(name: &str, buffer: Buffer) -> Result<Self> {
        Ok(Self::of(vec![ArrowFile::from_buffer(name, buffer)?]))
    }

    fn of(files: Vec<ArrowFile>) -> Self {
        let mut starts = vec![0u64];
        let mut columns: Vec<String> = Vec::new();
        for f in &files {
            starts.push(starts.last().expect("starts begins with 0") + f.len());
            for c in f.columns() {
                if !columns.contains(&c) {
                    columns.push(c);
                }
            }
        }
        Self { files, starts, columns }
    }

    /// Number of rows.
    pub fn len(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    /// Whether the store holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column names in order (of every file, in order of first appearance).
    pub fn columns(&self) -> Vec<String> {
        self.columns.clone()
    }

    /// The rows with these ids as JSON objects (column -> value, nulls left out), in the order asked; `None` for an
    /// id outside the store. `columns` restricts the columns returned.
    pub fn get(&self, ids: &[u64], columns: Option<&[String]>) -> Result<Vec<Option<Map<String, Value>>>> {
        if let [only] = self.files.as_slice() {
            return only.get(ids, columns);
        }
        let mut out = vec![None; ids.len()];
        let mut per_file: Vec<(Vec<usize>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); self.files.len()];
        for (pos, &id) in ids.iter().enumerate() {
            if id < self.len() {
                let f = self.starts.partition_point(|&s| s <= id) - 1;
                per_file[f].0.push(pos);
                per_file[f].1.push(id - self.starts[f]);
            }
        }
        for (f, (positions, local)) in per_file.into_iter().enumerate() {
            if local.is_empty() {
                continue;
            }
            for (pos, row) in positions.into_iter().zip(self.files[f].get(&local, columns)?) {
                out[pos] = row;
            }
        }
        Ok(out)
    }
}

/// One memory-mapped Arrow IPC file of a row store.
struct ArrowFile {
    path: String,
    buffer: Buffer,
    decoder: FileDecoder,
    blocks: Vec<Block>,
    /// First row of each batch, plus the total at the end.
    starts: Vec<u64>,
    schema: SchemaRef,
}

impl ArrowFile {
    /// Maps `path` and reads its footer.
    fn open(path: &Path) -> Result<Self> {
        Self::from_buffer(&path.display().to_string(), Buffer::from(crate::mmap::map_file(path)?))
    }

    /// Reads the footer of an IPC file held in `buffer`; `name` names it in errors. Every offset the footer gives is
    /// checked against the buffer here, so a truncated or corrupt file is one error at load, never a panic per
    /// lookup; batch contents are validated by arrow when a lookup decodes them.
    fn from_buffer(name: &str, buffer: Buffer) -> Result<Self> {
        let invalid = |reason: String| IndexError::invalid(name, reason);
        // "ARROW1" + 2 bytes of padding, ..., footer, footer length (4 bytes), "ARROW1".
        const MAGIC: &[u8] = b"ARROW1";
        if buffer.len() < 8 + 10 || &buffer[..6] != MAGIC || &buffer[buffer.len() - 6..] != MAGIC {
            return Err(invalid("not an Arrow IPC file (no ARROW1 magic at both ends; truncated?)".into()));
        }
        let trailer = buffer.len() - 10;
        let footer_len =
            read_footer_length(buffer[trailer..].try_into().expect("10 bytes")).map_err(arrow_err(name))?;
        let footer_start = trailer
            .checked_sub(footer_len)
            .filter(|&s| s >= 8)
            .ok_or_else(|| invalid(format!("footer length {footer_len} exceeds the file ({} bytes)", buffer.len())))?;
        let footer = arrow_ipc::root_as_footer(&buffer[footer_start..trailer])
            .map_err(|e| invalid(format!("bad Arrow IPC footer: {e}")))?;
        let fb_schema = footer.schema().ok_or_else(|| invalid("no schema".into()))?;
        let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(arrow_err(name))?);
        let version = footer.version();
        let blocks: Vec<Block> = footer.recordBatches().map(|b| b.iter().copied().collect()).unwrap_or_default();
        for (i, b) in blocks.iter().enumerate() {
            check_block(b, footer_start).map_err(|reason| invalid(format!("record batch {i}: {reason}")))?;
        }
        let recorded: Option<Vec<u64>> = footer
            .custom_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key() == Some(BATCH_ROWS_KEY)))
            .and_then(|e| e.value())
            .map(|v| v.split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect());
        let decoder = FileDecoder::new(schema.clone(), version);
        let mut store = Self { path: name.to_string(), buffer, decoder, blocks, starts: vec![0], schema };
        let rows: Vec<u64> = match recorded {
            Some(rows) if rows.len() == store.blocks.len() => rows,
            // Written elsewhere (pyarrow): batch lengths come from each batch's message header.
            _ => (0..store.blocks.len()).map(|i| store.batch_rows(i)).collect::<Result<_>>()?,
        };
        for r in rows {
            let last = *store.starts.last().expect("starts begins with 0");
            let next = last.checked_add(r).ok_or_else(|| invalid("batch row counts overflow".into()))?;
            store.starts.push(next);
        }
        Ok(store)
    }

    fn block_buffer(&self, i: usize) -> Buffer {
        let b = &self.blocks[i];
        // In range: checked by `check_block` at open.
        self.buffer.slice_with_length(b.offset() as usize, b.metaDataLength() as usize + b.bodyLength() as usize)
    }

    /// The record batch header of block `i` (the flatbuffer message after the 8-byte continuation marker and length).
    fn batch_header(&self, i: usize) -> Result<arrow_ipc::RecordBatch<'_>> {
        let b = &self.blocks[i];
        // In range: checked by `check_block` at open.
        let message = &self.buffer[b.offset() as usize + 8..b.offset() as usize + b.metaDataLength() as usize];
        let message = arrow_ipc::root_as_message(message)
            .map_err(|e| IndexError::invalid(&self.path, format!("batch {i}: bad batch message: {e}")))?;
        message
            .header_as_record_batch()
            .ok_or_else(|| IndexError::invalid(&self.path, format!("batch {i}: block is not a record batch")))
    }

    fn batch_rows(&self, i: usize) -> Result<u64> {
        u64::try_from(self.batch_header(i)?.length())
            .map_err(|_| IndexError::invalid(&self.path, format!("batch {i} has a negative length")))
    }

    /// Checks that every buffer the batch's message names lies inside the block's body: arrow-ipc slices them
    /// unchecked and panics on one past the end (found by the `metadata_arrow` fuzz target).
    fn check_buffers(&self, i: usize) -> Result<()> {
        let body = self.blocks[i].bodyLength();
        let invalid = |reason: String| IndexError::invalid(&self.path, format!("batch {i}: {reason}"));
        let batch = self.batch_header(i)?;
        // Body and buffers are 8-byte aligned in the IPC format; arrow asserts alignment when it reads offsets.
        let body_start = self.blocks[i].offset() + i64::from(self.blocks[i].metaDataLength());
        if body_start % 8 != 0 {
            return Err(invalid(format!("body at {body_start} is not 8-byte aligned")));
        }
        for (n, b) in batch.buffers().iter().flat_map(|v| v.iter()).enumerate() {
            let end = b.offset().checked_add(b.length());
            if b.offset() % 8 != 0 {
                return Err(invalid(format!("buffer {n} at offset {} is not 8-byte aligned", b.offset())));
            }
            if b.offset() < 0 || b.length() < 0 || end.is_none_or(|e| e > body) {
                return Err(invalid(format!(
                    "buffer {n} (offset {}, {} bytes) lies outside the body ({body} bytes)",
                    b.offset(),
                    b.length()
                )));
            }
        }
        Ok(())
    }

    fn batch(&self, i: usize) -> Result<RecordBatch> {
        self.check_buffers(i)?;
        // arrow-ipc still asserts on some malformed bodies (an offsets buffer whose length is not a multiple of its
        // width, found by the fuzz target): a corrupt batch is an error for this lookup, never a panic per request.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decoder.read_record_batch(&self.blocks[i], &self.block_buffer(i))
        }))
        .map_err(|_| IndexError::invalid(&self.path, format!("batch {i} is corrupt (arrow could not decode it)")))?;
        let batch =
            decoded.map_err(arrow_err(&self.path))?.ok_or_else(|| IndexError::invalid(&self.path, "empty batch"))?;
        // The footer's row counts place ids in batches; a batch that disagrees would index past its end.
        let expected = self.starts[i + 1] - self.starts[i];
        if batch.num_rows() as u64 != expected {
            return Err(IndexError::invalid(
                &self.path,
                format!("batch {i} has {} rows but the footer records {expected}", batch.num_rows()),
            ));
        }
        Ok(batch)
    }

    fn len(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    fn columns(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn get(&self, ids: &[u64], columns: Option<&[String]>) -> Result<Vec<Option<Map<String, Value>>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i]);
        let mut out = vec![None; ids.len()];
        let mut current: Option<(usize, RecordBatch)> = None;
        for i in order {
            let id = ids[i];
            if id >= self.len() {
                continue;
            }
            let b = self.starts.partition_point(|&s| s <= id) - 1;
            if current.as_ref().map(|(cb, _)| *cb) != Some(b) {
                current = Some((b, self.batch(b)?));
            }
            let (_, batch) = current.as_ref().expect("just set");
            out[i] = Some(row_json(batch, (id - self.starts[b]) as usize, columns));
        }
        Ok(out)
    }
}

/// Whether a footer block lies inside the file's body (after the leading magic, before the footer), with room for
/// its message prefix.
fn check_block(b: &Block, footer_start: usize) -> std::result::Result<(), String> {
    let (offset, meta, body) = (b.offset(), i64::from(b.metaDataLength()), b.bodyLength());
    if offset < 8 || meta < 8 || body < 0 {
        return Err(format!("bad block (offset {offset}, metadata {meta} bytes, body {body} bytes)"));
    }
    match offset.checked_add(meta).and_then(|e| e.checked_add(body)) {
        Some(end) if end as u64 <= footer_start as u64 => Ok(()),
        _ => Err(format!("block at {offset} ({meta} + {body} bytes) runs past the data ({footer_start} bytes)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn parquet(path: &Path, captions: &[&str], with_width: bool) {
        let mut fields = vec![Field::new("caption", DataType::Utf8, true)];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(captions.to_vec()))];
        if with_width {
            fields.push(Field::new("width", DataType::Int64, true));
            cols.push(Arc::new(Int64Array::from((0..captions.len() as i64).collect::<Vec<_>>())));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        clip_data::metadata::write_parquet(&Storage::from_env(), &Location::Local(path.to_path_buf()), &batch).unwrap();
    }

    #[test]
    fn rows_keep_global_order_across_partitions_with_differing_columns() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("metadata");
        std::fs::create_dir(&meta).unwrap();
        let first: Vec<String> = (0..2500).map(|i| format!("row {i}")).collect();
        parquet(&meta.join("metadata_0.parquet"), &first.iter().map(String::as_str).collect::<Vec<_>>(), false);
        parquet(&meta.join("metadata_1.parquet"), &["x", "y"], true);
        let parts = metadata_partitions(&Storage::from_env(), &Location::Local(meta.clone())).unwrap();
        let target = Location::Local(dir.path().join("metadata.arrow"));
        assert_eq!(write_row_store(&Storage::from_env(), &parts, &[(0, 2500), (1, 2)], &target).unwrap(), 2502);
        let store = RowStore::open(&dir.path().join("metadata.arrow")).unwrap();
        assert_eq!(store.len(), 2502);
        assert_eq!(store.columns(), vec!["caption", "width"]);
        let rows = store.get(&[2501, 7, 2048, 9999], None).unwrap();
        assert_eq!(rows[0].as_ref().unwrap()["caption"], "y");
        assert_eq!(rows[0].as_ref().unwrap()["width"], 1);
        assert_eq!(rows[1].as_ref().unwrap()["caption"], "row 7");
        assert!(!rows[1].as_ref().unwrap().contains_key("width"), "null column left out");
        assert_eq!(rows[2].as_ref().unwrap()["caption"], "row 2048");
        assert!(rows[3].is_none());
        let only = store.get(&[2500], Some(&["width".to_string()])).unwrap();
        assert_eq!(Value::Object(only[0].clone().unwrap()), serde_json::json!({"width": 0}));
    }

    #[test]
    fn row_count_mismatch_names_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        parquet(&dir.path().join("metadata_0.parquet"), &["a", "b"], false);
        let parts = metadata_partitions(&Storage::from_env(), &Location::Local(dir.path().to_path_buf())).unwrap();
        let target = Location::Local(dir.path().join("out.arrow"));
        let err = write_row_store(&Storage::from_env(), &parts, &[(0, 3)], &target).unwrap_err().to_string();
        assert!(err.contains("metadata_0.parquet") && err.contains("has 2 rows"), "{err}");
    }

    /// A two-batch store (rows "a","b" then "c") as bytes.
    fn small_store() -> Vec<u8> {
        let schema = Schema::new(vec![Field::new("caption", DataType::Utf8, true)]);
        let mut bytes = Vec::new();
        let mut writer = RowStoreWriter::new(&mut bytes, &schema).unwrap();
        for rows in [vec!["a", "b"], vec!["c"]] {
            let col: ArrayRef = Arc::new(StringArray::from(rows));
            writer.write(&RecordBatch::try_new(Arc::new(schema.clone()), vec![col]).unwrap()).unwrap();
        }
        writer.finish().unwrap();
        bytes
    }

    fn open_bytes(bytes: Vec<u8>) -> Result<RowStore> {
        RowStore::from_buffer("metadata.arrow", Buffer::from(bytes))
    }

    #[test]
    fn a_sound_store_opens_from_bytes() {
        let store = open_bytes(small_store()).unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(&[2], None).unwrap()[0].as_ref().unwrap()["caption"], "c");
    }

    #[test]
    fn truncated_or_corrupt_footers_are_load_errors() {
        let good = small_store();
        let truncated = good[..good.len() - 3].to_vec();
        assert!(open_bytes(truncated).unwrap_err().to_string().contains("ARROW1"));
        let mut long_footer = good.clone();
        let at = long_footer.len() - 10;
        long_footer[at..at + 4].copy_from_slice(&(i32::MAX).to_le_bytes());
        let err = open_bytes(long_footer).unwrap_err().to_string();
        assert!(err.contains("metadata.arrow") && err.contains("footer length"), "{err}");
        // Every byte of the footer flipped in turn: each is an error or a store whose lookups do not panic.
        let footer_len = i32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        for i in at - footer_len..at {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            if let Ok(store) = open_bytes(bad) {
                let _ = store.get(&[0, 1, 2, 3], None);
            }
        }
    }

    #[test]
    fn a_footer_row_count_that_lies_is_an_error_not_a_panic() {
        let mut bytes = small_store();
        // The recorded counts "2,1": make the first batch claim 9 rows.
        let at = bytes.windows(3).rposition(|w| w == b"2,1").expect("batch rows recorded in the footer");
        bytes[at] = b'9';
        let store = open_bytes(bytes).unwrap();
        assert_eq!(store.len(), 10);
        let err = store.get(&[5], None).unwrap_err().to_string();
        assert!(err.contains("batch 0 has 2 rows but the footer records 9"), "{err}");
    }
}
