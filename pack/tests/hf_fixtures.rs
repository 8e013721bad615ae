//! Packing the Hugging Face fixtures made by `scripts/make_fixtures.py` gives exactly the trits
//! and scales that `transformers` decodes (or that BitNet's quantizer computes, for latent
//! forms), at both widths, and unpacking gives them back.

use std::path::{Path, PathBuf};

use tern_pack::Codec;
use tern_pack::checkpoint::{LatentCheckpoint, PackedCheckpoint};
use tern_pack::convert::{PackOptions, pack_checkpoint, unpack_checkpoint};
use tern_pack::safetensors::{Dtype, SafetensorsFile};
use tern_pack::spec::TensorRole;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

const FIXTURES: [&str; 4] = [
    "bitnet-packed",
    "bitnet-bf16",
    "llama-f32",
    "llama-f16-sharded",
];

/// Expected trits (I8) and scales (F32) for every linear weight of a fixture.
fn expected(name: &str) -> Vec<(String, Vec<i8>, Vec<f32>)> {
    let f = SafetensorsFile::open(&fixture(name).join("expected.safetensors")).unwrap();
    let mut out = Vec::new();
    for t in f.header.tensors.iter().filter(|t| t.dtype == Dtype::I8) {
        let trits = f.read(t).unwrap().into_iter().map(|b| b as i8).collect();
        let scale = f
            .header
            .get(&t.name.replace(".weight", ".weight_scale"))
            .unwrap();
        out.push((t.name.clone(), trits, f.read_f32(scale).unwrap()));
    }
    assert!(
        out.len() >= 14,
        "{name}: expected values for every projection"
    );
    out
}

fn no_progress() -> impl FnMut(tern_pack::convert::Progress<'_>) {
    |_| {}
}

fn pack(name: &str, codec: Codec, out: &Path) -> PackedCheckpoint {
    let opts = PackOptions::new(codec);
    pack_checkpoint(&fixture(name), out, &opts, &mut no_progress()).unwrap();
    PackedCheckpoint::open(out).unwrap()
}

#[test]
fn packed_trits_and_scales_equal_the_reference_for_every_fixture_and_width() {
    for name in FIXTURES {
        let want = expected(name);
        for codec in Codec::ALL {
            let dir = tempfile::tempdir().unwrap();
            let ck = pack(name, codec, &dir.path().join("p"));
            assert_eq!(ck.codec, codec);
            assert!(
                dir.path().join("p/tokenizer.json").is_file(),
                "{name}: tokenizer travels"
            );
            for (tensor, trits, scales) in &want {
                let p = ck.ternary(tensor).unwrap();
                let got = p.codec.decode_matrix(p.data, p.rows, p.cols).unwrap();
                assert!(got == *trits, "{name} {codec}: trits of {tensor} differ");
                assert_eq!(
                    p.scales,
                    scales.as_slice(),
                    "{name} {codec}: scales of {tensor}"
                );
            }
        }
    }
}

#[test]
fn hf_packed_fixture_unpacks_to_exactly_what_transformers_decodes() {
    let want = expected("bitnet-packed");
    let dir = tempfile::tempdir().unwrap();
    pack("bitnet-packed", Codec::Bits1_6, &dir.path().join("p"));
    let out = dir.path().join("u");
    unpack_checkpoint(
        &dir.path().join("p"),
        &out,
        Dtype::F32,
        false,
        &mut no_progress(),
    )
    .unwrap();
    let latent = LatentCheckpoint::open(&out).unwrap();
    let spec = latent.spec().unwrap();
    for (tensor, trits, scales) in &want {
        let (file, info) = latent.entry(tensor).unwrap();
        let w = file.read_f32(info).unwrap();
        let (sfile, sinfo) = latent
            .entry(&tensor.replace(".weight", ".weight_scale"))
            .unwrap();
        let s = sfile.read_f32(sinfo).unwrap();
        assert_eq!(&s, scales, "{tensor}: scale");
        // Every latent value is exactly t / s.
        for (i, (&v, &t)) in w.iter().zip(trits).enumerate() {
            assert_eq!(v, t as f32 / s[0], "{tensor}[{i}]");
        }
    }
    // Non-ternary tensors come back bit for bit.
    let src = LatentCheckpoint::open(&fixture("bitnet-packed")).unwrap();
    for t in spec
        .tensors()
        .iter()
        .filter(|t| t.role != TensorRole::Linear)
    {
        let (fa, ia) = src.entry(&t.name).unwrap();
        let (fb, ib) = latent.entry(&t.name).unwrap();
        assert_eq!(ia.dtype, ib.dtype, "{}", t.name);
        assert_eq!(fa.read(ia).unwrap(), fb.read(ib).unwrap(), "{}", t.name);
    }
}

#[test]
fn pack_unpack_pack_is_byte_identical() {
    for name in FIXTURES {
        for codec in Codec::ALL {
            for dtype in [Dtype::F32, Dtype::BF16] {
                let dir = tempfile::tempdir().unwrap();
                let (p1, u, p2) = (
                    dir.path().join("p1"),
                    dir.path().join("u"),
                    dir.path().join("p2"),
                );
                pack(name, codec, &p1);
                unpack_checkpoint(&p1, &u, dtype, false, &mut no_progress()).unwrap();
                let opts = PackOptions::new(codec);
                pack_checkpoint(&u, &p2, &opts, &mut no_progress()).unwrap();
                let a = std::fs::read(p1.join("model.safetensors")).unwrap();
                let b = std::fs::read(p2.join("model.safetensors")).unwrap();
                assert!(a == b, "{name} {codec} via {dtype}: repacked file differs");
            }
        }
    }
}
