#!/usr/bin/env bash
# End-to-end run of tern's packing pipeline on a model it makes itself (no download):
# a random TriLM-style checkpoint from configs/models/trilm-tiny.toml is packed at 2 and 1.6
# bits, inspected, unpacked back to a latent checkpoint and packed again, and the two packed
# files are compared byte for byte. Then the CPU engine serves the packed model (`tern infer`,
# random weights so the text is noise) and measures it (`tern bench`).
#   bash scripts/pack-demo.sh [CONFIG] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/models/trilm-tiny.toml}
work=${2:-$(mktemp -d)}
# TERN_CARGO_FLAGS: extra cargo flags (CI passes --features wgpu to share its release build).
cargo build --release --quiet ${TERN_CARGO_FLAGS:-}
tern() { cargo run --release --quiet ${TERN_CARGO_FLAGS:-} -- "$@"; }   # honours CARGO_TARGET_DIR

tern init "$config" --out "$work/latent" --force
for bits in 2 1.6; do
  tern pack "$work/latent" --out "$work/packed-$bits" --bits "$bits" --force
  tern inspect "$work/packed-$bits"
  tern pack --unpack "$work/packed-$bits" --out "$work/unpacked-$bits" --force
  tern pack "$work/unpacked-$bits" --out "$work/repacked-$bits" --bits "$bits" --force
  cmp "$work/packed-$bits/model.safetensors" "$work/repacked-$bits/model.safetensors"
  echo "pack -> unpack -> pack at $bits bits: byte-identical"
done
tern infer --model "$work/packed-1.6" --tokenizer tests/fixtures/llama-f32/tokenizer.json --prompt "The quick brown fox" -n 16 --ids --stats | tr '\n' ' '
echo
tern bench --model "$work/packed-2" -p 32 -n 16
echo "demo outputs in $work"
