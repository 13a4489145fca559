#!/usr/bin/env bash
# Side-by-side MLP benchmark: sbpflow (build/bin/mlp_fashion_mnist) against the
# PyTorch peer (bench/mlp_torch.py), same ranks, threads and steps.
#
# usage: bench/run_mlp_bench.sh [--ranks N] [--threads T] [--steps K] [--repeat R] [--build DIR]
# With --repeat R the two sides run alternately R times each and the table
# shows medians (a 2-core machine is noisy; alternating spreads the noise).
set -euo pipefail

ranks=2
threads=1
steps=60
repeat=1
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=bench/bench_args.sh
source "$here/bench_args.sh" # sets the defaults of build and python

while [[ $# -gt 0 ]]; do
  case "$1" in
  # --NAME VALUE sets the variable NAME.
  --ranks | --threads | --steps | --repeat | --build) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
  -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
  *) echo "run_mlp_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
require_positive_integers run_mlp_bench.sh ranks threads steps repeat

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
ours="$build/bin/mlp_fashion_mnist"

if [[ ! -x "$ours" ]]; then
  echo "== sbpflow: skipped, $ours not built (ninja -C $build mlp_fashion_mnist)" >&2
fi
echo "== OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>} (both sides use OpenBLAS for GEMM)" >&2
for ((i = 0; i < repeat; i++)); do
  if [[ -x "$ours" ]]; then
    echo "== sbpflow: $ours --local $ranks --threads $threads --epochs 1 --max-steps $steps" >&2
    if ! "$ours" --local "$ranks" --threads "$threads" --epochs 1 --max-steps "$steps" \
      --bench-json "$out/sbpflow.$i.json" >&2; then
      echo "== sbpflow: failed (exit $?), its row is left empty" >&2
      rm -f "$out/sbpflow.$i.json"
    fi
  fi
  echo "== pytorch: mlp_torch.py --ranks $ranks --threads $threads --steps $steps" >&2
  "$python" "$here/mlp_torch.py" --ranks "$ranks" --threads "$threads" --steps "$steps" \
    --json-out "$out/pytorch.$i.json" >&2
done

"$python" - "$out" <<'PY'
import glob, json, os, statistics, sys

def load(framework):
    runs = []
    for path in sorted(glob.glob(os.path.join(sys.argv[1], framework + ".*.json"))):
        with open(path) as f:
            runs.append(json.loads(f.read()))
    if not runs:
        return None
    # Medians over the repeats; the rest of the fields from the median run.
    runs.sort(key=lambda r: r["step_ms"])
    r = dict(runs[len(runs) // 2])
    r["step_ms"] = statistics.median(x["step_ms"] for x in runs)
    return r

ours, torch = load("sbpflow"), load("pytorch")
flop = (torch or {}).get("matmul_flop_per_step")

def peak(r):
    return max(r.get("peak_rss_mb_per_rank") or [float("nan")])

def row(name, r):
    if r is None:
        return f"{name:<10} {'-':>10} {'-':>12} {'-':>12} {'-':>10}"
    rss = peak(r)
    gf = flop / r["step_ms"] / 1e6 if flop and r["step_ms"] > 0 else float("nan")
    return (f"{name:<10} {r['step_ms']:>10.3f} {gf:>12.2f} {rss:>12.1f} "
            f"{r['final_loss']:>10.4f}")

print(f"{'framework':<10} {'step_ms':>10} {'GFLOP/s':>12} {'peak_rss_MB':>12} {'loss':>10}")
print(row("sbpflow", ours))
print(row("pytorch", torch))
if ours and torch:
    print(f"{'ratio':<10} {ours['step_ms'] / torch['step_ms']:>10.3f} {'':>12} "
          f"{peak(ours) / peak(torch):>12.3f}"
          "   (sbpflow / pytorch; < 1 is better for sbpflow)")
if flop:
    print(f"GFLOP/s counts matmul FLOPs only ({flop / 1e6:.1f} MFLOP per step); "
          "peak_rss_MB is the largest rank's.")
n = (ours or torch or {}).get("ranks", 1)
grad_bytes = (784 * 512 + 512 + 512 * 10 + 10) * 4
print(f"gradients: {grad_bytes / 1e6:.2f} MB per step; a ring all-reduce sends "
      f"2(n-1)/n of that, {2 * (n - 1) / n * grad_bytes / 1e6:.2f} MB per rank per step")
PY
