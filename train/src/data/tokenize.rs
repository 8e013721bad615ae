//! Tokenizer training, tokenization, packing into fixed-length sequences, and batching.
//!
//! The pipeline is: [`train_bpe`] learns a byte-level BPE tokenizer from the corpus,
//! [`tokenize_documents`] turns each document into token ids ending with EOS,
//! [`split_and_pack`] holds out a validation part and cuts both parts into windows of
//! `seq_len + 1` tokens, and [`Batcher`] serves shuffled training batches whose order is a
//! pure function of the seed and a [`DataPosition`], so a run resumed from a checkpoint sees
//! exactly the batches it would have seen. [`eval_batches`] serves validation data in order.
//!
//! Everything here is deterministic: the same inputs give the same tokenizer file, tokens,
//! split and batches, on any machine and with any number of threads.

use std::fs;
use std::io::Write;
use std::path::Path;

use tern_pack::init::SplitMix64;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::corpus::{DataError, Document};

/// Number of byte tokens every byte-level vocabulary starts with.
const BYTE_TOKENS: usize = 256;

/// Documents per `encode_batch` call in [`tokenize_documents`] (bounds peak memory).
const ENCODE_CHUNK: usize = 256;

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

fn invalid(message: impl Into<String>) -> DataError {
    DataError::InvalidArgument(message.into())
}

/// Learns a byte-level BPE tokenizer (GPT-2 style) from `docs`.
///
/// The tokenizer has a `ByteLevel` pre-tokenizer (GPT-2 regex, no prefix space), decoder and
/// post-processor (offsets not trimmed); the model starts from all 256 byte symbols, so any
/// UTF-8 text is encodable and `decode(encode(text)) == text`. The `special` tokens get the
/// first ids, in order (e.g. `["<|endoftext|>"]` gives it id 0), then come the 256 byte
/// symbols, then the merges, learned with a minimum pair frequency of 2.
///
/// The vocabulary may come out smaller than `vocab_size` when the corpus is small (no pair
/// left that occurs twice); it is returned as is — read the size with
/// `get_vocab_size(true)`.
///
/// Training is deterministic: the same documents and arguments give a byte-identical
/// `tokenizer.json`, whatever the thread count. The `tokenizers` BPE trainer takes the most
/// frequent pair and breaks ties by the smaller pair of symbol ids; symbol ids are assigned
/// deterministically (special tokens, then the byte alphabet sorted by code point, then one
/// new id per merge, in order), and its multi-threaded parts only add integer counts, so
/// neither thread scheduling nor the trainer's randomly seeded hash maps change the result.
/// The one theoretical gap: if two different pairs ever spelled the same token string, the
/// trainer could hold two equal-ranked queue entries whose order follows hash-map order.
/// That never happened in our runs (English Markdown up to 6 MB and 8000 tokens, random
/// strings over a 3-letter alphabet), and the tests check byte-identical output.
///
/// # Errors
/// `vocab_size` below 256 + the number of special tokens, empty or repeated special tokens,
/// no documents, or a failure inside the `tokenizers` crate.
pub fn train_bpe(
    docs: &[Document],
    vocab_size: usize,
    special: &[&str],
) -> Result<Tokenizer, DataError> {
    let min = BYTE_TOKENS + special.len();
    if vocab_size < min {
        return Err(DataError::VocabTooSmall {
            vocab_size,
            min,
            specials: special.len(),
        });
    }
    for (i, s) in special.iter().enumerate() {
        if s.is_empty() || special[..i].contains(s) {
            return Err(invalid(format!("special token {s:?} is empty or repeated")));
        }
    }
    if docs.is_empty() {
        return Err(invalid("no documents to train the tokenizer on"));
    }

    let specials: Vec<AddedToken> = special
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();

    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, false, true)))
        .with_decoder(Some(ByteLevel::new(false, false, true)))
        .with_post_processor(Some(ByteLevel::new(false, false, true)));
    tokenizer
        .train(&mut trainer, docs.iter().map(|d| d.text.as_str()))
        .map_err(tok_err)?;
    Ok(tokenizer)
}

