//! `.npy` files exactly as `numpy.save` writes them, streamed row by row.
//!
//! numpy pads the header so the first axis can grow in place (`GROWTH_AXIS_MAX_DIGITS`), which makes the header
//! length independent of the row count: we write it with 0 rows, stream the rows, then rewrite it. The bytes equal
//! `np.save(f, array)` for the same array.

use crate::error::{DataError, Result};
use half::f16;
use std::io::{Read, Seek, SeekFrom, Write};

const MAGIC: &[u8] = b"\x93NUMPY";
const ARRAY_ALIGN: usize = 64;
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Element type of an embedding file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `<f2`, clip-retrieval's default.
    F16,
    /// `<f4`.
    F32,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            Self::F16 => "<f2",
            Self::F32 => "<f4",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// The version 1.0 header numpy writes for a C-order 2-D array.
pub fn header(dtype: NpyDtype, rows: usize, cols: usize) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}", dtype.descr());
    dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(rows.to_string().len())));
    let hlen = dict.len() + 1;
    let pad = ARRAY_ALIGN - ((MAGIC.len() + 2 + 2 + hlen) % ARRAY_ALIGN);
    dict.push_str(&" ".repeat(pad % ARRAY_ALIGN));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Streams rows of a `[rows, cols]` matrix into a seekable sink, fixing the header on [`NpyWriter::finish`].
pub struct NpyWriter<W: Write + Seek> {
    sink: W,
    dtype: NpyDtype,
    cols: usize,
    rows: usize,
    buf: Vec<u8>,
}

impl<W: Write + Seek> NpyWriter<W> {
    /// Starts a file of `cols`-wide rows.
    pub fn new(mut sink: W, dtype: NpyDtype, cols: usize) -> std::io::Result<Self> {
        sink.write_all(&header(dtype, 0, cols))?;
        Ok(Self { sink, dtype, cols, rows: 0, buf: Vec::new() })
    }

    /// Appends one row.
    pub fn write_row(&mut self, row: &[f32]) -> std::io::Result<()> {
        assert_eq!(row.len(), self.cols, "row width differs from the file's");
        self.buf.clear();
        match self.dtype {
            NpyDtype::F16 => row.iter().for_each(|v| self.buf.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            NpyDtype::F32 => row.iter().for_each(|v| self.buf.extend_from_slice(&v.to_le_bytes())),
        }
        self.rows += 1;
        self.sink.write_all(&self.buf)
    }

    /// Appends the rows of a row-major block (`cols` values each).
    pub fn write_rows(&mut self, rows: &[f32]) -> std::io::Result<()> {
        rows.chunks_exact(self.cols).try_for_each(|row| self.write_row(row))
    }

    /// Copies `rows` rows already in this file's dtype from `r` (raw little-endian bytes, e.g. another file of the
    /// same dtype and width), streamed.
    pub fn append_raw_rows(&mut self, r: &mut impl Read, rows: usize) -> std::io::Result<()> {
        let bytes = (rows * self.cols * self.dtype.size()) as u64;
        let copied = std::io::copy(&mut r.take(bytes), &mut self.sink)?;
        if copied != bytes {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "fewer rows than the header says"));
        }
        self.rows += rows;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rewrites the header with the final row count and returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.sink.flush()?;
        self.sink.seek(SeekFrom::Start(0))?;
        self.sink.write_all(&header(self.dtype, self.rows, self.cols))?;
        self.sink.seek(SeekFrom::End(0))?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

/// A 2-D float matrix read from an `.npy` file (f16 or f32, little-endian, C order).
#[derive(Debug, Clone)]
pub struct NpyMatrix {
    /// Row count.
    pub rows: usize,
    /// Column count.
    pub cols: usize,
    /// Element type found in the file.
    pub dtype: NpyDtype,
    /// `rows * cols` values as f32.
    pub data: Vec<f32>,
}

/// Parses the header of an `.npy` stream: `(dtype, rows, cols, header_len)`.
pub fn read_header(mut r: impl Read, name: &str) -> Result<(NpyDtype, usize, usize, usize)> {
    let bad = |reason: &str| DataError::format(name, format!("not a 1-D or 2-D f16/f32 npy file: {reason}"));
    let mut pre = [0u8; 10];
    r.read_exact(&mut pre).map_err(DataError::io(name))?;
    if &pre[..6] != MAGIC {
        return Err(bad("bad magic"));
    }
    let (hlen, skip) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more).map_err(DataError::io(name))?;
            (u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize, 12)
        }
        _ => return Err(bad("unknown version")),
    };
    // numpy writes headers of a few hundred bytes; a larger length is a corrupt or hostile file, not a header.
    if hlen > MAX_HEADER_BYTES {
        return Err(bad(&format!("header length {hlen} is over {MAX_HEADER_BYTES} bytes")));
    }
    let mut dict = vec![0u8; hlen];
    r.read_exact(&mut dict).map_err(DataError::io(name))?;
    let dict = String::from_utf8_lossy(&dict);
    let dtype = if dict.contains("'<f2'") {
        NpyDtype::F16
    } else if dict.contains("'<f4'") {
        NpyDtype::F32
    } else {
        return Err(bad("dtype must be <f2 or <f4"));
    };
    if dict.contains("'fortran_order': True") {
        return Err(bad("fortran order"));
    }
    let shape = dict.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [rows, cols] => (*rows, *cols),
        // A vector (e.g. one prompt or aesthetic embedding) reads as a single row.
        [cols] => (1, *cols),
        _ => return Err(bad("shape is not 1-D or 2-D")),
    };
    if cols == 0 {
        return Err(bad(&format!("shape ({rows}, 0) has no columns")));
    }
    if data_bytes(rows, cols, dtype).is_none() {
        return Err(bad(&format!("shape ({rows}, {cols}) is too large to address")));
    }
    Ok((dtype, rows, cols, skip + hlen))
}

