"""Generate tests/fixtures/distill/golden.safetensors: golden losses and gradients for distillation.

Run from the repository root (torch + safetensors from scripts/requirements.txt, CPU only):

    python3 scripts/make_distill_golden.py [--out tests/fixtures/distill/golden.safetensors]

Inputs are drawn in float32 (one seeded torch.Generator per case) and stored as float32. Losses and
gradients w.r.t. the *student* inputs are computed with torch autograd in float64 from those exact f32
values, then stored as float32. Definitions:

  ce   logits S [N, V], targets y [N] (int64):  L = mean_n( -log_softmax(S)[n, y_n] )
  kl   teacher T, student S [N, V], temperature tau:  p = softmax(T / tau),
       L = tau^2 * (1/N) * sum_{n,v} p[n,v] * (log p[n,v] - log_softmax(S / tau)[n,v])
  rel  MiniLMv2 attention relations, r relation heads, states X in (q, k, v), student A_S [B, T, dS_X],
       teacher A_T [B, T, dT_X] (dims may differ; all divisible by r). For A [B, T, d]:
         H = A.reshape(B, T, r, d // r).transpose(1, 2)                        [B, r, T, d/r]
         logR = log_softmax(H @ H.transpose(-1, -2) / sqrt(d / r), dim=-1)    [B, r, T, T], no mask
       KL_X = sum(exp(logR_T) * (logR_T - logR_S)) / (B * r * T);  L = (KL_q + KL_k + KL_v) / 3
  mse  h_S, h_T [B, T, d]:  L = mean((h_S - h_T)^2)

Tensors are stored as `<case>.<what>` (see tests/fixtures/distill/README.md). At the end every loss (and
gradient) is recomputed with a different formulation (F.cross_entropy, F.kl_div, F.mse_loss, per-head
einsum) and checked to 1e-10 in float64. Everything is seeded; re-running produces a byte-identical file.
"""

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "distill" / "golden.safetensors"
TOL = 1e-10


ce = lambda S, y: -F.log_softmax(S, dim=-1).gather(1, y[:, None]).mean()
mse = lambda hS, hT: ((hS - hT) ** 2).mean()


def kl(T, S, tau):
    p, logp = F.softmax(T / tau, dim=-1), F.log_softmax(T / tau, dim=-1)
    return tau**2 * (p * (logp - F.log_softmax(S / tau, dim=-1))).sum() / S.shape[0]


