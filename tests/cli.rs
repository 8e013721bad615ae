//! The `tern` binary end to end: pack, inspect, unpack and init through the command line, with
//! exit codes and no partial output on bad input.

mod common;

use std::path::Path;

use common::{fixture, s, tern};

#[test]
fn pack_inspect_unpack_repack_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (p, u, p2) = (
        dir.path().join("p"),
        dir.path().join("u"),
        dir.path().join("p2"),
    );
    let out = tern(&[
        "pack",
        s(&fixture("bitnet-packed")),
        "--out",
        s(&p),
        "--bits",
        "1.6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tern(&["inspect", s(&p), "--json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["kind"], "packed");
    assert_eq!(j["codec"], "ternary-1.6bit");
    assert_eq!(
        j["linear_parameters"],
        2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 192)
    );
    let zf = j["zero_fraction"].as_f64().unwrap();
    assert!(
        zf > 0.2 && zf < 0.45,
        "random trits are about one third zeros: {zf}"
    );

    assert!(
        tern(&["pack", "--unpack", s(&p), "--out", s(&u)])
            .status
            .success()
    );
    assert!(
        tern(&["pack", s(&u), "--out", s(&p2), "--bits", "1.6"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(p.join("model.safetensors")).unwrap(),
        std::fs::read(p2.join("model.safetensors")).unwrap()
    );
    // An existing output is not overwritten without --force.
    let out = tern(&["pack", s(&u), "--out", s(&p2)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(
        tern(&["pack", s(&u), "--out", s(&p2), "--force"])
            .status
            .success()
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_named_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama-f32").join(f), input.join(f)).unwrap();
    }
    let weights = std::fs::read(input.join("model.safetensors")).unwrap();
    std::fs::write(
        input.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = tern(&["pack", s(&input), "--out", s(&out_dir)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("tensor `"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out_dir.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary files left"
    );

    let out = tern(&[
        "pack",
        s(&fixture("llama-f32")),
        "--out",
        s(&out_dir),
        "--bits",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let out = tern(&["inspect", s(&dir.path().join("nope"))]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn init_writes_latent_and_packed_checkpoints_of_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/models/trilm-tiny.toml");
    let (l, p) = (dir.path().join("l"), dir.path().join("p"));
    assert!(
        tern(&["init", s(&cfg), "--out", s(&l), "--seed", "3"])
            .status
            .success()
    );
    assert!(
        tern(&[
            "init",
            s(&cfg),
            "--out",
            s(&p),
            "--bits",
            "2",
            "--seed",
            "3"
        ])
        .status
        .success()
    );
    // Packing the latent init gives the packed init: one random stream, two routes.
    let p2 = dir.path().join("p2");
    assert!(
        tern(&["pack", s(&l), "--out", s(&p2), "--bits", "2"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(p.join("model.safetensors")).unwrap(),
        std::fs::read(p2.join("model.safetensors")).unwrap()
    );
    let j: serde_json::Value =
        serde_json::from_slice(&tern(&["inspect", s(&p), "--json"]).stdout).unwrap();
    assert_eq!(j["scales_per_matrix"], 2);
}
