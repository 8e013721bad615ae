//! A bounded safetensors reader and a streaming writer.
//!
//! Format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"__metadata__": {..}, "name": {"dtype", "shape", "data_offsets": [begin, end]}, ..}`),
//! then the data; offsets are relative to the data start. The parser checks every length,
//! offset, shape product and dtype against the file before anything is allocated from it or
//! indexed with it: tensors must lie inside the data, must not overlap, and must be exactly as
//! long as dtype × shape says.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::HugePageWriter;

/// Largest header we accept (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Largest rank we accept.
pub const MAX_RANK: usize = 8;

/// Element types we read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The safetensors spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }

    /// Parses the safetensors spelling.
    pub fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F64" => Dtype::F64,
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Floating-point types a latent checkpoint may use.
    pub const fn is_float(self) -> bool {
        matches!(self, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor entry of a header, validated against its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the first element in the file.
    pub offset: u64,
    /// Length in bytes (`numel · dtype.size()`).
    pub len: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, validated header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// `__metadata__`, string to string.
    pub metadata: BTreeMap<String, String>,
    /// Tensors in file order (by offset).
    pub tensors: Vec<TensorInfo>,
}

impl Header {
    /// Parses and validates a header against a file of `file_len` bytes whose first bytes are
    /// `prefix` (at least the 8-byte length and the JSON; more is ignored). `path` is for errors.
    pub fn parse(path: &Path, prefix: &[u8], file_len: u64) -> Result<Header> {
        let bad = |reason: String| Error::header(path, reason);
        if file_len < 8 || prefix.len() < 8 {
            return Err(bad(format!(
                "file is {file_len} bytes, shorter than the 8-byte header length"
            )));
        }
        let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
        if n > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes"
            )));
        }
        if n > file_len - 8 {
            return Err(bad(format!(
                "header length {n} runs past the end of the file ({file_len} bytes): truncated?"
            )));
        }
        let json = prefix
            .get(8..8 + n as usize)
            .ok_or_else(|| bad("header bytes not available".into()))?;
        let data_start = 8 + n;
        let data_len = file_len - data_start;
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;

        let mut header = Header::default();
        for (name, entry) in obj {
            if name == "__metadata__" {
                let meta = entry
                    .as_object()
                    .ok_or_else(|| bad("`__metadata__` is not an object".into()))?;
                for (k, v) in meta {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(format!("metadata `{k}` is not a string")))?;
                    header.metadata.insert(k.clone(), v.to_string());
                }
                continue;
            }
            header
                .tensors
                .push(parse_entry(path, name, entry, data_start, data_len)?);
        }
        header.tensors.sort_by_key(|t| t.offset);
        for pair in header.tensors.windows(2) {
            if pair[0].offset + pair[0].len > pair[1].offset {
                return Err(Error::tensor(
                    path,
                    &pair[1].name,
                    format!("data overlaps tensor `{}`", pair[0].name),
                ));
            }
        }
        Ok(header)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &serde_json::Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo> {
    let bad = |reason: String| Error::tensor(path, name, reason);
    let dtype_str = entry
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("missing `dtype`".into()))?;
    let dtype =
        Dtype::parse(dtype_str).ok_or_else(|| bad(format!("unsupported dtype `{dtype_str}`")))?;
    let shape_json = entry
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing `shape`".into()))?;
    if shape_json.len() > MAX_RANK {
        return Err(bad(format!("rank {} exceeds {MAX_RANK}", shape_json.len())));
    }
    let mut shape = Vec::with_capacity(shape_json.len());
    let mut numel: u64 = 1;
    for d in shape_json {
        let d = d
            .as_u64()
            .ok_or_else(|| bad(format!("shape entry {d} is not a non-negative integer")))?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| bad("shape product overflows".into()))?;
        shape.push(usize::try_from(d).map_err(|_| bad("shape entry too large".into()))?);
    }
    let offsets = entry
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("`data_offsets` is not a pair".into()))?;
    let begin = offsets[0]
        .as_u64()
        .ok_or_else(|| bad("`data_offsets` are not integers".into()))?;
    let end = offsets[1]
        .as_u64()
        .ok_or_else(|| bad("`data_offsets` are not integers".into()))?;
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data offsets [{begin}, {end}] lie outside the {data_len} data bytes of the file: truncated?"
        )));
    }
    let want = numel
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| bad("byte size overflows".into()))?;
    if end - begin != want {
        return Err(bad(format!(
            "{dtype} {shape:?} needs {want} bytes but its offsets span {}",
            end - begin
        )));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        offset: data_start + begin,
        len: want,
    })
}

