//! The distillation losses and their gradients against PyTorch
//! (`tests/fixtures/distill/golden.safetensors`, made by `scripts/make_distill_golden.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tern_distill::losses::{hidden_mse, kl_div, relation_kl};
use tern_pack::safetensors::{Dtype, SafetensorsFile};
use tern_train::model::cross_entropy;
use tern_train::params::{HostTensor, to_host};

/// Largest difference allowed, relative to the largest magnitude of the reference (the
/// reference is f64 rounded to f32; ours sums in f32 in another order).
const LOSS_REL_BUDGET: f32 = 1e-5;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/distill/golden.safetensors")
}

/// Every tensor: floats as f32, I64 values converted to f32 (small integers, exact).
fn golden() -> BTreeMap<String, HostTensor> {
    let file = SafetensorsFile::open(&fixture()).expect("golden values");
    let mut out = BTreeMap::new();
    for info in &file.header.tensors {
        let data = if info.dtype == Dtype::I64 {
            file.read(info)
                .unwrap()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect()
        } else {
            file.read_f32(info).unwrap()
        };
        out.insert(
            info.name.clone(),
            HostTensor {
                shape: info.shape.clone(),
                data,
            },
        );
    }
    out
}

/// A golden tensor as `[rows, last]` (leading dimensions flattened), tracked for gradients.
fn flat(h: &HostTensor, device: &Device) -> Tensor<2> {
    let last = *h.shape.last().unwrap();
    Tensor::<2>::from_data(
        TensorData::new(h.data.clone(), [h.data.len() / last, last]),
        device,
    )
    .require_grad()
}

fn assert_close(what: &str, got: &[f32], want: &HostTensor) {
    assert_eq!(got.len(), want.data.len(), "{what}: length");
    let scale = want
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let worst = got
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max);
    eprintln!("{what}: relative error {worst:.2e}");
    assert!(
        worst <= LOSS_REL_BUDGET,
        "{what}: relative error {worst:e} over the budget {LOSS_REL_BUDGET:e}"
    );
}

fn check(
    g: &BTreeMap<String, HostTensor>,
    case: &str,
    loss: Tensor<1>,
    inputs: &[(&str, &Tensor<2>)],
) {
    assert_close(
        &format!("{case}.loss"),
        &to_host(loss.clone()).data,
        &g[&format!("{case}.loss")],
    );
    let grads = loss.backward();
    for (name, x) in inputs {
        let grad = x.grad(&grads).expect("a gradient");
        assert_close(
            &format!("{case}.{name}"),
            &to_host(grad).data,
            &g[&format!("{case}.{name}")],
        );
    }
}

#[test]
fn cross_entropy_matches_pytorch() {
    let g = golden();
    let device = Device::flex().autodiff();
    let logits = flat(&g["ce.logits"], &device);
    let targets: Vec<i64> = g["ce.targets"].data.iter().map(|&v| v as i64).collect();
    let n = targets.len();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let loss = cross_entropy(logits.clone(), targets);
    check(&g, "ce", loss, &[("grad", &logits)]);
}

#[test]
fn logits_kl_matches_pytorch_at_two_temperatures() {
    let g = golden();
    let device = Device::flex().autodiff();
    for case in ["kl_t1", "kl_t2"] {
        let student = flat(&g[&format!("{case}.student")], &device);
        // The teacher is a constant: a tensor without autodiff, as in training.
        let teacher = flat(&g[&format!("{case}.teacher")], &device.clone()).inner();
        let tau = g[&format!("{case}.tau")].data[0] as f64;
        let loss = kl_div(student.clone(), teacher, tau);
        check(&g, case, loss, &[("grad", &student)]);
    }
}

#[test]
fn relation_distillation_matches_pytorch() {
    let g = golden();
    let device = Device::flex().autodiff();
    for case in ["rel", "rel_same"] {
        let get = |n: &str| &g[&format!("{case}.{n}")];
        let [b, t] = [get("student_q").shape[0], get("student_q").shape[1]];
        let r = get("r").data[0] as usize;
        let student = ["q", "k", "v"].map(|x| flat(get(&format!("student_{x}")), &device));
        let teacher = ["q", "k", "v"].map(|x| flat(get(&format!("teacher_{x}")), &device).inner());
        let loss = relation_kl(&student, &teacher, b, t, r);
        check(
            &g,
            case,
            loss,
            &[
                ("grad_q", &student[0]),
                ("grad_k", &student[1]),
                ("grad_v", &student[2]),
            ],
        );
    }
}

#[test]
fn hidden_mse_matches_pytorch() {
    let g = golden();
    let device = Device::flex().autodiff();
    let student = flat(&g["mse.student"], &device);
    let teacher = flat(&g["mse.teacher"], &device).inner();
    check(
        &g,
        "mse",
        hidden_mse(student.clone(), teacher),
        &[("grad", &student)],
    );
}
