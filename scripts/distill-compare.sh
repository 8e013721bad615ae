#!/usr/bin/env bash
# Same student shape, corpus, token budget and seed: ternary QAT and logits distillation from
# scratch, QAT started from the teacher's weights, logits distillation, and logits + relation
# distillation (both from the teacher's weights), all
# through `tern distill` (with the KL weight at 0 for the two QAT rows) so that every row
# reports its validation loss and its KL to the teacher on the same held-out sequences.
# The teacher is the full-precision quickstart model trained by `tern train` on four times the
# students' token budget (a teacher worth distilling is better than what the student's budget
# buys on its own).
#   bash scripts/distill-compare.sh [STEPS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
work=${2:-runs/distill-demo}
cargo build --release --quiet ${TERN_CARGO_FLAGS:-}
tern() { cargo run --release --quiet ${TERN_CARGO_FLAGS:-} -- "$@"; }
mkdir -p "$work"
[ -f "$work/corpus.txt" ] || tern data synth --out "$work/corpus.txt" --bytes 2M
[ -f "$work/teacher/model/config.json" ] ||
  tern train --config configs/train/quickstart.toml --corpus "$work/corpus.txt" \
    --steps "$((4 * steps))" --full-precision --out "$work/teacher" --set run.pack=[] \
    --set run.eval_batches=0 --force
common=(--config configs/distill/quickstart.toml --teacher "$work/teacher/model"
        --corpus "$work/corpus.txt" --steps "$steps" --set run.pack=[] --force)
tern distill "${common[@]}" --out "$work/qat-scratch" --set student.init=scratch \
  --set distill.kl_weight=0 --set distill.relation_weight=0
tern distill "${common[@]}" --out "$work/logits-scratch" --set student.init=scratch \
  --set distill.relation_weight=0
tern distill "${common[@]}" --out "$work/qat-teacher" \
  --set distill.kl_weight=0 --set distill.relation_weight=0
tern distill "${common[@]}" --out "$work/logits" --set distill.relation_weight=0
tern distill "${common[@]}" --out "$work/logits-relation"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def last(run, kind):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    return [r for r in rows if r["kind"] == kind][-1]
teacher = last("teacher", "eval")["val_loss"]
runs = [("qat-scratch", "ternary QAT from scratch"),
        ("logits-scratch", "logits distillation from scratch"),
        ("qat-teacher", "QAT from the teacher"),
        ("logits", "logits distillation"), ("logits-relation", "logits + relation")]
base = last("qat-scratch", "eval")["val_loss"]
print(f"teacher (full precision) validation loss {teacher:.4f}")
print(f"| run | val loss | KL to teacher | gap closed | tokens | tok/s |")
print(f"|---|---|---|---|---|---|")
for run, name in runs:
    ev, tr = last(run, "eval"), last(run, "train")
    closed = (base - ev["val_loss"]) / (base - teacher) if base != teacher else float("nan")
    print(f"| {name} | {ev['val_loss']:.4f} | {ev['kl_to_teacher']:.4f} | {closed:.1%} "
          f"| {tr['tokens']} | {tr['tok_per_s']:.0f} |")
PY
