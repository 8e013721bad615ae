//! `HfConfig::parse` + `ModelSpec::from_config` on arbitrary text.
//!
//! An accepted spec must list tensors with non-zero dimensions within the documented limits,
//! count its parameters without overflow, and survive a `to_json` round trip unchanged.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tern_pack::spec::{HfConfig, ModelSpec, TensorRole, limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.json");
    let Ok(cfg) = HfConfig::parse(path, text) else {
        return;
    };
    let _ = cfg.quant_method();
    let spec = ModelSpec::from_config(&cfg);

    // Writing the config back and reading it again gives the same spec (or the same refusal).
    let json = cfg.to_json();
    let again = HfConfig::parse(path, &json).expect("to_json output parses");
    let spec2 = ModelSpec::from_config(&again);
    // Floats are parsed exactly (serde_json `float_roundtrip`) and written shortest-exact, so
    // nothing may move, not even by one ULP.
    match (&spec, &spec2) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "spec changed by a to_json round trip"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("round trip changed validity: {spec:?} vs {spec2:?}"),
    }

    let Ok(spec) = spec else {
        return;
    };
    let tensors = spec.tensors();
    let mut total: u64 = 0;
    let mut linear: u64 = 0;
    let mut names = std::collections::BTreeSet::new();
    for t in &tensors {
        assert!(names.insert(t.name.as_str()), "duplicate tensor {}", t.name);
        assert!(!t.shape.is_empty() && t.shape.len() <= 2);
        for &d in &t.shape {
            assert!(d >= 1 && d <= limits::MAX_DIM, "{} {:?}", t.name, t.shape);
        }
        let n = t.shape.iter().map(|&d| d as u64).try_fold(1u64, |a, d| a.checked_mul(d));
        let n = n.expect("tensor size fits u64");
        total = total.checked_add(n).expect("parameter count fits u64");
        if t.role == TensorRole::Linear {
            assert_eq!(t.shape.len(), 2);
            assert_eq!(t.shape[0] % spec.quant.scale.count(), 0, "shards divide rows");
            linear += n;
        }
    }
    assert_eq!(spec.num_parameters(), total);
    assert_eq!(spec.num_linear_parameters(), linear);
    let _ = spec.quant.to_config();
});
