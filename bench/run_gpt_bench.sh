#!/usr/bin/env bash
# Side-by-side char-GPT benchmark: sbpflow (build/bin/gpt_char on a [dp, tp]
# mesh) against the PyTorch peer (bench/gpt_torch.py, one process), both from
# the same initial weights (an sbpflow checkpoint), on the same fortunes
# batches, dropout 0, AdamW + clipping as in examples/gpt_char.cpp.
#
# usage: bench/run_gpt_bench.sh [--dp N] [--tp M] [--threads T] [--steps K] [--seed S] [--build DIR]
# --threads is per sbpflow rank; PyTorch gets dp * tp * T threads (the same cores).
set -euo pipefail

dp=1
tp=1
threads=1
steps=20
seed=1
bf16=()
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=bench/bench_args.sh
source "$here/bench_args.sh" # sets the defaults of build and python

while [[ $# -gt 0 ]]; do
  case "$1" in
  # --NAME VALUE sets the variable NAME.
  --dp | --tp | --threads | --steps | --seed | --build) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
  --bf16) bf16=(--bf16); shift ;;
  -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "run_gpt_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
require_positive_integers run_gpt_bench.sh dp tp threads steps
if ! [[ "$seed" =~ ^[0-9]+$ ]]; then
  echo "run_gpt_bench.sh: --seed must be a non-negative integer, got '$seed'" >&2
  exit 2
fi

ours="$build/bin/gpt_char"
if [[ ! -x "$ours" ]]; then
  echo "run_gpt_bench.sh: $ours not built (ninja -C $build gpt_char)" >&2
  exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
torch_threads=$((dp * tp * threads))

echo "== OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>} (both sides use OpenBLAS for GEMM)" >&2
echo "== sbpflow: initial weights -> $out/init" >&2
"$ours" --seed "$seed" --init-checkpoint "$out/init" >&2
echo "== sbpflow: --dp $dp --tp $tp --threads $threads --steps $steps --dropout 0" >&2
# --resume: start from the very weights PyTorch loads (they also follow from
# the seed; resuming makes the comparison independent of that).
"$ours" --dp "$dp" --tp "$tp" --threads "$threads" --steps "$steps" --seed "$seed" \
  --dropout 0 --resume "$out/init" --log-every 1 --bench-json "$out/sbpflow.json" \
  ${bf16[@]+"${bf16[@]}"} >&2
echo "== pytorch: gpt_torch.py --threads $torch_threads --steps $steps" >&2
"$python" "$here/gpt_torch.py" --checkpoint "$out/init" --threads "$torch_threads" \
  --steps "$steps" --seed "$seed" --json-out "$out/pytorch.json" ${bf16[@]+"${bf16[@]}"} >&2

"$python" - "$out" "$dp" "$tp" "$threads" <<'PY'
import json, os, sys

out, dp, tp, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ours = json.load(open(os.path.join(out, "sbpflow.json")))
torch = json.load(open(os.path.join(out, "pytorch.json")))
n = min(len(ours["losses"]), len(torch["losses"]))
if n == 0:
    sys.exit("run_gpt_bench.sh: no losses to compare")
print(f"{'step':>5} {'sbpflow':>12} {'pytorch':>12} {'rel_diff':>10}")
for i in range(n):
    a, b = ours["losses"][i], torch["losses"][i]
    print(f"{i + 1:>5} {a:>12.6f} {b:>12.6f} {abs(a - b) / abs(b):>10.2e}")
a, b = ours["losses"][n - 1], torch["losses"][n - 1]
print(f"loss after {n} steps: sbpflow {a:.6f}, pytorch {b:.6f}, relative difference "
      f"{abs(a - b) / abs(b):.2e}")
print(f"step time (mean after warm-up): sbpflow {ours['step_ms']:.2f} ms on [dp={dp}, tp={tp}] x "
      f"{threads} thread(s), pytorch {torch['step_ms']:.2f} ms on {torch['threads']} thread(s) "
      f"(median {torch['median_step_ms']:.2f} ms); ratio sbpflow / pytorch "
      f"{ours['step_ms'] / torch['step_ms']:.3f} (< 1 is better for sbpflow)")
PY
