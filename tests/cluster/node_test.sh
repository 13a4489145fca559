#!/usr/bin/env bash
# Node daemons on loopback: `sbpflow-worker --listen` processes started here,
# driven by `sbpflow run --workers`. Usage: node_test.sh CASE BIN_DIR WORK_DIR
set -u
case_name=$1 bin=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

nodes=()
cleanup() { exec 2>/dev/null; for p in "${nodes[@]}"; do pkill -9 -P "$p"; kill -9 "$p"; done; }
# The rank processes a daemon started (its children); tests running at the
# same time have their own daemons.
ranks_of() { pgrep -P "$1" | paste -sd' '; }
trap cleanup EXIT
die() { echo "FAIL: $*" >&2; for f in node*.log; do echo "== $f"; cat "$f"; done >&2; exit 1; }

openssl rand -hex 32 >secret
openssl rand -hex 32 >wrong-secret
"$bin/cluster_make_test_plan" --ranks 1 -o one.plan || die "cannot write one.plan"
"$bin/cluster_make_test_plan" --ranks 2 -o two.plan || die "cannot write two.plan"

# start_node NAME [ARGS...]: a daemon on an ephemeral port; sets $addr.
start_node() {
  local name=$1; shift
  "$bin/sbpflow-worker" --listen 127.0.0.1:0 --secret-file secret "$@" >"node-$name.log" 2>&1 &
  nodes+=($!)
  for _ in $(seq 100); do
    addr=$(sed -n 's/^sbpflow-worker: listening on \([0-9.]*:[0-9]*\) .*/\1/p' "node-$name.log")
    [ -n "$addr" ] && return 0
    sleep 0.05
  done
  die "node $name did not start"
}

losses() { grep ' loss ' "$1" | awk '{print $6}'; }

# A failing job: kill (SIGKILL) or freeze (SIGSTOP) rank 0's process mid-step;
# the driver must end within 10 s naming it, the other rank must be gone, the
# daemons must serve the next job.
failing_rank() {
  local signal=$1
  start_node a; a=$addr
  start_node b; b=$addr
  "$bin/sbpflow" run two.plan --workers "$a,$b" --secret-file secret --data synthetic \
    --epochs 1000000 --log-every 1000000 >run.log 2>&1 &
  local driver=$! victim=""
  for _ in $(seq 100); do
    victim=$(ranks_of "${nodes[0]}") && [ -n "$victim" ] && break
    sleep 0.1
  done
  [ -n "$victim" ] || die "rank processes did not start"
  local other
  other=$(ranks_of "${nodes[1]}")
  sleep 1.5
  kill "-$signal" "$victim"
  local start
  start=$(date +%s.%N)
  for _ in $(seq 150); do kill -0 $driver 2>/dev/null || break; sleep 0.1; done
  kill -0 $driver 2>/dev/null && die "driver still running 15 s after SIG$signal"
  local rc=0
  wait $driver || rc=$?
  local elapsed
  elapsed=$(echo "$(date +%s.%N) - $start" | bc)
  tail -2 run.log
  echo "driver ended $elapsed s after SIG$signal"
  [ $rc -ne 0 ] || die "sbpflow run exited 0"
  grep -Eq "^error: worker 0 \(pid $victim, 127\.0\.0\.1:[0-9]+\) lost during step [0-9]+" run.log ||
    die "no 'lost during step' error naming pid $victim: $(cat run.log)"
  awk -v e="$elapsed" 'BEGIN { exit !(e <= 10) }' || die "took $elapsed s to end the job"
  for _ in $(seq 50); do kill -0 "$other" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$other" 2>/dev/null && die "rank 1 (pid $other) still running"
  # The daemons reap (or kill) the victim and serve the next job.
  for _ in $(seq 60); do kill -0 "$victim" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$victim" 2>/dev/null && die "the victim (pid $victim) was not reaped"
  "$bin/sbpflow" run two.plan --workers "$a,$b" --secret-file secret --data synthetic \
    >next.log 2>&1 || die "the daemons did not serve the next job: $(cat next.log)"
}

case $case_name in
match_local)
  start_node a; a=$addr
  start_node b; b=$addr
  start_node c --ranks 2; c=$addr
  "$bin/sbpflow" run one.plan --local 1 --data synthetic --epochs 2 --log-every 1 >one.log 2>&1 ||
    die "1-rank job: $(cat one.log)"
  "$bin/sbpflow" run two.plan --local 2 --data synthetic --epochs 2 --log-every 1 >local.log 2>&1 ||
    die "--local 2 job: $(cat local.log)"
  "$bin/sbpflow" run two.plan --workers "$a,$b" --secret-file secret --data synthetic --epochs 2 \
    --log-every 1 >nodes.log 2>&1 || die "2-node job: $(cat nodes.log)"
  "$bin/sbpflow" run two.plan --workers "$c" --ranks-per-node 2 --secret-file secret \
    --data synthetic --epochs 2 --log-every 1 >pair.log 2>&1 || die "1 node x 2 ranks: $(cat pair.log)"
  cat nodes.log
  [ "$(losses nodes.log | wc -l)" = 16 ] || die "expected 16 progress lines"
  # The same ranks on the same plan: identical to --local, and to one rank up
  # to float summation order.
  diff <(losses local.log) <(losses nodes.log) || die "2 nodes differ from --local 2"
  diff <(losses local.log) <(losses pair.log) || die "1 node x 2 ranks differs from --local 2"
  paste <(losses one.log) <(losses nodes.log) |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * ($1 < 0 ? -$1 : $1) + 1e-6) { bad = 1; print "loss differs: " $0 } }
         END { exit bad }' || die "2 nodes differ from 1 rank"
  diff <(grep 'test accuracy' one.log) <(grep 'test accuracy' nodes.log) || die "accuracy differs"
  grep -q "job 1 from .* ended: the job finished" node-a.log || die "node a did not log the job's end"
  ;;
