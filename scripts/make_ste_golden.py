"""Generate tests/fixtures/ste/golden.safetensors: golden values for BitLinear's QAT quantizers.

Run from the repository root (torch + safetensors from scripts/requirements.txt, CPU only):

    python3 scripts/make_ste_golden.py [--out tests/fixtures/ste/golden.safetensors]

Each case computes, in float32 with torch autograd, a BitLinear forward `y = x_ste @ w_ste.T` (no bias)
with straight-through estimators (STE), and the gradients of `L = sum(y * g)`:

  weights      ternary absmean, one scale per block of rows (`shards` equal consecutive blocks):
               mean = max(mean(|W_block|), 1e-5) (f32), s = 1 / mean, q = clamp(round(W * s), -1, 1) / s,
               w_ste = W + lam * (q - W).detach()       (lam = 1: plain STE; lam < 1: warm-up blend)
  activations  int8 per-token absmax (per row of x), or none (TriLM style):
               a = max(max|x_row|, 1e-5), scale = 127 / a, q = clamp(round(x * scale), -128, 127) / scale,
               x_ste = x + lam * (q - x).detach()

Tensors are stored as `caseN.{x,w,g,wq,xq,y,dx,dw,meta}` (see tests/fixtures/ste/README.md).
Everything is seeded; re-running produces a byte-identical file.
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "ste" / "golden.safetensors"

# name: (tokens, in, out, shards, act_quant, lam)
CASES = {
    "case1": (5, 12, 7, 1, True, 1.0),   # per-tensor, int8 acts; W has exact zeros, x has an all-zero row
    "case2": (4, 10, 9, 3, True, 1.0),   # 3 row shards, int8 acts
    "case3": (3, 8, 6, 1, False, 1.0),   # per-tensor, float activations (TriLM style)
    "case4": (5, 12, 7, 1, True, 0.3),   # per-tensor, int8 acts, warm-up blend lam = 0.3 on both paths
}


def ternary_fake_quant(w: torch.Tensor, shards: int) -> torch.Tensor:
    """absmean ternary values q / s, one scale per block of rows."""
    assert w.shape[0] % shards == 0, (w.shape, shards)
    blocks = []
    for block in w.chunk(shards, dim=0):
        mean = block.abs().mean().clamp(min=1e-5)
        s = 1.0 / mean
        blocks.append((block * s).round().clamp(-1, 1) / s)
    return torch.cat(blocks)


def int8_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """Per-token (last dim) absmax int8 values q / scale."""
    a = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    scale = 127.0 / a
    return (x * scale).round().clamp(-128, 127) / scale


def make_case(g: torch.Generator, tokens, d_in, d_out, shards, act_quant, lam, special=False):
    x = torch.randn(tokens, d_in, generator=g)
    w = torch.randn(d_out, d_in, generator=g) * 0.02
    if special:  # exact zeros in W and an all-zero token (exercises the 1e-5 clamp of absmax)
        w[0, 0] = w[3, 5] = w[6, 11] = w[2, 7] = 0.0
        x[2] = 0.0
    grad = torch.randn(tokens, d_out, generator=g)

    x, w = x.requires_grad_(), w.requires_grad_()
    w_ste = w + lam * (ternary_fake_quant(w, shards) - w).detach()
    x_ste = x + lam * (int8_fake_quant(x) - x).detach() if act_quant else x
    y = x_ste @ w_ste.T
    (y * grad).sum().backward()

    meta = torch.tensor([float(shards), 1.0 if act_quant else 0.0, lam], dtype=torch.float32)
    out = {"x": x, "w": w, "g": grad, "wq": w_ste, "xq": x_ste, "y": y, "dx": x.grad, "dw": w.grad, "meta": meta}
    return {k: v.detach().float().clone().contiguous() for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .safetensors path")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tensors = {}
    for i, (name, spec) in enumerate(CASES.items()):
        g = torch.Generator().manual_seed(2000 + i)
        t = make_case(g, *spec, special=(name == "case1"))
        dw_err = (t["dw"] - t["g"].T @ t["xq"]).abs().max().item()
        dx_err = (t["dx"] - t["g"] @ t["wq"]).abs().max().item()
        print(f"{name}: max|dw - G.T @ xq| = {dw_err:.3g}, max|dx - G @ wq| = {dx_err:.3g}")
        tensors.update({f"{name}.{k}": v for k, v in t.items()})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out, metadata={"generator": "scripts/make_ste_golden.py"})
    back = load_file(args.out)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
