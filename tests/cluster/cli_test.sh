#!/usr/bin/env bash
# Multi-process tests of the real binaries: sbpflow run/inspect driving
# sbpflow-worker processes on a plan from cluster_make_test_plan.
# Usage: cli_test.sh CASE BIN_DIR WORK_DIR
set -u
case_name=$1 bin=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

die() { echo "FAIL: $*" >&2; exit 1; }

"$bin/cluster_make_test_plan" --ranks 1 -o one.plan || die "cannot write one.plan"
"$bin/cluster_make_test_plan" --ranks 2 -o two.plan || die "cannot write two.plan"

case $case_name in
two_workers_match_one)
  "$bin/sbpflow" run one.plan --local 1 --data synthetic --epochs 2 --log-every 1 >one.log 2>&1 ||
    die "1-worker job failed: $(cat one.log)"
  "$bin/sbpflow" run two.plan --local 2 --data synthetic --epochs 2 --log-every 1 >two.log 2>&1 ||
    die "2-worker job failed: $(cat two.log)"
  cat two.log
  [ "$(grep -c '^epoch [12] step [0-9]*/8 loss ' two.log)" = 16 ] || die "expected 16 progress lines"
  grep -q '^epoch 2 test accuracy ' two.log || die "no accuracy line"
  # Same model, same data: the combined metrics of 2 ranks match 1 rank's
  # (loss up to float summation order, accuracy exactly).
  paste <(grep ' loss ' one.log | awk '{print $6}') <(grep ' loss ' two.log | awk '{print $6}') |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * ($1 < 0 ? -$1 : $1) + 1e-6) { bad = 1; print "loss differs: " $0 } }
         END { exit bad }' || die "losses differ between 1 and 2 workers"
  diff <(grep 'test accuracy' one.log) <(grep 'test accuracy' two.log) || die "accuracy differs"
  # Learning happened: the last loss is below the first.
  first=$(grep ' loss ' two.log | head -1 | awk '{print $6}')
  last=$(grep ' loss ' two.log | tail -1 | awk '{print $6}')
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || die "loss did not decrease ($first -> $last)"
  ;;
killed_worker)
  "$bin/sbpflow" run two.plan --local 2 --data synthetic --epochs 1000000 --log-every 1000000 \
    >run.log 2>&1 &
  driver=$!
  for _ in $(seq 100); do
    workers=$(pgrep -P "$driver" | tr '\n' ' ')
    [ "$(echo $workers | wc -w)" = 2 ] && break
    sleep 0.1
  done
  [ "$(echo $workers | wc -w)" = 2 ] || { kill -9 $driver; die "workers did not start"; }
  sleep 1
  victim=${workers%% *}
  kill -9 "$victim"
  start=$(date +%s)
  rc=0
  for _ in $(seq 150); do kill -0 $driver 2>/dev/null || break; sleep 0.1; done
  if kill -0 $driver 2>/dev/null; then
    kill -9 $driver $workers 2>/dev/null
    die "driver still running 15 s after a worker was killed"
  fi
  wait $driver || rc=$?
  elapsed=$(($(date +%s) - start))
  tail -3 run.log
  [ $rc -ne 0 ] || die "sbpflow run exited 0 after a worker was killed"
  grep -Eq "^error: worker [01] \(pid $victim, 127\.0\.0\.1:[0-9]+\) lost during step [0-9]+" run.log ||
    die "no 'lost during step' error naming pid $victim"
  [ $elapsed -le 10 ] || die "took $elapsed s to notice"
  for p in $workers; do
    kill -0 "$p" 2>/dev/null && die "worker $p still running"
  done
  ;;
corrupt_plan)
  head -c 200 two.plan >corrupt.plan
  printf 'garbage' >>corrupt.plan
  rc=0; "$bin/sbpflow" inspect corrupt.plan >inspect.log 2>&1 || rc=$?
  cat inspect.log
  [ $rc -ne 0 ] || die "inspect of a corrupt plan exited 0"
  grep -q "^error: .*corrupt.plan" inspect.log || die "inspect error does not name the file"
  rc=0; "$bin/sbpflow" run corrupt.plan --local 1 --data synthetic >run.log 2>&1 || rc=$?
  cat run.log
  [ $rc -ne 0 ] || die "run of a corrupt plan exited 0"
  grep -q "^error: .*corrupt.plan" run.log || die "run error does not name the file"
  rc=0; "$bin/sbpflow" inspect does-not-exist.plan >missing.log 2>&1 || rc=$?
  [ $rc -ne 0 ] && grep -q "does-not-exist.plan" missing.log || die "missing plan: $(cat missing.log)"
  "$bin/sbpflow" inspect two.plan | grep -q "fc.weight" || die "inspect of a good plan"
  ;;
missing_dataset)
  rc=0
  timeout 60 "$bin/sbpflow" run one.plan --local 1 --data-dir "$work/no/such/dir" >run.log 2>&1 || rc=$?
  cat run.log
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "expected a clear failure, got exit $rc"
  grep -q "^error: .*data directory '$work/no/such/dir' does not exist" run.log ||
    die "error does not name the missing directory"
  ;;