/// An open safetensors file: its validated header and the file to read ranges from.
#[derive(Debug)]
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub header: Header,
    file: File,
}

impl SafetensorsFile {
    /// Opens and validates `path` (reads only the header).
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).at(path)?;
        let file_len = file.metadata().at(path)?.len();
        let mut len_bytes = [0u8; 8];
        if file_len < 8 {
            return Err(Error::header(
                path,
                format!("file is {file_len} bytes, shorter than the 8-byte header length"),
            ));
        }
        file.read_exact(&mut len_bytes).at(path)?;
        let n = u64::from_le_bytes(len_bytes);
        if n > MAX_HEADER_BYTES || n > file_len - 8 {
            // Let the parser produce the precise message.
            Header::parse(path, &len_bytes, file_len)?;
        }
        let mut prefix = vec![0u8; 8 + n as usize];
        prefix[..8].copy_from_slice(&len_bytes);
        file.read_exact(&mut prefix[8..]).at(path)?;
        let header = Header::parse(path, &prefix, file_len)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            header,
            file,
        })
    }

    /// Reads `len` bytes of tensor `info` starting `start` bytes into it.
    pub fn read_range(&self, info: &TensorInfo, start: u64, buf: &mut [u8]) -> Result<()> {
        assert!(start + buf.len() as u64 <= info.len, "range inside tensor");
        self.file
            .read_exact_at(buf, info.offset + start)
            .map_err(|e| Error::tensor(&self.path, &info.name, format!("read failed: {e}")))
    }

    /// Reads a whole tensor.
    pub fn read(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; info.len as usize];
        self.read_range(info, 0, &mut buf)?;
        Ok(buf)
    }

    /// Reads a float tensor as f32 (F64, F32, F16 and BF16 are accepted).
    pub fn read_f32(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.read(info)?;
        to_f32(info.dtype, &bytes).ok_or_else(|| {
            Error::tensor(
                &self.path,
                &info.name,
                format!("dtype {} is not a floating-point type", info.dtype),
            )
        })
    }

    /// The file, for memory-mapping.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Converts little-endian float bytes to f32, or `None` for a non-float dtype.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Converts f32 values to little-endian bytes of a float dtype (round to nearest even).
pub fn from_f32(dtype: Dtype, values: &[f32]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        Dtype::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Dtype::F64 => values
            .iter()
            .for_each(|&v| out.extend((v as f64).to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|&v| out.extend(half::f16::from_f32(v).to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|&v| out.extend(half::bf16::from_f32(v).to_le_bytes())),
        _ => return None,
    }
    Some(out)
}

/// A tensor to be written: its entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorEntry {
    /// Length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size() as u64
    }
}

/// Writes a safetensors file whose header is known up front and whose tensors then arrive one
/// at a time, so memory stays bounded by the largest chunk the caller holds.
///
/// Tensors are laid out contiguously (as every safetensors reader requires), in the order given,
/// after a header padded with spaces to a multiple of 8 bytes.
pub struct SafetensorsWriter {
    path: PathBuf,
    out: HugePageWriter<File>,
    entries: Vec<TensorEntry>,
    next: usize,
    written_in_current: u64,
}

