//! The distillation losses, on Burn tensors (gradients flow to the student's arguments; the
//! teacher's are constants). `tests/loss_golden.rs` checks each value and gradient against
//! PyTorch (`scripts/make_distill_golden.py`).

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// `τ² · mean_n KL(softmax(teacher_n/τ) ‖ softmax(student_n/τ))` for logits `[N, V]`. The
/// `τ²` keeps the gradient's scale independent of the temperature (Hinton et al.).
pub fn kl_div(student: Tensor<2>, teacher: Tensor<2>, tau: f64) -> Tensor<1> {
    let [n, _] = student.dims();
    let log_t = log_softmax(teacher.div_scalar(tau), 1);
    let log_s = log_softmax(student.div_scalar(tau), 1);
    (log_t.clone().exp() * (log_t - log_s))
        .sum()
        .mul_scalar(tau * tau / n as f64)
}

/// Log of the self-relation of one state `[B·T, d]` split into `heads` relation heads:
/// `log_softmax(H·Hᵀ/√(d/heads))`, `[B, heads, T, T]` (no mask).
fn log_relation(a: Tensor<2>, batch: usize, seq: usize, heads: usize) -> Tensor<4> {
    let [_, d] = a.dims();
    let dr = d / heads;
    let h = a.reshape([batch, seq, heads, dr]).swap_dims(1, 2);
    let scores = h
        .clone()
        .matmul(h.swap_dims(2, 3))
        .div_scalar((dr as f64).sqrt());
    log_softmax(scores, 3)
}

/// MiniLMv2's relation loss for one layer: for each of q, k and v (`[B·T, width]`, widths
/// divisible by `heads`, free to differ between the models), the mean over heads and
/// positions of `KL(R_teacher ‖ R_student)` of the rows of the self-relation matrices; the
/// three are averaged.
pub fn relation_kl(
    student: &[Tensor<2>; 3],
    teacher: &[Tensor<2>; 3],
    batch: usize,
    seq: usize,
    heads: usize,
) -> Tensor<1> {
    let per_state = student.iter().zip(teacher).map(|(s, t)| {
        let log_t = log_relation(t.clone(), batch, seq, heads);
        let log_s = log_relation(s.clone(), batch, seq, heads);
        (log_t.clone().exp() * (log_t - log_s))
            .sum()
            .div_scalar((batch * heads * seq) as f64)
    });
    let mut it = per_state;
    let first = it.next().expect("three states");
    it.fold(first, |acc, x| acc + x).div_scalar(3.0)
}

/// Mean squared difference of two hidden states of the same shape.
pub fn hidden_mse(student: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    (student - teacher).square().mean()
}