too_big)
  # A plan that cannot fit the machine's memory (a batch of 10^11) is refused
  # as it is loaded, before the rendezvous, saying what the rank needs.
  "$bin/cluster_make_test_plan" --ranks 1 --batch 100000000000 -o big.plan ||
    die "cannot write big.plan"
  rc=0
  timeout 60 "$bin/sbpflow" run big.plan --local 1 --data synthetic >big.log 2>&1 || rc=$?
  cat big.log
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "expected a clear failure, got exit $rc"
  grep -Eq "^error: .*rank 0: the plan needs [0-9]+ bytes on this rank .* device has [0-9]+ bytes: it does not fit" big.log ||
    die "the error does not say what the rank needs and has"
  ;;
cpu_plan_on_cuda)
  # A plan runs on the devices its placements name: a CPU plan is not run
  # with --device cuda (refused before any GPU work, where a GPU is present;
  # without one the GPU's absence is the error).
  rc=0
  timeout 60 "$bin/sbpflow" run one.plan --local 1 --data synthetic --device cuda >cpu-on-cuda.log \
    2>&1 || rc=$?
  cat cpu-on-cuda.log
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "expected a clear failure, got exit $rc"
  grep -Eq "^error: worker 0 .*(placement 'dp' of the plan is on CPU devices|GPU 0: |built without the CUDA backend)" \
    cpu-on-cuda.log || die "the error does not name the placement's device"
  ;;
cuda_device)
  # --device cuda: with a usable GPU the job trains like the CPU; without one
  # (or in a build without CUDA) it fails at once, saying why.
  cpu_losses() { grep ' loss ' "$1" | awk '{print $6}'; }
  "$bin/cluster_make_test_plan" --ranks 1 --device cuda -o one-cuda.plan ||
    die "cannot write one-cuda.plan"
  rc=0
  timeout 60 "$bin/sbpflow" run one-cuda.plan --local 1 --data synthetic --device cuda --log-every 1 \
    >gpu.log 2>&1 || rc=$?
  cat gpu.log
  if nvidia-smi -L >/dev/null 2>&1 && [ $rc -eq 0 ]; then
    "$bin/sbpflow" run one.plan --local 1 --data synthetic --log-every 1 >cpu.log 2>&1 ||
      die "the CPU run failed: $(cat cpu.log)"
    paste <(cpu_losses cpu.log) <(cpu_losses gpu.log) |
      awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * ($1 < 0 ? -$1 : $1) + 1e-7) bad = 1 }
           END { exit bad }' || die "GPU losses differ from the CPU's"
  else
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "expected a clear failure without a GPU, got exit $rc"
    grep -Eq "^error: worker 0 .*(GPU 0: |built without the CUDA backend)" gpu.log ||
      die "the error does not say which GPU or why"
  fi
  ;;
trace)
  # --trace-dir: every rank writes a Chrome trace of its first --trace-steps
  # steps per program, counting steps across epochs.
  "$bin/sbpflow" run two.plan --local 2 --data synthetic --epochs 2 --trace-dir traces \
    --trace-steps 5 >run.log 2>&1 || die "traced job failed: $(cat run.log)"
  [ "$(ls traces | tr '\n' ' ')" = "rank0.trace.json rank1.trace.json " ] ||
    die "trace directory holds: $(ls traces)"
  grep -q "^wrote traces of the first 5 steps of each program to traces/rank<R>.trace.json" run.log ||
    die "no line about the traces: $(cat run.log)"
  for r in 0 1; do
    /usr/bin/python3 - "traces/rank$r.trace.json" "$r" <<'PY' || die "rank $r trace"
import json, sys
t = json.load(open(sys.argv[1]))
rank = int(sys.argv[2])
train = [p for p in t["otherData"]["programs"] if p["name"] == "train"][0]
assert (train["steps_run"], train["steps_traced"]) == (16, 5), train
tasks = {}
for e in t["traceEvents"]:
    assert e["pid"] == rank, e
    if e["ph"] == "X" and e["args"]["program"] == "train" and "task" in e["args"]:
        tasks.setdefault(e["args"]["step"], []).append(e["args"]["task"])
assert sorted(tasks) == list(range(5)), sorted(tasks)
for step, ks in tasks.items():
    assert sorted(ks) == list(range(train["tasks"])), (step, ks)
PY
  done
  # Without --trace-dir nothing is traced or written.
  mkdir plain && (cd plain && "$bin/sbpflow" run ../two.plan --local 2 --data synthetic \
    >run.log 2>&1) || die "untraced job failed: $(cat plain/run.log)"
  [ -z "$(find plain -name '*.trace.json')" ] || die "an untraced job wrote a trace"
  grep -q "wrote traces" plain/run.log && die "an untraced job reports traces"
  # A directory that cannot be made is an error before training, naming it.
  touch not-a-dir
  rc=0
  timeout 60 "$bin/sbpflow" run two.plan --local 2 --data synthetic --trace-dir not-a-dir/traces \
    >bad.log 2>&1 || rc=$?
  cat bad.log
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "expected a clear failure, got exit $rc"
  grep -q "^error: .*cannot create trace directory 'not-a-dir/traces'" bad.log ||
    die "error does not name the trace directory"
  grep -q " step " bad.log && die "training started with an unusable trace directory"
  ;;
worker_links_no_llvm)
  ldd "$bin/sbpflow-worker" >ldd.log || die "ldd failed"
  grep -Ei 'libLLVM|libMLIR' ldd.log && die "sbpflow-worker links LLVM/MLIR"
  grep -q 'libcaf_io' ldd.log || die "ldd output looks wrong: $(cat ldd.log)"
  ;;
*)
  die "unknown case $case_name"
  ;;
esac
echo "PASS: $case_name"