/// Writes `tok` to `path` as compact JSON (`tokenizer.json` format), atomically: the JSON goes
/// to a temporary file in the same directory, which is then renamed over `path`.
///
/// # Errors
/// Serialization failures and I/O errors, naming the file.
pub fn save_tokenizer(tok: &Tokenizer, path: &Path) -> Result<(), DataError> {
    let json = tok.to_string(false).map_err(tok_err)?;
    let io_err = |p: &Path, source| DataError::Io {
        path: p.to_path_buf(),
        source,
    };
    let not_file = || invalid(format!("{}: not a file path", path.display()));
    let name = path.file_name().ok_or_else(not_file)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        file.write_all(json.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Loads a tokenizer from a `tokenizer.json` file.
///
/// # Errors
/// A missing, unreadable or malformed file; the message names the path.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, DataError> {
    Tokenizer::from_file(path).map_err(|e| DataError::TokenizerFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Encodes each document (the post-processor adds no special token) and appends `eos`.
///
/// The output follows the order of `docs`. Special tokens written literally in the text
/// (e.g. `<|endoftext|>`) are recognized as those tokens. Documents are encoded in parallel
/// in chunks; the result does not depend on the number of threads.
///
/// # Errors
/// `eos` not in the vocabulary, or an encoding failure.
pub fn tokenize_documents(
    tok: &Tokenizer,
    docs: &[Document],
    eos: u32,
) -> Result<Vec<Vec<u32>>, DataError> {
    if tok.id_to_token(eos).is_none() {
        return Err(invalid(format!("EOS id {eos} is not in the vocabulary")));
    }
    let mut out = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(ENCODE_CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
        let encodings = tok.encode_batch_fast(texts, false).map_err(tok_err)?;
        for encoding in encodings {
            let mut ids = encoding.get_ids().to_vec();
            ids.push(eos);
            out.push(ids);
        }
    }
    Ok(out)
}

/// Token sequences of `seq_len + 1` tokens (inputs are `[..seq_len]`, targets `[1..]`), packed
/// across document boundaries (documents concatenated with their EOS, cut into consecutive
/// non-overlapping windows of `seq_len + 1` tokens; the tail shorter than a window is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDataset {
    /// Tokens of model input per sequence; each sequence holds `seq_len + 1` tokens.
    pub seq_len: usize,
    /// The sequences, each `seq_len + 1` tokens long.
    pub sequences: Vec<Vec<u32>>,
}

impl TokenDataset {
    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Whether the dataset holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }
}

/// Cuts `stream` into consecutive windows of `seq_len + 1` tokens, dropping the tail.
fn pack(stream: &[u32], seq_len: usize) -> TokenDataset {
    TokenDataset {
        seq_len,
        sequences: stream
            .chunks_exact(seq_len + 1)
            .map(<[u32]>::to_vec)
            .collect(),
    }
}

/// Splits documents into train/validation and packs both (see [`TokenDataset`]).
///
/// With two or more documents, each document gets a deterministic hash of its index and
/// `seed`; the `round(n * val_fraction)` documents with the smallest hashes (at least one, and
/// at most `n - 1` so that training keeps one) are held out. Both parts keep the original
/// document order. If there is only ONE document (one big text file), its token stream is
/// split instead: the last `round(len * val_fraction)` tokens go to validation.
///
/// `val_fraction` must be in `[0, 0.5]`; 0 means no validation set: the validation dataset is
/// returned empty, without error.
///
/// # Errors
/// `seq_len` of 0 or `val_fraction` out of range; fewer training tokens than one sequence
/// needs; a validation part too short for one sequence (when `val_fraction > 0`).
pub fn split_and_pack(
    tokens: Vec<Vec<u32>>,
    seq_len: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<(TokenDataset, TokenDataset), DataError> {
    if seq_len == 0 {
        return Err(invalid("seq_len must be at least 1"));
    }
    if !(0.0..=0.5).contains(&val_fraction) {
        return Err(invalid(format!(
            "val_fraction must be in [0, 0.5], got {val_fraction}"
        )));
    }
    let needed = seq_len + 1;
    let too_short = |tokens| Err(DataError::TooShort { tokens, needed });
    let total: usize = tokens.iter().map(Vec::len).sum();
    if total < needed {
        return too_short(total);
    }

    let (train_stream, val_stream): (Vec<u32>, Vec<u32>) = if val_fraction == 0.0 {
        (tokens.concat(), Vec::new())
    } else if tokens.len() == 1 {
        let mut stream = tokens.into_iter().next().unwrap_or_default();
        let n_val = (stream.len() as f64 * val_fraction).round() as usize;
        let val = stream.split_off(stream.len() - n_val.min(stream.len()));
        (stream, val)
    } else {
        let n = tokens.len();
        let n_val = ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1);
        let hash = |i| SplitMix64::new(seed ^ SplitMix64::new(i as u64).next_u64()).next_u64();
        let mut keys: Vec<(u64, usize)> = (0..n).map(|i| (hash(i), i)).collect();
        keys.sort_unstable();
        let mut held_out = vec![false; n];
        for &(_, i) in &keys[..n_val] {
            held_out[i] = true;
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (doc, is_val) in tokens.into_iter().zip(held_out) {
            if is_val { &mut val } else { &mut train }.extend(doc);
        }
        (train, val)
    };

    if train_stream.len() < needed {
        return too_short(train_stream.len());
    }
    if val_fraction > 0.0 && val_stream.len() < needed {
        return Err(DataError::EmptyValidation {
            tokens: val_stream.len(),
            needed,
        });
    }
    Ok((pack(&train_stream, seq_len), pack(&val_stream, seq_len)))
}

/// The order of the sequences in `epoch`: a Fisher–Yates shuffle driven by SplitMix64 seeded
/// from `(seed, epoch)`.
fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(SplitMix64::new(seed).next_u64() ^ epoch);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Where a run is in its data: epoch and index of the next batch in that epoch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// The epoch (0-based).
    pub epoch: u64,
    /// Index of the next batch within the epoch.
    pub batch: u64,
}

/// Serves shuffled training batches, deterministically and resumably.
///
/// Each epoch visits the sequences in the order of a permutation that depends only on the
/// seed and the epoch number; batch `b` of the epoch takes the sequences at positions
/// `b * batch_size .. (b + 1) * batch_size` of that order. An epoch ends when fewer than
/// `batch_size` sequences remain (those are skipped this epoch; the next shuffle differs).
/// Restoring a saved [`DataPosition`] therefore reproduces the same subsequent batches.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    data: &'a TokenDataset,
    batch_size: usize,
    seed: u64,
    position: DataPosition,
    permutation: Vec<u32>,
}

