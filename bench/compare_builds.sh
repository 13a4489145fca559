#!/usr/bin/env bash
# Two sbpflow builds side by side on this machine: the MLP (Fashion-MNIST,
# 784-512-10, batch 256) and the char GPT (examples/gpt_char.cpp, dropout 0)
# on the same ranks, alternating the builds --repeat times so that the
# machine's noise falls on both; prints the median steady-state step time of
# each and their ratio (a regression check for a refactoring).
#
# usage: bench/compare_builds.sh --base DIR [--build DIR] [--repeat R] [--mlp-steps K] [--gpt-steps K]
#        (DIR: a build directory holding bin/mlp_fashion_mnist and bin/gpt_char)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
build="$(realpath -m "$here/../build")"
base=""
repeat=5
mlpSteps=200
gptSteps=40
python=/usr/bin/python3

while [[ $# -gt 0 ]]; do
  case "$1" in
  --base) base="$(realpath -m "$2")"; shift 2 ;;
  --build) build="$(realpath -m "$2")"; shift 2 ;;
  --repeat) repeat="$2"; shift 2 ;;
  --mlp-steps) mlpSteps="$2"; shift 2 ;;
  --gpt-steps) gptSteps="$2"; shift 2 ;;
  -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "compare_builds.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$base" ]] || { echo "compare_builds.sh: --base DIR is required" >&2; exit 2; }
for dir in "$base" "$build"; do
  for bin in mlp_fashion_mnist gpt_char; do
    [[ -x "$dir/bin/$bin" ]] || { echo "compare_builds.sh: no $dir/bin/$bin" >&2; exit 2; }
  done
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mlp() { # dir ranks json
  "$1/bin/mlp_fashion_mnist" --local "$2" --threads 1 --max-steps "$mlpSteps" --epochs 1 \
    --log-every 1000000 --bench-json "$3" >/dev/null
}
gpt() { # dir dp tp json
  "$1/bin/gpt_char" --dp "$2" --tp "$3" --threads 1 --steps "$gptSteps" --dropout 0 \
    --log-every 1000000 --bench-json "$4" >/dev/null
}
cases=("mlp 1" "mlp 2" "gpt 1 1" "gpt 2 1" "gpt 1 2")
for ((r = 0; r < repeat; ++r)); do
  for c in "${cases[@]}"; do
    set -- $c
    name="${c// /_}"
    for side in base build; do
      dir="$base"
      [[ $side == build ]] && dir="$build"
      if [[ $1 == mlp ]]; then
        mlp "$dir" "$2" "$out/$name.$side.$r.json"
      else
        gpt "$dir" "$2" "$3" "$out/$name.$side.$r.json"
      fi
    done
  done
done

"$python" - "$out" "$repeat" "${cases[@]}" <<'PY'
import json, statistics, sys
out, repeat, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
label = {"mlp": "MLP, {} rank(s)", "gpt": "GPT, dp={} tp={}"}
print("| model | base step | this build's step | ratio |\n|---|---|---|---|")
for c in cases:
    parts = c.split()
    name = "_".join(parts)
    med = {side: statistics.median(json.load(open(f"{out}/{name}.{side}.{r}.json"))["step_ms"]
                                   for r in range(repeat)) for side in ("base", "build")}
    print(f"| {label[parts[0]].format(*parts[1:])} | {med['base']:.2f} ms | {med['build']:.2f} ms | "
          f"**{med['build'] / med['base']:.3f}** |")
PY
