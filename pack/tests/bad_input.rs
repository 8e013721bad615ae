//! Bad input gets an error that names the file and the tensor, and leaves no output behind.

use std::path::{Path, PathBuf};

use tern_pack::Codec;
use tern_pack::checkpoint::PackedCheckpoint;
use tern_pack::convert::{PackOptions, pack_checkpoint};
use tern_pack::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, TensorEntry};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// A writable copy of a fixture directory.
fn copy_fixture(name: &str, root: &Path) -> PathBuf {
    let dst = root.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

type Tensors = Vec<(TensorEntry, Vec<u8>)>;

/// Rewrites a safetensors file after `edit` has changed its tensors.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Tensors)) {
    let f = SafetensorsFile::open(path).unwrap();
    let meta = f.header.metadata.clone();
    let mut tensors: Tensors = f
        .header
        .tensors
        .iter()
        .map(|t| {
            let e = TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            };
            (e, f.read(t).unwrap())
        })
        .collect();
    drop(f);
    edit(&mut tensors);
    let entries = tensors.iter().map(|(e, _)| e.clone()).collect();
    let mut w = SafetensorsWriter::create(path, entries, &meta).unwrap();
    for (_, bytes) in &tensors {
        w.write(bytes).unwrap();
    }
    w.finish().unwrap();
}

fn find<'a>(t: &'a mut Tensors, name: &str) -> &'a mut (TensorEntry, Vec<u8>) {
    t.iter_mut().find(|(e, _)| e.name == name).unwrap()
}

/// Packs `input` and returns the error text, checking nothing was left in `root`'s output.
fn pack_err(input: &Path, root: &Path) -> String {
    let out = root.join("out");
    let opts = PackOptions::new(Codec::Bits2);
    let before: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = pack_checkpoint(input, &out, &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    let after: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!out.exists(), "partial output left behind: {err}");
    assert_eq!(before, after, "temporary files left behind: {err}");
    err
}

const Q_PROJ: &str = "model.layers.1.self_attn.q_proj.weight";

#[test]
fn corrupted_latent_checkpoints_are_refused_with_file_and_tensor_named() {
    type Edit = Box<dyn FnOnce(&mut Tensors)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "NaN weight",
            Box::new(|t| {
                let (_, b) = find(t, Q_PROJ);
                b[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
            }),
            "not finite",
        ),
        (
            "Inf in a norm",
            Box::new(|t| {
                let (_, b) = find(t, "model.norm.weight");
                b[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
            }),
            "not finite",
        ),
        (
            "wrong dtype",
            Box::new(|t| {
                find(t, Q_PROJ).0.dtype = Dtype::I32;
            }),
            "neither a float",
        ),
        (
            "wrong shape",
            Box::new(|t| {
                find(t, Q_PROJ).0.shape = vec![32, 128];
            }),
            "neither a float",
        ),
        (
            "missing tensor",
            Box::new(|t| t.retain(|(e, _)| e.name != Q_PROJ)),
            "missing tensor",
        ),
        (
            "unknown tensor",
            Box::new(|t| {
                let e = TensorEntry {
                    name: "model.layers.9.extra.weight".into(),
                    dtype: Dtype::F32,
                    shape: vec![1],
                };
                t.push((e, vec![0; 4]));
            }),
            "unknown tensor",
        ),
    ];
    for (what, edit, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let dir = copy_fixture("llama-f32", root.path());
        let file = dir.join("model.safetensors");
        rewrite(&file, edit);
        let err = pack_err(&dir, root.path());
        assert!(err.contains(want), "{what}: {err}");
        assert!(
            err.contains("model.safetensors") || err.contains(&*dir.to_string_lossy()),
            "{what}: file not named: {err}"
        );
        let tensor = if what == "unknown tensor" {
            "model.layers.9.extra.weight"
        } else if what == "Inf in a norm" {
            "model.norm.weight"
        } else {
            Q_PROJ
        };
        assert!(err.contains(tensor), "{what}: tensor not named: {err}");
    }
}

#[test]
fn broken_files_are_refused() {
    type Corrupt = fn(&Path);
    let cases: Vec<(&str, Corrupt, &str)> = vec![
        (
            "truncated",
            |f| {
                let b = std::fs::read(f).unwrap();
                std::fs::write(f, &b[..b.len() - 100]).unwrap();
            },
            "outside",
        ),
        (
            "header past the end",
            |f| {
                let mut b = std::fs::read(f).unwrap();
                b.truncate(200);
                std::fs::write(f, &b).unwrap();
            },
            "runs past the end",
        ),
        ("empty", |f| std::fs::write(f, b"").unwrap(), "shorter than"),
        (
            "garbage header",
            |f| {
                let mut b = 16u64.to_le_bytes().to_vec();
                b.extend(b"not json at all!");
                std::fs::write(f, &b).unwrap();
            },
            "not valid JSON",
        ),
        (
            "overlapping offsets",
            |f| {
                let h = r#"{"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,256]},"lm_head.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend(h.as_bytes());
                b.extend([0u8; 256]);
                std::fs::write(f, &b).unwrap();
            },
            "overlaps",
        ),
    ];
    for (what, corrupt, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let dir = copy_fixture("llama-f32", root.path());
        corrupt(&dir.join("model.safetensors"));
        let err = pack_err(&dir, root.path());
        assert!(
            err.contains(want) && err.contains("model.safetensors"),
            "{what}: {err}"
        );
    }
}

