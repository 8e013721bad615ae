//! Reading training text: plain text files, directories of them, and JSONL files.
//!
//! [`read_corpus`] turns a path into a list of [`Document`]s. A plain text (or Markdown) file
//! is one document; a JSONL file gives one document per record. Directories are walked
//! recursively and read in sorted path order, so the same corpus always yields the same
//! documents in the same order. [`DataError`] is the error type of the whole data pipeline
//! (this module and the tokenizer module); each message names the file involved, with the
//! line or byte offset where that helps.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the data pipeline: reading a corpus, training or loading a tokenizer,
/// tokenizing, packing and batching.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The corpus path does not exist.
    #[error("{}: no such file or directory", .path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// An I/O error while reading or writing a file or directory.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A directory holds no file ending in `.txt`, `.md` or `.jsonl`.
    #[error("{}: directory holds no usable file (.txt, .md or .jsonl)", .path.display())]
    NoUsableFiles {
        /// The directory.
        path: PathBuf,
    },
    /// A file is not valid UTF-8.
    #[error("{}: not valid UTF-8 (first invalid byte at offset {offset})", .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A JSONL line that is not a JSON object holding the text field as a string.
    #[error("{}:{line}: {message}", .path.display())]
    Jsonl {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// Every document of the corpus is empty or whitespace.
    #[error("{}: corpus is empty (every document is empty or whitespace)", .path.display())]
    EmptyCorpus {
        /// The corpus path as given.
        path: PathBuf,
    },
    /// The requested vocabulary cannot hold the 256 byte tokens plus the special tokens.
    #[error(
        "vocab_size {vocab_size} is too small: a byte-level BPE vocabulary needs at least {min} \
         entries (256 byte tokens + {specials} special tokens)"
    )]
    VocabTooSmall {
        /// The requested vocabulary size.
        vocab_size: usize,
        /// The smallest acceptable size.
        min: usize,
        /// Number of special tokens.
        specials: usize,
    },
    /// An error reported by the `tokenizers` crate while training or encoding.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tokenizer file that cannot be loaded.
    #[error("{}: cannot load tokenizer: {message}", .path.display())]
    TokenizerFile {
        /// The tokenizer file.
        path: PathBuf,
        /// Why it cannot be loaded.
        message: String,
    },
    /// Too few tokens for a single training sequence.
    #[error(
        "corpus too short: {tokens} tokens available for training, but one training sequence \
         needs {needed} (seq_len + 1); add text or lower seq_len"
    )]
    TooShort {
        /// Tokens available for training.
        tokens: usize,
        /// Tokens one training sequence needs.
        needed: usize,
    },
    /// The held-out validation part is too short for a single sequence.
    #[error(
        "validation set is empty: the held-out {tokens} tokens are fewer than the {needed} one \
         sequence needs (seq_len + 1); lower seq_len or raise val_fraction (0 disables validation)"
    )]
    EmptyValidation {
        /// Tokens held out for validation.
        tokens: usize,
        /// Tokens one sequence needs.
        needed: usize,
    },
    /// More sequences per batch than the dataset holds.
    #[error(
        "batch size {batch_size} exceeds the {sequences} training sequences; lower the batch \
         size or seq_len, or add text"
    )]
    BatchTooLarge {
        /// The requested batch size.
        batch_size: usize,
        /// Sequences in the dataset.
        sequences: usize,
    },
    /// An argument out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Where training text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusFormat {
    /// Plain UTF-8 text; each file is one document.
    Text,
    /// One JSON object per line; the document text is the string field `field`.
    Jsonl {
        /// Name of the field holding the text (usually `"text"`).
        field: String,
    },
}

impl CorpusFormat {
    /// JSONL with the text in the `"text"` field.
    pub fn jsonl() -> Self {
        CorpusFormat::Jsonl {
            field: "text".to_string(),
        }
    }
}

/// One document of the corpus (a text file, or one JSONL record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from: `"path"` for a text file, `"path:line"` for a JSONL record.
    pub source: String,
    /// The document text.
    pub text: String,
}

