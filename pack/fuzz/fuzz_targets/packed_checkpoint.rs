//! `PackedCheckpoint::open` (and `inspect::inspect`) on a directory built from the input.
//!
//! Input layout:
//! * byte 0 < 0x80: `config.json` is `CONFIGS[byte0 % CONFIGS.len()]`, a fixed, valid tiny
//!   ternary config, and the rest of the input is `model.safetensors`. The seeds are valid
//!   packed checkpoints of these configs (see README.md), so most mutations hit the
//!   safetensors header, the tensor table and the packed bytes.
//! * byte 0 >= 0x80: bytes 1..3 are the little-endian length `m` of the config JSON (capped at
//!   what is left), the next `m` bytes are `config.json` and the rest is `model.safetensors`.
//!
//! The files go to a per-process directory under the system temp dir, reused across runs.
//! When the checkpoint opens, every accessor must work on it: packed matrices decode, re-encode
//! to the same bytes and give the same dot products as the decoded trits; float tensors
//! convert; `inspect` summarises it as packed.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use tern_pack::checkpoint::PackedCheckpoint;
use tern_pack::dot::{dot_i8, matvec_i8};
use tern_pack::inspect::inspect;
use tern_pack::spec::TensorRole;

/// Fixed configs; the seed corpus has packed checkpoints of each, at 2 and 1.6 bits.
const CONFIGS: [&str; 4] = [
    // 0: TriLM-style llama, one scale per tensor, f16 embeddings/norms/head.
    r#"{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":32,"torch_dtype":"float16","tern":{"weights":"ternary"}}"#,
    // 1: llama with GQA and 2 scale shards, bf16.
    r#"{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":32,"torch_dtype":"bfloat16","tern":{"weights":"ternary","weight_scale":"shard","weight_shards":2}}"#,
    // 2: BitNet (SubLN, tied head); intermediate 200 so down_proj rows have full groups and a tail.
    r#"{"model_type":"bitnet","vocab_size":16,"hidden_size":8,"intermediate_size":200,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":32,"tie_word_embeddings":true,"torch_dtype":"bfloat16"}"#,
    // 3: qwen2 (q/k/v biases), 2 layers, 4 shards, f32.
    r#"{"model_type":"qwen2","vocab_size":8,"hidden_size":8,"intermediate_size":12,"num_hidden_layers":2,"num_attention_heads":2,"max_position_embeddings":32,"torch_dtype":"float32","tern":{"weights":"ternary","weight_scale":"shard","weight_shards":4,"activations":"int8"}}"#,
];

struct Scratch {
    dir: PathBuf,
    /// The config currently on disk (rewritten only when it changes).
    config: Option<Vec<u8>>,
}

fn scratch() -> &'static Mutex<Scratch> {
    static S: OnceLock<Mutex<Scratch>> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-fuzz-packed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create fuzz scratch dir");
        Mutex::new(Scratch { dir, config: None })
    })
}

fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&sel, rest) = data.split_first()?;
    if sel < 0x80 {
        return Some((CONFIGS[sel as usize % CONFIGS.len()].as_bytes(), rest));
    }
    if rest.len() < 2 {
        return None;
    }
    let m = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    let m = m.min(rest.len());
    Some(rest.split_at(m))
}

fn exercise(dir: &Path, ck: &PackedCheckpoint) {
    let codec = ck.codec;
    for t in ck.spec.tensors() {
        let numel: usize = t.shape.iter().product();
        if t.role == TensorRole::Linear {
            let p = ck.ternary(&t.name).expect("validated linear weight");
            assert_eq!([p.rows, p.cols], [t.shape[0], t.shape[1]]);
            assert_eq!(p.data.len(), p.rows * p.row_bytes());
            assert_eq!(p.scales.len(), ck.spec.quant.scale.count());
            let trits = p
                .codec
                .decode_matrix(p.data, p.rows, p.cols)
                .expect("validated matrix decodes");
            assert_eq!(trits.len(), numel);
            assert!(trits.iter().all(|v| (-1..=1).contains(v)));
            // Validated bytes are exactly what the encoder writes for these trits.
            let again = codec.encode_matrix(&trits, p.cols).expect("trits encode");
            assert_eq!(again, p.data, "{}: decode/encode round trip", t.name);
            // The reference dot product agrees with the decoded trits.
            let x: Vec<i8> = (0..p.cols)
                .map(|j| (j as i32 * 37 % 255 - 127) as i8)
                .collect();
            let mut y = vec![0i32; p.rows];
            matvec_i8(codec, p.data, &x, &mut y);
            for r in 0..p.rows {
                let want: i32 = trits[r * p.cols..(r + 1) * p.cols]
                    .iter()
                    .zip(&x)
                    .map(|(&t, &v)| t as i32 * v as i32)
                    .sum();
                assert_eq!(dot_i8(codec, p.row(r), &x), want, "{} row {r}", t.name);
                assert_eq!(y[r], want);
                let s = p.scale_for_row(r);
                assert!(s.is_finite() && s > 0.0);
            }
            assert!(ck.float(&t.name).is_err(), "U8 weight is not a float tensor");
        } else {
            let v = ck.float(&t.name).expect("validated float tensor");
            assert_eq!(v.len(), numel);
            let (_, shape, _) = ck.raw(&t.name).expect("raw view");
            assert_eq!(shape, &t.shape[..]);
            assert!(ck.ternary(&t.name).is_err());
        }
    }
    assert!(ck.ternary("no.such.weight").is_err());
    assert_eq!(ck.entries().count(), ck.entries().map(|e| &e.name).collect::<std::collections::BTreeSet<_>>().len());
    let summary = inspect(dir).expect("inspect accepts what open accepts");
    assert_eq!(summary.kind, "packed");
    assert_eq!(summary.file_bytes, ck.file_size());
    let z = summary.zero_fraction.expect("packed summary has a zero fraction");
    assert!((0.0..=1.0).contains(&z), "zero fraction {z}");
    let _ = summary.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Some((config, weights)) = split(data) else {
        return;
    };
    let mut s = scratch().lock().unwrap_or_else(|e| e.into_inner());
    let dir = s.dir.clone();
    if s.config.as_deref() != Some(config) {
        std::fs::write(dir.join("config.json"), config).expect("write config.json");
        s.config = Some(config.to_vec());
    }
    std::fs::write(dir.join("model.safetensors"), weights).expect("write model.safetensors");
    match PackedCheckpoint::open(&dir) {
        Ok(ck) => exercise(&dir, &ck),
        Err(_) => {
            // Not a valid packed checkpoint: inspect must refuse it or read it as latent.
            if let Ok(summary) = inspect(&dir) {
                let _ = summary.to_string();
            }
        }
    }
});