#[test]
fn non_ternary_hf_packed_codes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = copy_fixture("bitnet-packed", root.path());
    rewrite(&dir.join("model.safetensors"), |t| {
        find(t, "model.layers.0.mlp.up_proj.weight").1[3] = 0xff;
    });
    let err = pack_err(&dir, root.path());
    assert!(
        err.contains("model.layers.0.mlp.up_proj.weight") && err.contains("not ternary"),
        "{err}"
    );

    let root = tempfile::tempdir().unwrap();
    let dir = copy_fixture("bitnet-packed", root.path());
    rewrite(&dir.join("model.safetensors"), |t| {
        let (e, b) = find(t, "model.layers.0.mlp.up_proj.weight_scale");
        *b = half::bf16::from_f32(0.0).to_le_bytes().to_vec();
        assert_eq!(e.dtype, Dtype::BF16);
    });
    let err = pack_err(&dir, root.path());
    assert!(
        err.contains("up_proj.weight_scale") && err.contains("not a finite positive"),
        "{err}"
    );
}

#[test]
fn bad_configs_are_refused() {
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("missing", None, "config.json"),
        (
            "malformed",
            Some("{\"model_type\": \"llama\", "),
            "config.json: invalid config",
        ),
        (
            "unknown family",
            Some(
                r#"{"model_type":"gpt2","vocab_size":320,"hidden_size":64,"intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":4}"#,
            ),
            "not served",
        ),
        (
            "heads do not divide",
            Some(
                r#"{"model_type":"llama","vocab_size":320,"hidden_size":64,"intermediate_size":160,"num_hidden_layers":2,"num_attention_heads":5}"#,
            ),
            "does not divide",
        ),
    ];
    for (what, text, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let dir = copy_fixture("llama-f32", root.path());
        match text {
            Some(t) => std::fs::write(dir.join("config.json"), t).unwrap(),
            None => std::fs::remove_file(dir.join("config.json")).unwrap(),
        }
        let err = pack_err(&dir, root.path());
        assert!(err.contains(want), "{what}: {err}");
    }
    // A config whose shapes disagree with the weights names the first tensor that disagrees.
    let root = tempfile::tempdir().unwrap();
    let dir = copy_fixture("llama-f32", root.path());
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 160", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let err = pack_err(&dir, root.path());
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight") || err.contains("mlp"),
        "{err}"
    );
}

#[test]
fn corrupted_packed_checkpoints_are_refused_on_open() {
    let make = |root: &Path| -> PathBuf {
        let out = root.join("p");
        let opts = PackOptions::new(Codec::Bits1_6);
        pack_checkpoint(&fixture("llama-f32"), &out, &opts, &mut |_| {}).unwrap();
        out
    };
    let root = tempfile::tempdir().unwrap();
    let p = make(root.path());
    assert!(PackedCheckpoint::open(&p).is_ok());

    type Edit = Box<dyn FnOnce(&mut Tensors)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "invalid packed byte",
            Box::new(|t| {
                let invalid = (0..=255u8)
                    .find(|&b| Codec::Bits1_6.decode_byte(b).is_none())
                    .unwrap();
                find(t, Q_PROJ).1[0] = invalid;
            }),
            "not a valid",
        ),
        (
            "zero scale",
            Box::new(|t| {
                find(t, "model.layers.1.self_attn.q_proj.weight_scale").1[0..4]
                    .copy_from_slice(&0f32.to_le_bytes());
            }),
            "not a finite positive",
        ),
        (
            "missing scale",
            Box::new(|t| t.retain(|(e, _)| !e.name.ends_with("q_proj.weight_scale"))),
            "missing tensor",
        ),
        (
            "wrong packed shape",
            Box::new(|t| {
                let (e, b) = find(t, Q_PROJ);
                e.shape = vec![e.shape[0] / 2, e.shape[1] * 2];
                assert_eq!(b.len(), e.shape[0] * e.shape[1]);
            }),
            "expected packed U8",
        ),
    ];
    for (what, edit, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let p = make(root.path());
        rewrite(&p.join("model.safetensors"), edit);
        let err = PackedCheckpoint::open(&p).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("model.safetensors") && err.contains("q_proj"),
            "{what}: {err}"
        );
    }

    // A latent checkpoint is not a packed one.
    let err = PackedCheckpoint::open(&fixture("llama-f32"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a tern packed checkpoint"), "{err}");
}
