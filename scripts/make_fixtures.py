"""Generate the tiny Hugging Face model fixtures under tests/fixtures/.

Run from the repository root (needs the pinned packages in scripts/requirements.txt,
no network access and no GPU):

    python3 scripts/make_fixtures.py

It writes five random, tiny (vocab 320, hidden 64, 2 layers, 4 heads, 2 KV heads)
model directories, each with a `tokenizer.json` (one shared byte-level BPE trained
here on a few fixed sentences) and an `expected.safetensors` of reference values
computed with `transformers`:

  bitnet-packed/       BitNetForCausalLM, HF packed uint8 ternary weights + bf16 weight_scale
  bitnet-bf16/         BitNetForCausalLM, bf16 latent ("master") weights
  llama-f32/           LlamaForCausalLM, f32, config "tern": ternary with 2 row-shard scales
  llama-f16-sharded/   LlamaForCausalLM, f16, 3+ safetensors shards, per-tensor ternary scale
  qwen2-f32/           Qwen2ForCausalLM, f32, random q/k/v biases, per-tensor ternary scale

expected.safetensors holds, per projection, the ternary `<module>.weight` (I8 [out, in])
and `<module>.weight_scale` (F32, the multiplier s with w ~= q / s), plus `prompt_ids`
(I64 [8]), `logits` (F32 [8, vocab], the loaded float32 model on the prompt) and `greedy`
(I64 [8 + 32], prompt followed by 32 greedily generated tokens, eos ignored).
The latent fixtures also hold `ternary_logits` and `ternary_greedy`: the same references for
the model that `tern pack` makes of them (each projection replaced by its ternarization; BitNet
through transformers' offline BitLinear, so with int8 per-token activations; Llama and Qwen2 in f32
with weights q / s, TriLM-style floating-point activations; Qwen2's q/k/v biases stay float).
Everything is seeded; re-running produces byte-identical files.
"""

import os

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")  # run BitLinear's @torch.compile code eagerly

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BitNetConfig, BitNetForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)
from transformers.integrations.bitnet import pack_weights, unpack_weights

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, MAX_POS = 320, 64, 2, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS
PROMPT_LEN, NEW_TOKENS = 8, 32
EMBED_STD_BITNET = 0.1
EOS = "<|endoftext|>"
PROMPT = "The quick brown fox jumps over the lazy dog."
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A ternary weight is minus one, zero, or plus one.",
    "Small language models can run on a laptop without a graphics card.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Packing four ternary values into one byte saves memory and bandwidth.",
    "The rain in Spain stays mainly in the plain; the plain is wet and green.",
    "Every token is looked up in the embedding table, then passed through the layers.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
]


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def prompt_ids(tok: Tokenizer) -> torch.Tensor:
    ids = tok.encode(PROMPT).ids
    assert len(ids) >= PROMPT_LEN, ids
    return torch.tensor(ids[:PROMPT_LEN], dtype=torch.int64)


def projections(intermediate: int) -> dict[str, tuple[int, int]]:
    """Projection module name -> (out_features, in_features)."""
    shapes = {
        "self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
        "mlp.gate_proj": (intermediate, HIDDEN),
        "mlp.up_proj": (intermediate, HIDDEN),
        "mlp.down_proj": (HIDDEN, intermediate),
    }
    return {f"model.layers.{i}.{k}": v for i in range(LAYERS) for k, v in shapes.items()}


def random_latent(g: torch.Generator, shape) -> torch.Tensor:
    """A normal matrix with a per-tensor std in [0.02, 0.05) (so 1/absmean is ~25-60)."""
    std = 0.02 + 0.03 * torch.rand((), generator=g).item()
    return torch.randn(shape, generator=g) * std


def random_norm(g: torch.Generator, size: int) -> torch.Tensor:
    return 1.0 + 0.1 * torch.randn(size, generator=g)


