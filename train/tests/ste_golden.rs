//! The fake quantizers and their straight-through gradients against PyTorch
//! (`tests/fixtures/ste/golden.safetensors`, made by `scripts/make_ste_golden.py`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use tern_train::checkpoint::read_tensors;
use tern_train::params::{HostTensor, to_host};
use tern_train::quant::{fake_int8, fake_ternary};

/// Largest difference allowed, relative to the largest magnitude of the reference tensor.
/// f32 sums in a different order than PyTorch's differ by a few ulps; a flipped rounding (a trit
/// or an int8 level off by one) would be orders of magnitude larger.
const STE_REL_BUDGET: f32 = 1e-5;

fn golden() -> BTreeMap<String, HostTensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ste/golden.safetensors");
    read_tensors(&path).expect("golden values")
}

fn tensor2(h: &HostTensor, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(h.data.clone(), [h.shape[0], h.shape[1]]),
        device,
    )
}

fn assert_close(case: &str, what: &str, got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape, want.shape, "{case}.{what} shape");
    let scale = want
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let worst = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max);
    assert!(
        worst <= STE_REL_BUDGET,
        "{case}.{what}: relative error {worst:e} over the budget {STE_REL_BUDGET:e}"
    );
}

#[test]
fn fake_quantizers_and_ste_gradients_match_pytorch() {
    let g = golden();
    let device = Device::flex().autodiff();
    for case in ["case1", "case2", "case3", "case4"] {
        let get = |n: &str| &g[&format!("{case}.{n}")];
        let meta = &get("meta").data;
        let (shards, act, lambda) = (meta[0] as usize, meta[1] != 0.0, meta[2] as f64);
        // The script stores λ as f32; the model computes with the f64 config value.
        let lambda = if (lambda - 0.3).abs() < 1e-6 {
            0.3
        } else {
            lambda
        };
        let x = tensor2(get("x"), &device).require_grad();
        let w = tensor2(get("w"), &device).require_grad();
        let xq = if act {
            fake_int8(x.clone(), lambda)
        } else {
            x.clone()
        };
        let wq = fake_ternary(w.clone(), shards, lambda);
        let y = xq.clone().matmul(wq.clone().transpose());
        let loss = (y.clone() * tensor2(get("g"), &device)).sum();
        let grads = loss.backward();
        assert_close(case, "xq", &to_host(xq.inner()), get("xq"));
        assert_close(case, "wq", &to_host(wq.inner()), get("wq"));
        assert_close(case, "y", &to_host(y.inner()), get("y"));
        assert_close(case, "dx", &to_host(x.grad(&grads).unwrap()), get("dx"));
        assert_close(case, "dw", &to_host(w.grad(&grads).unwrap()), get("dw"));
    }
}