/// Largest header length accepted (numpy's are under 1 KiB).
pub const MAX_HEADER_BYTES: usize = 1 << 16;

/// Bytes of `rows x cols` values of `dtype`, or `None` when that overflows.
pub fn data_bytes(rows: usize, cols: usize, dtype: NpyDtype) -> Option<usize> {
    rows.checked_mul(cols)?.checked_mul(dtype.size())
}

/// Reads a whole `.npy` matrix into memory.
pub fn read_matrix(bytes: &[u8], name: &str) -> Result<NpyMatrix> {
    let (dtype, rows, cols, offset) = read_header(bytes, name)?;
    let body = &bytes[offset.min(bytes.len())..];
    if body.len() < data_bytes(rows, cols, dtype).unwrap_or(usize::MAX) {
        return Err(DataError::format(name, format!("truncated: expected {} rows of {cols}", rows)));
    }
    let data = match dtype {
        NpyDtype::F16 => {
            body.chunks_exact(2).take(rows * cols).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        NpyDtype::F32 => {
            body.chunks_exact(4).take(rows * cols).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    };
    Ok(NpyMatrix { rows, cols, dtype, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_is_numpy_s_and_constant_length() {
        let h = header(NpyDtype::F16, 3, 512);
        assert_eq!(h.len(), 128);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.starts_with("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 512), }"));
        assert!(text.ends_with('\n'));
        assert_eq!(header(NpyDtype::F32, 123_456_789_012, 4096).len(), 128);
    }

    #[test]
    fn streamed_file_reads_back() {
        let mut w = NpyWriter::new(Cursor::new(Vec::new()), NpyDtype::F16, 2).unwrap();
        w.write_row(&[0.5, -1.0]).unwrap();
        w.write_row(&[0.25, 2.0]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let m = read_matrix(&bytes, "t.npy").unwrap();
        assert_eq!((m.rows, m.cols, m.dtype), (2, 2, NpyDtype::F16));
        assert_eq!(m.data, vec![0.5, -1.0, 0.25, 2.0]);
    }

    fn raw(dict: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out
    }

    #[test]
    fn hostile_headers_are_format_errors_not_panics_or_huge_allocations() {
        let zero_cols = raw("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 0), }");
        let err = read_header(zero_cols.as_slice(), "z.npy").unwrap_err().to_string();
        assert!(err.contains("z.npy") && err.contains("shape (5, 0) has no columns"), "{err}");
        let huge = raw("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 4), }");
        assert!(read_header(huge.as_slice(), "h.npy").unwrap_err().to_string().contains("too large to address"));
        assert!(read_matrix(&huge, "h.npy").is_err());
        let mut long = MAGIC.to_vec();
        long.extend([2, 0]);
        long.extend(u32::MAX.to_le_bytes());
        let err = read_header(long.as_slice(), "l.npy").unwrap_err().to_string();
        assert!(err.contains("header length 4294967295 is over 65536 bytes"), "{err}");
        let truncated = raw("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4), }");
        assert!(read_matrix(&truncated, "t.npy").unwrap_err().to_string().contains("truncated"));
    }
}