/// Reads a corpus: a plain text file, a directory of them, or a JSONL file.
///
/// * A directory is walked recursively; files whose name ends in `.txt`, `.md` or `.jsonl`
///   (case-insensitive) are read in sorted path order, others are ignored. Symbolic links to
///   files are followed, symbolic links to directories are not (no cycles).
/// * The format of each file is detected by its extension (`.jsonl` → JSONL with the field
///   `"text"`, anything else → text) unless `format` forces one format for every file.
/// * A text file is one document, its text kept as is (a leading UTF-8 byte order mark is
///   dropped). A JSONL file holds one JSON object per line, the text being the string field
///   `field`; blank lines are skipped.
/// * Documents that are empty or only whitespace are dropped.
///
/// # Errors
/// A missing path, a directory with no usable file, I/O errors, a file that is not UTF-8
/// (with the offset of the first bad byte), a bad JSONL line (with its line number), and a
/// corpus with no non-blank document.
pub fn read_corpus(path: &Path, format: Option<CorpusFormat>) -> Result<Vec<Document>, DataError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DataError::NotFound {
            path: path.to_path_buf(),
        },
        _ => io_err(path, e),
    })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        if files.is_empty() {
            return Err(DataError::NoUsableFiles {
                path: path.to_path_buf(),
            });
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };

    let mut docs = Vec::new();
    for file in &files {
        let file_format = match &format {
            Some(f) => f.clone(),
            None if has_extension(file, "jsonl") => CorpusFormat::jsonl(),
            None => CorpusFormat::Text,
        };
        let text = read_utf8(file)?;
        match file_format {
            CorpusFormat::Text => {
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                docs.push(Document {
                    source: file.display().to_string(),
                    text: text.to_string(),
                });
            }
            CorpusFormat::Jsonl { field } => parse_jsonl(file, &text, &field, &mut docs)?,
        }
    }
    docs.retain(|d| !d.text.trim().is_empty());
    if docs.is_empty() {
        return Err(DataError::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok(docs)
}

fn io_err(path: &Path, source: io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Appends to `out` every usable file under `dir`, recursively (unsorted).
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| io_err(&path, e))?;
        let is_file = if file_type.is_dir() {
            collect_files(&path, out)?;
            continue;
        } else if file_type.is_symlink() {
            // Follow links to files only; a dangling link is ignored.
            fs::metadata(&path).is_ok_and(|m| m.is_file())
        } else {
            file_type.is_file()
        };
        if is_file
            && ["txt", "md", "jsonl"]
                .iter()
                .any(|e| has_extension(&path, e))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads a whole file as UTF-8 text.
fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Parses JSONL `text` (the content of `path`), one document per non-blank line.
fn parse_jsonl(
    path: &Path,
    text: &str,
    field: &str,
    docs: &mut Vec<Document>,
) -> Result<(), DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DataError::Jsonl {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object".to_string()))?;
        let content = object
            .get(field)
            .ok_or_else(|| bad(format!("no field \"{field}\"")))?;
        let content = content
            .as_str()
            .ok_or_else(|| bad(format!("field \"{field}\" is not a string")))?;
        docs.push(Document {
            source: format!("{}:{line_no}", path.display()),
            text: content.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("tern-corpus-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn directory_is_walked_recursively_in_sorted_order() {
        let tmp = TempDir::new("dir");
        tmp.write("b.txt", b"second file");
        tmp.write("a/z.md", b"# nested markdown");
        tmp.write("a/deeper/c.TXT", b"deep text");
        tmp.write("image.png", &[0x89, b'P', b'N', b'G', 0xff, 0x00]);
        tmp.write("notes.rs", b"fn main() {}");
        tmp.write(
            "d.jsonl",
            b"{\"text\": \"record one\"}\n\n{\"text\": \"record two\"}\n",
        );
        tmp.write("e.txt", b"   \n\t");
        let docs = read_corpus(&tmp.0, None).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "deep text",
                "# nested markdown",
                "second file",
                "record one",
                "record two"
            ]
        );
        let d = tmp.0.join("d.jsonl").display().to_string();
        assert_eq!(
            docs[0].source,
            tmp.0.join("a/deeper/c.TXT").display().to_string()
        );
        assert_eq!(docs[3].source, format!("{d}:1"));
        assert_eq!(docs[4].source, format!("{d}:3"));
    }

    #[test]
    fn single_text_file_is_one_document() {
        let tmp = TempDir::new("single");
        let text = "\u{feff}First paragraph.\n\nSecond paragraph, héllo 世界.\n";
        let path = tmp.write("book.txt", text.as_bytes());
        let docs = read_corpus(&path, None).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text, &text[3..]);
        assert_eq!(docs[0].source, path.display().to_string());
    }

    #[test]
    fn jsonl_with_custom_field_and_forced_format() {
        let tmp = TempDir::new("field");
        let path = tmp.write(
            "data.json",
            b"{\"content\": \"alpha\", \"id\": 1}\r\n{\"content\": \"beta\"}\n",
        );
        let format = CorpusFormat::Jsonl {
            field: "content".into(),
        };
        let docs = read_corpus(&path, Some(format)).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "alpha");
        assert_eq!(docs[1].text, "beta");
        assert_eq!(docs[1].source, format!("{}:2", path.display()));
        // Without forcing, a .json file is plain text.
        let docs = read_corpus(&path, None).unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs[0].text.starts_with("{\"content\""));
        // Forcing text on a .jsonl file reads it verbatim.
        let path = tmp.write("x.jsonl", b"{\"text\": \"t\"}\n");
        let docs = read_corpus(&path, Some(CorpusFormat::Text)).unwrap();
        assert_eq!(docs[0].text, "{\"text\": \"t\"}\n");
    }

    #[test]
    fn missing_path_is_an_error() {
        let path = std::env::temp_dir().join("tern-corpus-definitely-missing-xyz");
        let err = read_corpus(&path, None).unwrap_err();
        assert!(matches!(err, DataError::NotFound { .. }));
        assert!(
            err.to_string()
                .contains("tern-corpus-definitely-missing-xyz")
        );
    }

    #[test]
    fn directory_without_usable_files_is_an_error() {
        let tmp = TempDir::new("nousable");
        tmp.write("a.bin", b"\x00\x01");
        tmp.write("sub/b.csv", b"a,b");
        let err = read_corpus(&tmp.0, None).unwrap_err();
        assert!(matches!(err, DataError::NoUsableFiles { .. }));
        assert!(err.to_string().contains(&tmp.0.display().to_string()));
    }

    #[test]
    fn invalid_utf8_reports_file_and_offset() {
        let tmp = TempDir::new("utf8");
        let path = tmp.write("bad.txt", b"hello \xe4\xb8 world");
        let err = read_corpus(&tmp.0, None).unwrap_err();
        assert!(matches!(err, DataError::NotUtf8 { offset: 6, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("offset 6"), "{msg}");
    }

    #[test]
    fn bad_jsonl_lines_report_file_and_line() {
        let tmp = TempDir::new("jsonl");
        let cases: [(&[u8], &str); 4] = [
            (b"{\"text\": \"ok\"}\n{\"text\": oops}\n", "not valid JSON"),
            (b"{\"text\": \"ok\"}\n\n[1, 2]\n", "not a JSON object"),
            (
                b"{\"text\": \"ok\"}\n{\"body\": \"x\"}\n",
                "no field \"text\"",
            ),
            (b"{\"text\": \"ok\"}\n{\"text\": 3}\n", "is not a string"),
        ];
        let expected_lines = [2, 3, 2, 2];
        for ((content, what), line) in cases.iter().zip(expected_lines) {
            let path = tmp.write("c.jsonl", content);
            let err = read_corpus(&path, None).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("{}:{line}: ", path.display())),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
        }
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let tmp = TempDir::new("empty");
        tmp.write("a.txt", b"");
        tmp.write("b.md", b"  \n\n ");
        tmp.write("c.jsonl", b"{\"text\": \"  \"}\n\n");
        let err = read_corpus(&tmp.0, None).unwrap_err();
        assert!(matches!(err, DataError::EmptyCorpus { .. }));
        assert!(err.to_string().contains(&tmp.0.display().to_string()));
    }
}
