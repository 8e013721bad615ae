//! `safetensors::Header::parse` on arbitrary bytes, against several claimed file lengths.
//!
//! The input is the file prefix: 8-byte little-endian header length, JSON, then anything.
//! Besides not panicking, every accepted header must describe tensors that lie inside the data
//! section, do not overlap, are sorted by offset and are exactly `numel · dtype.size()` long.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tern_pack::safetensors::{Dtype, Header, MAX_HEADER_BYTES, MAX_RANK, to_f32};

fn check(data: &[u8], file_len: u64) {
    let path = Path::new("fuzz.safetensors");
    let Ok(header) = Header::parse(path, data, file_len) else {
        return;
    };
    let n = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert!(n <= MAX_HEADER_BYTES);
    let data_start = 8 + n;
    assert!(data_start <= file_len);
    let mut prev_end = data_start;
    for t in &header.tensors {
        assert!(t.shape.len() <= MAX_RANK);
        assert!(t.offset >= prev_end, "tensors sorted and disjoint");
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let numel = numel.expect("accepted shape product fits usize");
        assert_eq!(t.numel(), numel);
        assert_eq!(t.len, numel as u64 * t.dtype.size() as u64);
        let end = t.offset.checked_add(t.len).expect("end fits u64");
        assert!(end <= file_len, "tensor inside the file");
        prev_end = end;
        assert!(header.get(&t.name).is_some());
        // Convert the bytes that happen to be inside the prefix, as readers do.
        if let Some(bytes) = data.get(t.offset as usize..end as usize) {
            let floats = to_f32(t.dtype, bytes);
            assert_eq!(floats.is_some(), t.dtype.is_float());
            if let Some(f) = floats {
                assert_eq!(f.len(), numel);
            }
        }
        assert_eq!(Dtype::parse(t.dtype.name()), Some(t.dtype));
    }
    assert!(header.get("__metadata__").is_none());
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    // The prefix is the whole file.
    check(data, len);
    // Shorter and longer claimed files: truncation, empty data section, huge files.
    check(data, len.saturating_sub(1));
    check(data, 7);
    check(data, u64::MAX);
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        if n <= MAX_HEADER_BYTES {
            // Header exactly fills the file / one byte short / followed by some data.
            check(data, 8 + n);
            check(data, 7 + n);
            // A data length taken from the last two input bytes (bounded).
            let tail = u16::from_le_bytes([data[data.len() - 2], data[data.len() - 1]]);
            check(data, 8 + n + u64::from(tail));
        }
    }
});