def relation(A, r):
    B, T, d = A.shape
    H = A.reshape(B, T, r, d // r).transpose(1, 2)
    return F.log_softmax(H @ H.transpose(-1, -2) / math.sqrt(d / r), dim=-1)


def rel(studs, teachs, r):
    B, T, _ = studs[0].shape
    kls = [(relation(t, r).exp() * (relation(t, r) - relation(s, r))).sum() / (B * r * T) for s, t in zip(studs, teachs)]
    return sum(kls) / 3


# Alternative formulations for the self-check.
ce_alt = lambda S, y: F.cross_entropy(S, y)
mse_alt = lambda hS, hT: F.mse_loss(hS, hT)


def kl_alt(T, S, tau):
    return tau**2 * F.kl_div(F.log_softmax(S / tau, -1), F.log_softmax(T / tau, -1), reduction="batchmean", log_target=True)


def rel_alt(studs, teachs, r):
    total = 0.0
    for s, t in zip(studs, teachs):
        B, T, _ = s.shape
        for h in range(r):  # one head at a time, scores via einsum
            hs, ht = s.chunk(r, dim=-1)[h], t.chunk(r, dim=-1)[h]
            ls = F.log_softmax(torch.einsum("btd,bsd->bts", hs, hs) / math.sqrt(hs.shape[-1]), -1)
            lt = F.log_softmax(torch.einsum("btd,bsd->bts", ht, ht) / math.sqrt(ht.shape[-1]), -1)
            total = total + F.kl_div(ls, lt, reduction="sum", log_target=True) / (B * r * T)
    return total / 3


# Closed-form gradients w.r.t. the student (rel is checked against finite differences instead).
CLOSED_FORM = {
    ce: lambda S, y: (F.softmax(S, -1) - F.one_hot(y, S.shape[1])) / S.shape[0],
    kl: lambda T, S, tau: tau * (F.softmax(S / tau, -1) - F.softmax(T / tau, -1)) / S.shape[0],
    mse: lambda hS, hT: 2 * (hS - hT) / hS.numel(),
}


def make_case(g, name):
    """Returns (stored f32 inputs, names of the student inputs, inputs -> loss args, loss fn, alt loss fn)."""
    rn = lambda *shape: torch.randn(*shape, generator=g)
    if name == "ce":
        inp = {"logits": rn(6, 11) * 3, "targets": torch.randint(11, (6,), generator=g)}
        return inp, ["logits"], lambda d: (d["logits"], d["targets"]), ce, ce_alt
    if name.startswith("kl_t"):
        tau = {"kl_t1": 1.0, "kl_t2": 2.0}[name]
        inp = {"teacher": rn(6, 11) * 3, "student": rn(6, 11) * 3, "tau": torch.tensor([tau])}
        return inp, ["student"], lambda d: (d["teacher"], d["student"], tau), kl, kl_alt
    if name in ("rel", "rel_same"):
        B, T, r = (2, 5, 4) if name == "rel" else (1, 6, 2)
        studs = [rn(B, T, d) for d in ((16, 8, 8) if name == "rel" else (8, 8, 8))]
        teachs = [rn(B, T, d) for d in (24, 12, 12)] if name == "rel" else [s + 0.05 * rn(B, T, 8) for s in studs]
        inp = {f"student_{x}": a for x, a in zip("qkv", studs)} | {f"teacher_{x}": a for x, a in zip("qkv", teachs)}
        inp["r"] = torch.tensor([r], dtype=torch.int64)
        args = lambda d: ([d[f"student_{x}"] for x in "qkv"], [d[f"teacher_{x}"] for x in "qkv"], r)
        return inp, [f"student_{x}" for x in "qkv"], args, rel, rel_alt
    if name == "mse":
        inp = {"student": rn(2, 5, 8), "teacher": rn(2, 5, 8)}
        return inp, ["student"], lambda d: (d["student"], d["teacher"]), mse, mse_alt
    raise ValueError(name)


def loss_and_grads(inp, stud, args, fn):
    d = {k: (v.double().requires_grad_(k in stud) if v.is_floating_point() else v) for k, v in inp.items()}
    loss = fn(*args(d))
    grads = torch.autograd.grad(loss, [d[k] for k in stud])
    return loss.detach(), [gr.detach() for gr in grads]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .safetensors path")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tensors, checks = {}, []
    for i, name in enumerate(["ce", "kl_t1", "kl_t2", "rel", "rel_same", "mse"]):
        g = torch.Generator().manual_seed(3000 + i)
        inp, stud, fargs, fn, alt = make_case(g, name)
        loss, grads = loss_and_grads(inp, stud, fargs, fn)
        tensors |= {f"{name}.{k}": v.contiguous() for k, v in inp.items()}
        tensors[f"{name}.loss"] = loss.float().reshape(1)
        for k, gr in zip(stud, grads):
            tensors[f"{name}.grad" + k.removeprefix("student").removeprefix("logits")] = gr.float().contiguous()
        checks.append((name, inp, stud, fargs, fn, alt, loss, grads))

    for name, inp, stud, fargs, fn, alt, loss, grads in checks:  # self-check: independent formulations
        loss2, grads2 = loss_and_grads(inp, stud, fargs, alt)
        d = {k: v.double() if v.is_floating_point() else v for k, v in inp.items()}
        if fn in CLOSED_FORM:
            grads2 = [CLOSED_FORM[fn](*fargs(d))]
        else:
            xs = [d[k].requires_grad_() for k in stud]
            assert torch.autograd.gradcheck(lambda *xs: fn(list(xs), *fargs(d)[1:]), xs, atol=1e-7, rtol=1e-6)
        lerr = (loss - loss2).abs().item()
        gerr = max((a - b).abs().max().item() for a, b in zip(grads, grads2))
        assert lerr < TOL and gerr < TOL, (name, lerr, gerr)
        how = "closed form" if fn in CLOSED_FORM else "alt autograd + gradcheck"
        print(f"{name}: loss = {loss.item():.10g} (f64); vs alt: |dL| = {lerr:.2g}, max|dgrad| = {gerr:.2g} ({how})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out, metadata={"generator": "scripts/make_distill_golden.py"})
    back = load_file(args.out)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
