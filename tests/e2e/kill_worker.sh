#!/usr/bin/env bash
# A worker killed in the middle of real MLP training: the driver must report
# it within 10 s, exit non-zero, and leave no worker process behind.
set -u
bin="$1"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
die() { echo "FAIL: $*"; cat "$log"; exit 1; }

"$bin/mlp_fashion_mnist" --local 2 --epochs 100 --log-every 20 >"$log" 2>&1 &
driver=$!
for _ in $(seq 300); do grep -q " step " "$log" && break; sleep 0.1; done
grep -q " step " "$log" || { kill -9 "$driver"; die "training did not start"; }
workers=$(pgrep -P "$driver" | tr '\n' ' ')
[ "$(echo $workers | wc -w)" = 2 ] || { kill -9 "$driver" $workers; die "expected 2 workers, got '$workers'"; }
victim=${workers%% *}
kill -9 "$victim"
start=$(date +%s%N)
for _ in $(seq 150); do kill -0 "$driver" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$driver" 2>/dev/null; then
  kill -9 "$driver" $workers 2>/dev/null
  die "driver still running 15 s after worker $victim was killed"
fi
rc=0
wait "$driver" || rc=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$rc" -ne 0 ] || die "exit status 0 after a worker was killed"
grep -Eq "error: worker [01] \(pid $victim, 127\.0\.0\.1:[0-9]+\) lost during step [0-9]+" "$log" ||
  die "no 'worker ... lost during step' error naming pid $victim"
[ "$elapsed_ms" -le 10000 ] || die "took ${elapsed_ms} ms to end the job"
for p in $workers; do
  kill -0 "$p" 2>/dev/null && die "worker $p still running"
done
echo "PASS: job ended ${elapsed_ms} ms after worker $victim was killed: $(grep 'lost during' "$log")"