impl SafetensorsWriter {
    /// Creates `path` and writes the header for `entries`.
    pub fn create(
        path: &Path,
        entries: Vec<TensorEntry>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut obj = serde_json::Map::new();
        if !metadata.is_empty() {
            obj.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).expect("string map serializes"),
            );
        }
        let mut offset = 0u64;
        for e in &entries {
            let end = offset + e.byte_len();
            obj.insert(
                e.name.clone(),
                serde_json::json!({
                    "dtype": e.dtype.name(),
                    "shape": e.shape,
                    "data_offsets": [offset, end],
                }),
            );
            offset = end;
        }
        let mut json = serde_json::to_vec(&obj).expect("header serializes");
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let file = File::create(path).at(path)?;
        let mut out = HugePageWriter::new(file);
        out.write_all(&(json.len() as u64).to_le_bytes()).at(path)?;
        out.write_all(&json).at(path)?;
        Ok(SafetensorsWriter {
            path: path.to_path_buf(),
            out,
            entries,
            next: 0,
            written_in_current: 0,
        })
    }

    /// The tensor whose bytes are expected next, if any.
    pub fn current(&self) -> Option<&TensorEntry> {
        self.entries.get(self.next)
    }

    /// Appends bytes to the current tensor, moving on once it is complete.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let mut bytes = bytes;
        while !bytes.is_empty() {
            let Some(entry) = self.entries.get(self.next) else {
                return Err(Error::Usage(format!(
                    "{}: more data written than the header declares",
                    self.path.display()
                )));
            };
            let room = entry.byte_len() - self.written_in_current;
            let take = room.min(bytes.len() as u64) as usize;
            self.out.write_all(&bytes[..take]).at(&self.path)?;
            self.written_in_current += take as u64;
            bytes = &bytes[take..];
            self.skip_complete();
        }
        Ok(())
    }

    fn skip_complete(&mut self) {
        while let Some(e) = self.entries.get(self.next) {
            if self.written_in_current < e.byte_len() {
                break;
            }
            self.next += 1;
            self.written_in_current = 0;
        }
    }

    /// Flushes and syncs; fails if any declared tensor is incomplete.
    pub fn finish(mut self) -> Result<()> {
        self.skip_complete();
        if let Some(e) = self.entries.get(self.next) {
            return Err(Error::Usage(format!(
                "{}: tensor `{}` was not fully written",
                self.path.display(),
                e.name
            )));
        }
        self.out.flush().at(&self.path)?;
        self.out.get_ref().sync_all().at(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend(header.as_bytes());
        v.extend(data);
        v
    }

    fn parse(bytes: &[u8]) -> Result<Header> {
        Header::parse(Path::new("t.safetensors"), bytes, bytes.len() as u64)
    }

    #[test]
    fn accepts_a_valid_header() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let header = parse(&file_with(h, &[0; 8])).unwrap();
        assert_eq!(header.tensors[0].offset, 8 + h.len() as u64);
        assert_eq!(header.metadata["format"], "pt");
    }

    #[test]
    fn rejects_lies_with_the_tensor_named() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                "needs 12 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                "outside",
            ),
            (
                r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                "unsupported dtype",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,8]}}"#,
                "not a non-negative",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                "overflow",
            ),
        ];
        for (h, want) in cases {
            let err = parse(&file_with(h, &[0; 8])).unwrap_err().to_string();
            assert!(err.contains(want), "{h}: {err}");
        }
    }

    #[test]
    fn rejects_truncation_and_huge_headers() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let full = file_with(h, &[0; 8]);
        assert!(parse(&full[..full.len() - 1]).is_err());
        assert!(
            parse(&full[..20])
                .unwrap_err()
                .to_string()
                .contains("runs past")
        );
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend([0u8; 16]);
        assert!(parse(&huge).unwrap_err().to_string().contains("exceeds"));
        assert!(parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn writer_output_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let entries = vec![
            TensorEntry {
                name: "w".into(),
                dtype: Dtype::U8,
                shape: vec![2, 4],
            },
            TensorEntry {
                name: "s".into(),
                dtype: Dtype::F32,
                shape: vec![1],
            },
        ];
        let mut w = SafetensorsWriter::create(&path, entries, &BTreeMap::new()).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        w.write(&[4, 5, 6, 7, 8]).unwrap();
        w.write(&2.5f32.to_le_bytes()).unwrap();
        w.finish().unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        let s = f.header.get("s").unwrap();
        assert_eq!(f.read_f32(s).unwrap(), vec![2.5]);
        assert_eq!(
            f.read(f.header.get("w").unwrap()).unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
    }
}
