#!/usr/bin/env bash
# Same shape, same corpus, same token budget: the full-precision baseline, ternary QAT from
# scratch, and ternary fine-tuning of the full-precision model with a quantization warm-up.
# Prints each run's final validation loss and the ratio to full precision.
#   bash scripts/qat-vs-fp.sh [STEPS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
work=${2:-runs/qat-vs-fp}
cargo build --release --quiet ${TERN_CARGO_FLAGS:-}
tern() { cargo run --release --quiet ${TERN_CARGO_FLAGS:-} -- "$@"; }
mkdir -p "$work"
tern data synth --out "$work/corpus.txt" --bytes 2M
common=(--config configs/train/quickstart.toml --corpus "$work/corpus.txt" --steps "$steps"
        --set run.pack=[] --set run.eval_batches=0 --force)
tern train "${common[@]}" --out "$work/fp" --full-precision
tern train "${common[@]}" --out "$work/qat" --tokenizer "$work/fp/tokenizer.json"
tern train "${common[@]}" --out "$work/finetune" --tokenizer "$work/fp/tokenizer.json" \
  --init-from "$work/fp/model" --quant-warmup-steps "$((steps / 3))" --set train.warmup_steps=0 \
  --set train.lr=1e-3
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def last_eval(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    ev = [r for r in rows if r["kind"] == "eval"]
    tr = [r for r in rows if r["kind"] == "train"]
    return ev[-1]["val_loss"], tr[-1]["tokens"], tr[-1]["tok_per_s"]
fp = last_eval("fp")[0]
print(f"{'run':<10} {'val loss':>9} {'vs FP':>7} {'tokens':>9} {'tok/s':>7}")
for run in ["fp", "qat", "finetune"]:
    v, tokens, tps = last_eval(run)
    print(f"{run:<10} {v:>9.4f} {v / fp:>7.3f} {tokens:>9} {tps:>7.0f}")
PY