def base_state(g, intermediate, bitnet: bool, tied: bool) -> dict[str, torch.Tensor]:
    """Embeddings, norms and (tied or not) lm_head, in f32; projections are added by callers.

    BitNet embeddings are small so that the (tied) logits are not dominated by the current
    token's own embedding, which would make greedy decoding repeat one token forever.
    """
    embed_std = EMBED_STD_BITNET if bitnet else 0.5
    sd = {"model.embed_tokens.weight": embed_std * torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = random_norm(g, HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = random_norm(g, HIDDEN)
        if bitnet:
            sd[p + "self_attn.attn_sub_norm.weight"] = random_norm(g, HIDDEN)
            sd[p + "mlp.ffn_sub_norm.weight"] = random_norm(g, intermediate)
    sd["model.norm.weight"] = random_norm(g, HIDDEN)
    if not tied:
        sd["lm_head.weight"] = 0.3 * torch.randn(VOCAB, HIDDEN, generator=g)
    return sd


def qkv_biases(g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random non-zero q/k/v biases (Qwen2; o_proj has none), drawn after the projections."""
    sizes = {"q_proj": HEADS * HEAD_DIM, "k_proj": KV_HEADS * HEAD_DIM, "v_proj": KV_HEADS * HEAD_DIM}
    sd = {}
    for i in range(LAYERS):
        for proj, out in sizes.items():
            sd[f"model.layers.{i}.self_attn.{proj}.bias"] = 0.1 * torch.randn(out, generator=g)
    return sd


def ternarize(w: torch.Tensor, shards: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """absmean ternary quantization of an f32 [out, in] matrix, one scale per row block."""
    qs, ss = [], []
    for block in w.float().chunk(shards, dim=0):
        mean = block.double().abs().mean().float().clamp(min=1e-5)
        s = torch.tensor(1.0, dtype=torch.float32) / mean
        qs.append((block * s).round().clamp(-1, 1))
        ss.append(s.reshape(1))
    return torch.cat(qs).to(torch.int8), torch.cat(ss)


def model_config(cls, intermediate: int, dtype: torch.dtype, tied: bool, **extra):
    return cls(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=intermediate, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=MAX_POS,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, pad_token_id=None,
        dtype=str(dtype).removeprefix("torch."), **extra,
    )


def reference(model_cls, path: Path, ids: torch.Tensor):
    """Load `path` in float32; return the model and its prompt logits + 32-token greedy continuation."""
    model = model_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    gen = GenerationConfig(
        do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        eos_token_id=None, bos_token_id=None, pad_token_id=0,  # no eos: exactly 32 argmax tokens
    )
    with torch.no_grad():
        logits = model(ids[None]).logits[0].float()
        greedy = model.generate(ids[None], attention_mask=torch.ones_like(ids[None]), generation_config=gen)[0]
    assert greedy.shape == (PROMPT_LEN + NEW_TOKENS,), greedy.shape
    return model, {"prompt_ids": ids.clone(), "logits": logits.contiguous(), "greedy": greedy.to(torch.int64)}


def finish(path: Path, tok_json: str, expected: dict[str, torch.Tensor]) -> None:
    (path / "tokenizer.json").write_text(tok_json)
    save_file({k: v.contiguous() for k, v in expected.items()}, path / "expected.safetensors", metadata={"format": "pt"})


def make_bitnet_packed(path: Path, tok_json: str, ids: torch.Tensor) -> None:
    """Offline-quantized BitNet exactly as transformers stores it: U8 [out/4, in] + bf16 weight_scale [1]."""
    g = torch.Generator().manual_seed(1001)
    sd = {k: v.to(torch.bfloat16) for k, v in base_state(g, 192, bitnet=True, tied=True).items()}
    for name, shape in projections(192).items():
        q, s = ternarize(random_latent(g, shape))
        sd[name + ".weight"] = pack_weights(q.clone())  # pack_weights adds 1 in place
        sd[name + ".weight_scale"] = s.to(torch.bfloat16)
    quant = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
    config = model_config(BitNetConfig, 192, torch.bfloat16, tied=True, hidden_act="relu2",
                          architectures=["BitNetForCausalLM"], quantization_config=quant)
    config.save_pretrained(path)
    GenerationConfig.from_model_config(config).save_pretrained(path)
    save_file(sd, path / "model.safetensors", metadata={"format": "pt"})

    model, expected = reference(BitNetForCausalLM, path, ids)  # runs the BitLinear path
    for name in projections(192):
        module = model.get_submodule(name)
        expected[name + ".weight"] = unpack_weights(module.weight, dtype=torch.int8)
        expected[name + ".weight_scale"] = module.weight_scale.float().reshape(1)
        assert torch.equal(pack_weights(expected[name + ".weight"].clone()), sd[name + ".weight"]), name
    finish(path, tok_json, expected)


def make_latent(path: Path, tok_json: str, ids: torch.Tensor, *, config_cls, model_cls, seed: int,
                intermediate: int, dtype: torch.dtype, shards: int, **save_kwargs) -> None:
    """Full-precision (latent) weights saved by save_pretrained; expected = absmean ternarization."""
    bitnet = model_cls is BitNetForCausalLM
    g = torch.Generator().manual_seed(seed)
    sd = base_state(g, intermediate, bitnet=bitnet, tied=bitnet)
    for name, shape in projections(intermediate).items():
        sd[name + ".weight"] = random_latent(g, shape)
    if model_cls is Qwen2ForCausalLM:
        sd.update(qkv_biases(g))
    config = model_config(config_cls, intermediate, dtype, tied=bitnet, **CONFIG_EXTRA[path.name])
    model = model_cls(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.to(dtype).save_pretrained(path, **save_kwargs)

    model, expected = reference(model_cls, path, ids)
    for name in projections(intermediate):
        w = model.get_submodule(name).weight.detach()  # stored dtype -> f32, exactly
        expected[name + ".weight"], expected[name + ".weight_scale"] = ternarize(w, shards)
    expected.update(ternary_reference(path, model, expected, intermediate, bitnet, ids))
    finish(path, tok_json, expected)


def ternary_reference(path: Path, model, expected, intermediate: int, bitnet: bool, ids: torch.Tensor):
    """Logits and greedy tokens of the ternarized model (what `tern pack` + `tern infer` serve)."""
    tmp = path.parent / (path.name + ".ternary-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if bitnet:
            # transformers' offline BitLinear: packed U8 weights + weight_scale, int8 activations.
            sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
            for name in projections(intermediate):
                q, s = expected[name + ".weight"], expected[name + ".weight_scale"]
                assert s.numel() == 1, "BitLinear has one scale per tensor"
                sd[name + ".weight"] = pack_weights(q.clone())
                sd[name + ".weight_scale"] = s.clone()
            sd.pop("lm_head.weight", None)
            quant = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
            config = model_config(BitNetConfig, intermediate, torch.float32, tied=True, hidden_act="relu2",
                                  architectures=["BitNetForCausalLM"], quantization_config=quant)
            config.save_pretrained(tmp)
            save_file(sd, tmp / "model.safetensors", metadata={"format": "pt"})
            _, ref = reference(BitNetForCausalLM, tmp, ids)
        else:
            # TriLM-style: weights q / s (per row shard) in f32, float activations.
            shards = {n: expected[n + ".weight_scale"] for n in projections(intermediate)}
            with torch.no_grad():
                for name, s in shards.items():
                    q = expected[name + ".weight"].float()
                    rows = torch.cat([blk.expand(r) for blk, r in
                                      zip(s, [c.shape[0] for c in q.chunk(s.numel(), dim=0)])])
                    model.get_submodule(name).weight.copy_(q / rows[:, None])
            model.save_pretrained(tmp)
            _, ref = reference(type(model), tmp, ids)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ternary_logits": ref["logits"], "ternary_greedy": ref["greedy"]}


CONFIG_EXTRA = {
    "bitnet-bf16": {"hidden_act": "relu2"},
    "llama-f32": {"hidden_act": "silu", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                  "tern": {"weights": "ternary", "weight_scale": "shard", "weight_shards": 2, "activations": "none"}},
    "llama-f16-sharded": {"hidden_act": "silu", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                          "tern": {"weights": "ternary", "weight_scale": "tensor", "activations": "none"}},
    "qwen2-f32": {"hidden_act": "silu", "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                  "use_sliding_window": False, "sliding_window": None,
                  "tern": {"weights": "ternary", "weight_scale": "tensor", "activations": "none"}},
}


def make_bitnet_bf16(path: Path, tok_json: str, ids: torch.Tensor) -> None:
    """BitNet with bf16 master weights (like microsoft/bitnet-b1.58-2B-4T-bf16), tied embeddings."""
    make_latent(path, tok_json, ids, config_cls=BitNetConfig, model_cls=BitNetForCausalLM, seed=1002,
                intermediate=192, dtype=torch.bfloat16, shards=1)


def make_llama_f32(path: Path, tok_json: str, ids: torch.Tensor) -> None:
    """TriLM-style Llama: f32, untied, one scale per half of each matrix's rows."""
    make_latent(path, tok_json, ids, config_cls=LlamaConfig, model_cls=LlamaForCausalLM, seed=1003,
                intermediate=160, dtype=torch.float32, shards=2)


def make_llama_f16_sharded(path: Path, tok_json: str, ids: torch.Tensor) -> None:
    """Llama in f16 split over 3 safetensors shards with an index, per-tensor scale."""
    make_latent(path, tok_json, ids, config_cls=LlamaConfig, model_cls=LlamaForCausalLM, seed=1004,
                intermediate=160, dtype=torch.float16, shards=1, max_shard_size=100_000)


def make_qwen2_f32(path: Path, tok_json: str, ids: torch.Tensor) -> None:
    """Qwen2 (Llama with q/k/v biases): f32, untied, random non-zero biases, per-tensor scale."""
    make_latent(path, tok_json, ids, config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM, seed=1005,
                intermediate=160, dtype=torch.float32, shards=1)


FIXTURES = {
    "bitnet-packed": make_bitnet_packed,
    "bitnet-bf16": make_bitnet_bf16,
    "llama-f32": make_llama_f32,
    "llama-f16-sharded": make_llama_f16_sharded,
    "qwen2-f32": make_qwen2_f32,
}


def main() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tok = build_tokenizer()
    tok_json = tok.to_str(pretty=True)
    ids = prompt_ids(tok)
    for name, make in FIXTURES.items():
        path = OUT / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        make(path, tok_json, ids)
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{name}: {size} bytes ({', '.join(sorted(f.name for f in path.iterdir()))})")


if __name__ == "__main__":
    main()