wrong_secret)
  start_node a; a=$addr
  rc=0
  "$bin/sbpflow" run one.plan --workers "$a" --secret-file wrong-secret --data synthetic \
    >wrong.log 2>&1 || rc=$?
  cat wrong.log
  [ $rc -ne 0 ] || die "a driver with the wrong secret ran a job"
  grep -q "^error: node $a refused the job: the driver did not prove the cluster's shared secret" \
    wrong.log || die "no clear refusal"
  grep -q "refused a job" node-a.log || die "the node did not log the refusal"
  [ -z "$(ranks_of "${nodes[0]}")" ] || die "rank processes started for a refused job"
  printf 'short' >short-secret
  rc=0
  "$bin/sbpflow" run one.plan --workers "$a" --secret-file short-secret --data synthetic \
    >short.log 2>&1 || rc=$?
  [ $rc -ne 0 ] && grep -q "use at least 16" short.log || die "short secret: $(cat short.log)"
  "$bin/sbpflow" run one.plan --workers "$a" --secret-file secret --data synthetic >good.log 2>&1 ||
    die "the node did not serve a good driver after a bad one: $(cat good.log)"
  ;;
hostile_peer)
  # Bytes that are not CAF's protocol, a half-open connection and a flood of
  # random frames must not take the daemon down.
  start_node a; a=$addr
  /usr/bin/python3 - "${a%:*}" "${a#*:}" <<'PY'
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for payload in [b"GET / HTTP/1.0\r\n\r\n", os.urandom(65536), b"\x00" * 4096,
                b"\xff\xff\xff\xff" * 64]:
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(payload)
    except OSError:
        pass
    s.close()
half = socket.create_connection((host, port), timeout=5)  # left open
PY
  sleep 0.5
  kill -0 "${nodes[0]}" || die "the daemon died after garbage input"
  "$bin/sbpflow" run one.plan --workers "$a" --secret-file secret --data synthetic >good.log 2>&1 ||
    die "the daemon did not serve a job after garbage input: $(cat good.log)"
  ;;
slow_handshake)
  # For its first 3.5 s the daemon's handshake reaches the driver 1.5 s late
  # through a proxy (a daemon busy for seconds, as after a header announcing
  # a payload of gigabytes): a heartbeat tick in between closes each of those
  # connections as timed out (CAF 0.17.6, cluster::remoteActor), and the
  # driver connects again until one is answered in time.
  start_node a; a=$addr
  /usr/bin/python3 "$(dirname "$0")/slow_proxy.py" "$a" 1.5 3.5 >proxy.log 2>&1 &
  nodes+=($!)
  for _ in $(seq 100); do port=$(head -1 proxy.log); [ -n "$port" ] && break; sleep 0.05; done
  [ -n "$port" ] || die "the proxy did not start"
  "$bin/sbpflow" run one.plan --workers "127.0.0.1:$port" --secret-file secret --data synthetic \
    >good.log 2>&1 || die "the driver gave up after a slow handshake: $(cat good.log)"
  [ "$(grep -c '^connection' proxy.log)" -ge 4 ] ||
    die "the driver did not connect again: $(cat proxy.log)"
  ;;
busy_port)
  # A second daemon on a taken address says so and exits; the first serves on.
  start_node a; a=$addr
  rc=0
  timeout 20 "$bin/sbpflow-worker" --listen "$a" --secret-file secret >second.log 2>&1 || rc=$?
  cat second.log
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || die "a daemon on a taken port exited $rc"
  grep -q "^error: cannot listen on $a: " second.log || die "no error naming $a"
  "$bin/sbpflow" run one.plan --workers "$a" --secret-file secret --data synthetic >good.log 2>&1 ||
    die "the first daemon did not serve a job: $(cat good.log)"
  ;;
killed_rank) failing_rank KILL ;;
frozen_rank) failing_rank STOP ;;
killed_driver)
  # The driver dies mid-job: the daemons end its ranks and serve the next job.
  start_node a; a=$addr
  start_node b; b=$addr
  "$bin/sbpflow" run two.plan --workers "$a,$b" --secret-file secret --data synthetic \
    --epochs 1000000 --log-every 1000000 >run.log 2>&1 &
  driver=$!
  sleep 2
  ranks="$(ranks_of "${nodes[0]}") $(ranks_of "${nodes[1]}")"
  [ -n "$ranks" ] || die "no rank processes"
  kill -9 $driver
  wait $driver 2>/dev/null
  alive() { for p in $ranks; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
  for _ in $(seq 100); do alive || break; sleep 0.1; done
  alive && die "rank processes ($ranks) outlived their driver by 10 s"
  grep -q "ended: the driver was lost" node-a.log || die "node a did not notice the driver's loss"
  "$bin/sbpflow" run two.plan --workers "$a,$b" --secret-file secret --data synthetic \
    >next.log 2>&1 || die "the daemons did not serve the next job: $(cat next.log)"
  ;;
*)
  die "unknown case $case_name"
  ;;
esac
echo "PASS: $case_name"