impl<'a> Batcher<'a> {
    /// A batcher over `data` starting at `position`. A position at or past the end of an epoch
    /// (`batch >= batches_per_epoch`) carries over into the following epochs.
    ///
    /// # Errors
    /// `batch_size` of 0, or larger than the number of sequences.
    pub fn try_new(
        data: &'a TokenDataset,
        batch_size: usize,
        seed: u64,
        position: DataPosition,
    ) -> Result<Batcher<'a>, DataError> {
        if batch_size == 0 {
            return Err(invalid("batch size must be at least 1"));
        }
        if batch_size > data.sequences.len() {
            return Err(DataError::BatchTooLarge {
                batch_size,
                sequences: data.sequences.len(),
            });
        }
        let per_epoch = (data.sequences.len() / batch_size) as u64;
        let position = DataPosition {
            epoch: position.epoch + position.batch / per_epoch,
            batch: position.batch % per_epoch,
        };
        Ok(Batcher {
            data,
            batch_size,
            seed,
            position,
            permutation: epoch_permutation(data.sequences.len(), seed, position.epoch),
        })
    }

    /// The next batch as `(inputs, targets)`, each row-major `[batch_size, seq_len]` — and
    /// advances (into the next epoch after its last batch).
    pub fn next_batch(&mut self) -> (Vec<u32>, Vec<u32>) {
        let seq_len = self.data.seq_len;
        let start = self.position.batch as usize * self.batch_size;
        let mut inputs = Vec::with_capacity(self.batch_size * seq_len);
        let mut targets = Vec::with_capacity(self.batch_size * seq_len);
        for &i in &self.permutation[start..start + self.batch_size] {
            let seq = &self.data.sequences[i as usize];
            inputs.extend_from_slice(&seq[..seq_len]);
            targets.extend_from_slice(&seq[1..=seq_len]);
        }
        self.position.batch += 1;
        if self.position.batch == self.batches_per_epoch() {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                batch: 0,
            };
            self.permutation =
                epoch_permutation(self.data.sequences.len(), self.seed, self.position.epoch);
        }
        (inputs, targets)
    }

    /// Where the batcher is: the next batch [`Batcher::next_batch`] returns. Always
    /// `batch < batches_per_epoch()`.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// Number of batches in one epoch: `sequences / batch_size`, rounded down.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.data.sequences.len() / self.batch_size) as u64
    }
}

/// The dataset in order, as `(batch_size, inputs, targets)` with inputs and targets row-major
/// `[batch_size, seq_len]`; every batch holds `batch_size` sequences except the last, which
/// holds what remains. Every sequence appears exactly once.
///
/// # Panics
/// If `batch_size` is 0.
pub fn eval_batches(
    data: &TokenDataset,
    batch_size: usize,
) -> impl Iterator<Item = (usize, Vec<u32>, Vec<u32>)> + '_ {
    assert!(batch_size > 0, "eval batch size must be at least 1");
    let seq_len = data.seq_len;
    data.sequences.chunks(batch_size).map(move |chunk| {
        let inputs = chunk.iter().flat_map(|s| &s[..seq_len]).copied().collect();
        let targets = chunk.iter().flat_map(|s| &s[1..]).copied().collect();
        (chunk.len(), inputs, targets)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &str = "the a model learns ternary weights from text and of to in quick brown \
        fox jumps over lazy dog language token training data is small large bit zero one minus \
        café naïve 日本語 emoji 🦀 über straße";
    const EOT: &str = "<|endoftext|>";

    /// `n` documents of deterministic English-like text, `words` words each.
    fn docs(n: usize, words: usize) -> Vec<Document> {
        let list: Vec<&str> = WORDS.split_whitespace().collect();
        let mut rng = SplitMix64::new(1);
        let mut text = || {
            let mut s = String::new();
            for _ in 0..words {
                s.push_str(list[rng.below(list.len() as u64) as usize]);
                s.push_str([" ", ". ", "\n", " ", " "][rng.below(5) as usize]);
            }
            s
        };
        (0..n).map(|i| doc(&format!("doc{i}"), &text())).collect()
    }

    fn doc(source: &str, text: &str) -> Document {
        let (source, text) = (source.to_string(), text.to_string());
        Document { source, text }
    }

    #[test]
    fn bpe_round_trip_through_saved_file() {
        let tok = train_bpe(&docs(20, 300), 400, &[EOT]).unwrap();
        assert_eq!(tok.token_to_id(EOT), Some(0));
        let size = tok.get_vocab_size(true);
        assert!(size > 300 && size <= 400, "vocab size {size}");

        let dir = std::env::temp_dir().join(format!("tern-tok-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        save_tokenizer(&tok, &path).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokenizer.json"], "temporary file left behind");
        let loaded = Tokenizer::from_file(&path).unwrap();
        let ours = load_tokenizer(&path).unwrap();
        assert_eq!(
            ours.to_string(false).unwrap(),
            tok.to_string(false).unwrap()
        );
        fs::remove_dir_all(&dir).unwrap();

        for s in [
            "the quick brown fox jumps over the lazy dog.",
            "  leading spaces, tabs\tand\nnewlines\r\n",
            "Ünïcödé: 日本語のテキスト, emoji 🦀🎉, Ελληνικά, never seen: ǅ𝔘",
        ] {
            let enc = loaded.encode(s, false).unwrap();
            assert!(!enc.get_ids().is_empty());
            assert_eq!(loaded.decode(enc.get_ids(), false).unwrap(), s);
        }
        let enc = loaded.encode("dog<|endoftext|>fox", false).unwrap();
        assert!(
            enc.get_ids().contains(&0),
            "special token in text not recognized"
        );
    }

    #[test]
    fn bpe_training_is_deterministic() {
        let corpus = docs(30, 400);
        let a = train_bpe(&corpus, 600, &[EOT, "<|pad|>"]).unwrap();
        let b = train_bpe(&corpus, 600, &[EOT, "<|pad|>"]).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert_eq!(a.token_to_id("<|pad|>"), Some(1));
        assert!(a.get_vocab_size(true) > 400, "too few merges learned");
    }

    #[test]
    fn tokenizer_errors_and_small_corpus() {
        let err = train_bpe(&docs(2, 10), 256, &[EOT]).unwrap_err();
        assert!(
            matches!(err, DataError::VocabTooSmall { min: 257, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("at least 257"), "{err}");
        assert!(train_bpe(&docs(2, 10), 300, &["<a>", "<a>"]).is_err());
        // A tiny corpus gives a vocabulary smaller than asked for, still usable.
        let tiny = [doc("x", "abab abab")];
        let tok = train_bpe(&tiny, 1000, &[EOT]).unwrap();
        assert!(tok.get_vocab_size(true) < 300);
        let ids = tok.encode("abab ba", false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), "abab ba");

        let path = std::env::temp_dir().join("tern-no-such-tokenizer.json");
        let err = load_tokenizer(&path).unwrap_err();
        assert!(
            err.to_string().contains("tern-no-such-tokenizer.json"),
            "{err}"
        );
    }

    #[test]
    fn tokenize_appends_eos_in_order() {
        let corpus = docs(5, 50);
        let tok = train_bpe(&corpus, 350, &[EOT]).unwrap();
        let tokens = tokenize_documents(&tok, &corpus, 0).unwrap();
        assert_eq!(tokens.len(), corpus.len());
        for (ids, doc) in tokens.iter().zip(&corpus) {
            let (last, body) = ids.split_last().unwrap();
            assert_eq!(*last, 0);
            assert!(!body.contains(&0));
            assert_eq!(tok.decode(body, false).unwrap(), doc.text);
        }
        assert!(tokenize_documents(&tok, &corpus, 1_000_000).is_err());
    }

    /// Documents of the given lengths holding the tokens 0, 1, 2, ... in order.
    fn numbered(lens: &[u32]) -> Vec<Vec<u32>> {
        let mut next = 0;
        let mut doc = |n| {
            next += n;
            (next - n..next).collect()
        };
        lens.iter().map(|&n| doc(n)).collect()
    }

    #[test]
    fn packing_makes_consecutive_windows() {
        let (train, val) = split_and_pack(numbered(&[7, 3, 12, 5]), 4, 0.0, 1).unwrap();
        assert!(val.is_empty() && val.seq_len == 4);
        // 27 tokens -> 5 windows of 5, tail of 2 dropped.
        let expected: Vec<Vec<u32>> = (0..5).map(|k| (5 * k..5 * k + 5).collect()).collect();
        assert_eq!(train.sequences, expected);
    }

    #[test]
    fn document_split_holds_out_whole_documents() {
        let split = |lens: &[u32], fraction, seed| {
            split_and_pack(numbered(lens), 9, fraction, seed).unwrap()
        };
        let (train, val) = split(&[20; 10], 0.2, 7);
        // 2 of 10 documents (40 tokens -> 4 windows), 8 for training (160 -> 16).
        assert_eq!((train.len(), val.len()), (16, 4));
        let mut seen: Vec<u32> = train
            .sequences
            .iter()
            .chain(&val.sequences)
            .flatten()
            .copied()
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<u32>>());
        let mut val_docs: Vec<u32> = val.sequences.iter().flatten().map(|t| t / 20).collect();
        val_docs.dedup();
        assert_eq!(
            val_docs.len(),
            2,
            "validation windows must come from 2 whole documents"
        );
        assert_eq!(split(&[20; 10], 0.2, 7).1, val);
        assert!((8..13).any(|seed| split(&[20; 10], 0.2, seed).1 != val));
        // Two documents and a tiny fraction: still one held out, one kept.
        let (train, val) = split(&[10, 10], 0.01, 3);
        assert_eq!((train.len(), val.len()), (1, 1));
    }

    #[test]
    fn single_document_splits_its_tokens() {
        let (train, val) = split_and_pack(numbered(&[100]), 9, 0.1, 0).unwrap();
        assert_eq!(train.len(), 9);
        assert_eq!(train.sequences[8], (80..90).collect::<Vec<u32>>());
        assert_eq!(val.sequences, [(90..100).collect::<Vec<u32>>()]);
        let err = split_and_pack(numbered(&[100]), 19, 0.1, 0).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::EmptyValidation { tokens: 10, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("held-out 10 tokens") && msg.contains("val_fraction"),
            "{msg}"
        );
    }

    #[test]
    fn too_short_corpus_is_an_error() {
        let err = split_and_pack(numbered(&[3, 4]), 8, 0.0, 0).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                DataError::TooShort {
                    tokens: 7,
                    needed: 9
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("7 tokens") && msg.contains("needs 9"), "{msg}");
        assert!(split_and_pack(numbered(&[30]), 8, 0.6, 0).is_err());
        assert!(split_and_pack(numbered(&[30]), 0, 0.1, 0).is_err());
    }

    #[test]
    fn batcher_resumes_exactly() {
        let sequences = (0..23).map(|i| (10 * i..10 * i + 4).collect()).collect();
        let data = TokenDataset {
            seq_len: 3,
            sequences,
        };
        let start = DataPosition::default();
        let mut batcher = Batcher::try_new(&data, 5, 42, start).unwrap();
        assert_eq!(batcher.batches_per_epoch(), 4);
        let mut batches = Vec::new();
        let mut saved = start;
        for i in 0..10 {
            if i == 4 {
                saved = batcher.position();
            }
            batches.push(batcher.next_batch());
        }
        assert_eq!(saved, DataPosition { epoch: 1, batch: 0 });
        let (inputs, targets) = &batches[0];
        assert_eq!((inputs.len(), targets.len()), (15, 15));
        for row in 0..5 {
            assert_eq!(
                targets[row * 3..row * 3 + 2],
                inputs[row * 3 + 1..row * 3 + 3]
            );
        }
        // An epoch visits distinct sequences; the next epoch has another order.
        let mut firsts: Vec<u32> = batches[..4]
            .iter()
            .flat_map(|b| b.0.iter().step_by(3))
            .copied()
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 20);
        assert_ne!(batches[0], batches[4]);

        let json = serde_json::to_string(&saved).unwrap();
        let mut resumed =
            Batcher::try_new(&data, 5, 42, serde_json::from_str(&json).unwrap()).unwrap();
        for expected in &batches[4..] {
            assert_eq!(&resumed.next_batch(), expected);
        }
        let mid = Batcher::try_new(&data, 5, 42, DataPosition { epoch: 0, batch: 6 }).unwrap();
        assert_eq!(mid.position(), DataPosition { epoch: 1, batch: 2 });
        let mut other = Batcher::try_new(&data, 5, 43, start).unwrap();
        assert_ne!(other.next_batch(), batches[0]);
        let err = Batcher::try_new(&data, 24, 0, start).unwrap_err();
        assert!(
            err.to_string().contains("batch size 24 exceeds the 23"),
            "{err}"
        );
    }

    #[test]
    fn eval_batches_cover_every_sequence_once() {
        let sequences = (0..11).map(|i| vec![i, 100 + i, 200 + i]).collect();
        let data = TokenDataset {
            seq_len: 2,
            sequences,
        };
        let batches: Vec<_> = eval_batches(&data, 4).collect();
        assert_eq!(batches.iter().map(|b| b.0).collect::<Vec<_>>(), [4, 4, 3]);
        let mut rows = Vec::new();
        for (n, inputs, targets) in &batches {
            assert_eq!((inputs.len(), targets.len()), (n * 2, n * 2));
            for r in 0..*n {
                assert_eq!(inputs[2 * r + 1], targets[2 * r]);
                rows.push(inputs[2 * r]);
            }
        }
        assert_eq!(rows, (0..11).collect::<Vec<u32>>());
    }
}
