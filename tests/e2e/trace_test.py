#!/usr/bin/python3
"""The MLP on 2 ranks with --trace-dir: both ranks write a Chrome trace in
which every task of the train program runs once per traced step, on the
compute lane or (all-reduces) the comm lane, named as `sbpflow inspect` names
it. It also prints how much of each all-reduce ran while compute ran (the
overlap gradient bucketing is for); that is a measurement, not asserted: a
test must not depend on timing (CONVENTIONS.md).

Then CO2 (--sync co2:H): the trace shows the inner steps on the compute
lane and each round's exchange on a comm lane of its own, started when the
round began and running while its inner steps do (it starts before the
round's second inner step ends, H - 1 steps before it is joined; it used to
wait for the join while CAF's work-stealing scheduler ran the inner steps'
jobs first).

Then EDiT (--sync edit:H): the first step of every round after the first
runs the program train_sync, the rest train; train_sync's exchanges (one
all-reduce a parameter) are on the comm lane, issued in the order the
forward uses the parameters, and it prints how much of them ran while the
forward computed (measured, not asserted).

Then A-EDiT (--sync aedit:SECONDS) with rank 1 slowed: the ranks take
different numbers of steps (the group's budget in all, rank 0 more) and run
train_sync, whose exchanges are on the comm lane, equally often.

Usage: trace_test.py BIN_DIR. Exit 77 (skipped) without the data set.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

DATA_DIR = "/usr/share/datasets/fashion-mnist"
RANKS, STEPS, TRACED = 2, 30, 25


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")
    return r.stdout


def plan_tasks(bin_dir, work):
    """(name, op) of every task of the train program, from `sbpflow inspect`."""
    plan = os.path.join(work, "mlp.plan")
    run([f"{bin_dir}/mlp_fashion_mnist", "--local", str(RANKS), "--plan-only", "--emit-plan", plan])
    tasks, section = [], None
    for line in run([f"{bin_dir}/sbpflow", "inspect", plan]).splitlines():
        if line.startswith("program "):
            section = line.split()[1]
        m = re.match(r"^    (\d+) (\S+) (\w+) \(", line)
        if section == "train" and m:
            if int(m.group(1)) != len(tasks):
                fail(f"unexpected task numbering in: {line}")
            tasks.append((m.group(2), m.group(3)))
    if not tasks:
        fail("no tasks of the train program in `sbpflow inspect`")
    return tasks


def overlap(a, b):
    return min(a["ts"] + a["dur"], b["ts"] + b["dur"]) - max(a["ts"], b["ts"])


def check_rank(path, rank, tasks):
    with open(path) as f:
        trace = json.load(f)  # raises on anything that is not JSON
    events = trace["traceEvents"]
    lanes = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    info = {p["name"]: p for p in trace["otherData"]["programs"]}["train"]
    if (info["steps_run"], info["steps_traced"], info["max_steps"]) != (STEPS, TRACED, TRACED):
        fail(f"rank {rank}: train metadata {info}")
    steps, by_step = {}, {}
    for e in events:
        if e["ph"] != "X" or e["args"]["program"] != "train":
            continue
        if e["pid"] != rank:
            fail(f"rank {rank}: event with pid {e['pid']}")
        lane = lanes.get(e["tid"])
        s = e["args"]["step"]
        if e["cat"] == "step":
            if lane != "steps" or s in steps:
                fail(f"rank {rank}: step event {e}")
            steps[s] = e
            continue
        k = e["args"]["task"]
        name, op = tasks[k]
        if (e["name"], e["cat"]) != (name, op):
            fail(f"rank {rank}: task {k} is {name} ({op}) in the plan, {e['name']} ({e['cat']}) "
                 "in the trace")
        want = "comm" if op == "AllReduce" else "compute"
        if lane != want:
            fail(f"rank {rank}: task {k} ({op}) on lane {lane}, expected {want}")
        by_step.setdefault(s, []).append(e)
    if sorted(steps) != list(range(TRACED)) or sorted(by_step) != list(range(TRACED)):
        fail(f"rank {rank}: traced steps {sorted(steps)} / {sorted(by_step)}, "
             f"expected 0..{TRACED - 1}")
    for s, es in by_step.items():
        ran = sorted(e["args"]["task"] for e in es)
        if ran != list(range(len(tasks))):
            fail(f"rank {rank} step {s}: tasks {ran}, expected each of 0..{len(tasks) - 1} once")
        st = steps[s]
        for e in es:
            if e["ts"] < st["ts"] - 1e-3 or e["ts"] + e["dur"] > st["ts"] + st["dur"] + 1e-3:
                fail(f"rank {rank} step {s}: {e['name']} lies outside its step")

    # Overlap: an all-reduce on the comm lane while a matmul runs on the compute
    # lane. Reported: the share of each all-reduce's time during which some
    # compute task ran (compute tasks run one at a time on one kernel thread).
    report = {}
    for s, es in by_step.items():
        compute = [e for e in es if lanes[e["tid"]] == "compute"]
        for ar in (e for e in es if e["cat"] == "AllReduce"):
            hidden = sum(max(0.0, overlap(ar, c)) for c in compute)
            r = report.setdefault(ar["args"]["task"], [0.0, 0.0, 0])
            r[0] += ar["dur"]
            r[1] += hidden
            if any(c["cat"] == "MatMul" and overlap(ar, c) > 0 for c in compute):
                r[2] += 1
    for k, (dur, hidden, n) in sorted(report.items()):
        print(f"rank {rank}: all-reduce task {k}: mean {dur / TRACED:.0f} us, "
              f"{100 * hidden / dur:.1f}% of it during compute, "
              f"overlaps a matmul in {n}/{TRACED} steps")


def local_sgd_traces(bin_dir, work, sync, steps, extra=()):
    """Per rank, the events and lane names of the MLP's trace under --sync."""
    trace_dir = os.path.join(work, sync.replace(":", "_"))
    run([f"{bin_dir}/mlp_fashion_mnist", "--local", str(RANKS), "--epochs", "1", "--max-steps",
         str(steps), "--sync", sync, "--trace-dir", trace_dir] + list(extra))
    for rank in range(RANKS):
        with open(os.path.join(trace_dir, f"rank{rank}.trace.json")) as f:
            events = json.load(f)["traceEvents"]
        lanes = {e["tid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "thread_name"}
        yield rank, events, lanes


CO2_PERIOD, CO2_STEPS = 10, 40


def check_co2(bin_dir, work):
    for rank, events, lanes in local_sgd_traces(bin_dir, work, f"co2:{CO2_PERIOD}", CO2_STEPS):
        steps = {}
        exchange_lanes, train_lanes = set(), set()
        for e in events:
            if e["ph"] != "X":
                continue
            program = e["args"]["program"]
            if e["cat"] == "step":
                steps[(program, e["args"]["step"])] = e
            elif program == "outer_exchange" and e["cat"] == "AllReduce":
                exchange_lanes.add(e["tid"])
            elif program == "train":
                train_lanes.add(lanes[e["tid"]])
        if train_lanes != {"compute"}:
            fail(f"rank {rank}: CO2's inner steps ran on lanes {train_lanes}")
        if not exchange_lanes or any(lanes[t] != "comm" for t in exchange_lanes):
            fail(f"rank {rank}: the exchange's all-reduces are not on a comm lane")
        rounds = CO2_STEPS // CO2_PERIOD
        exchanges = [steps.get(("outer_exchange", r)) for r in range(rounds)]
        if any(x is None for x in exchanges):
            fail(f"rank {rank}: {rounds} exchanges expected, traced "
                 f"{sorted(s for p, s in steps if p == 'outer_exchange')}")
        # Round r's exchange starts after inner step (r + 1) H - 1 and runs
        # during the next round (the last round's only until the run ends).
        for r, x in enumerate(exchanges[:-1]):
            second = steps[("train", (r + 1) * CO2_PERIOD + 1)]
            if x["ts"] > second["ts"] + second["dur"]:
                fail(f"rank {rank}: round {r}'s exchange began after the next round's second "
                     "inner step ended: it did not run beside the inner steps")
            inner = [steps[("train", (r + 1) * CO2_PERIOD + i)] for i in range(CO2_PERIOD)]
            hidden = sum(max(0.0, overlap(x, t)) for t in inner)
            print(f"rank {rank}: round {r}'s exchange: {x['dur']:.0f} us, "
                  f"{100 * hidden / x['dur']:.0f}% of it beside inner steps")


EDIT_PERIOD, EDIT_STEPS = 10, 40


def check_edit(bin_dir, work):
    for rank, events, lanes in local_sgd_traces(bin_dir, work, f"edit:{EDIT_PERIOD}",
                                                EDIT_STEPS):
        steps, syncs = {}, {}
        for e in events:
            if e["ph"] != "X":
                continue
            program, s = e["args"]["program"], e["args"]["step"]
            if e["cat"] == "step":
                steps[(program, s)] = e
            elif program == "train_sync":
                syncs.setdefault(s, []).append(e)
        # Global step 10 (i + 1) is train_sync's step i; train's steps are the
        # rest, so train_sync i runs between train's 10 (i + 1) - i - 1 and
        # 10 (i + 1) - i (the trace counts each program's steps).
        rounds = (EDIT_STEPS - 1) // EDIT_PERIOD
        counts = {p: sum(1 for q, _ in steps if q == p) for p in ("train", "train_sync")}
        if counts != {"train": EDIT_STEPS - rounds, "train_sync": rounds}:
            fail(f"rank {rank}: steps run {counts}, expected {EDIT_STEPS - rounds} of train and "
                 f"{rounds} of train_sync")
        for i in range(rounds):
            before = steps[("train", EDIT_PERIOD * (i + 1) - i - 1)]
            sync = steps[("train_sync", i)]
            after = steps[("train", EDIT_PERIOD * (i + 1) - i)]
            if not (before["ts"] + before["dur"] <= sync["ts"] + 1e-3 and
                    sync["ts"] + sync["dur"] <= after["ts"] + 1e-3):
                fail(f"rank {rank}: train_sync's step {i} did not run between train's steps "
                     f"{EDIT_PERIOD * (i + 1) - i - 1} and {EDIT_PERIOD * (i + 1) - i}")
        for s, es in sorted(syncs.items()):
            exchanges = sorted((e for e in es if e["cat"] == "AllReduce"), key=lambda e: e["ts"])
            if len(exchanges) != 4 or any(lanes[e["tid"]] != "comm" for e in exchanges):
                fail(f"rank {rank} step {s}: {len(exchanges)} exchanges on lanes "
                     f"{[lanes[e['tid']] for e in exchanges]}, expected the 4 parameters' on comm")
            # Named by the source line of their layer: fc1's (line 46) first.
            order = [e["name"] for e in exchanges]
            if order != sorted(order) or order[0] == order[-1]:
                fail(f"rank {rank} step {s}: exchanges ran in the order {order}, not the forward's")
            compute = [e for e in es if lanes[e["tid"]] == "compute"]
            hidden = sum(max(0.0, overlap(x, c)) for x in exchanges for c in compute)
            total = sum(x["dur"] for x in exchanges)
            print(f"rank {rank}: EDiT step {s}: exchanges {total:.0f} us, "
                  f"{100 * hidden / max(total, 1e-9):.0f}% of it beside compute")


AEDIT_STEPS = 40


def check_aedit(bin_dir, work):
    """A-EDiT with rank 1 slowed: the ranks take different numbers of steps
    but synchronise the same rounds (train_sync as often on each), each
    round's exchanges on the comm lane."""
    counts = []
    for rank, events, lanes in local_sgd_traces(
            bin_dir, work, "aedit:0.2", AEDIT_STEPS,
            ["--aedit-min-steps", "1", "--slow-rank", "1", "--slow-step-ms", "20",
             "--trace-steps", str(2 * AEDIT_STEPS)]):
        steps = {"train": 0, "train_sync": 0}
        for e in events:
            if e["ph"] != "X":
                continue
            if e["cat"] == "step" and e["args"]["program"] in steps:
                steps[e["args"]["program"]] += 1
            elif e["args"]["program"] == "train_sync" and e["cat"] == "AllReduce" and \
                    lanes[e["tid"]] != "comm":
                fail(f"rank {rank}: an A-EDiT exchange ran on lane {lanes[e['tid']]}")
        counts.append(steps)
    if counts[0]["train_sync"] != counts[1]["train_sync"] or counts[0]["train_sync"] < 1:
        fail(f"the ranks synchronised different rounds (or none): {counts}")
    total = [c["train"] + c["train_sync"] for c in counts]
    if sum(total) != RANKS * AEDIT_STEPS or total[0] <= total[1]:
        fail(f"steps per rank {total}: expected {RANKS * AEDIT_STEPS} in all, rank 0's more")
    print(f"A-EDiT: steps per rank {total}, {counts[0]['train_sync']} synchronised rounds")


def main():
    bin_dir = sys.argv[1]
    if not os.path.isdir(DATA_DIR):
        print(f"SKIP: Fashion-MNIST not installed at {DATA_DIR}")
        sys.exit(77)
    work = tempfile.mkdtemp(prefix="sbpflow_trace_")
    try:
        tasks = plan_tasks(bin_dir, work)
        trace_dir = os.path.join(work, "traces")
        out = run([f"{bin_dir}/mlp_fashion_mnist", "--local", str(RANKS), "--epochs", "1",
                   "--max-steps", str(STEPS), "--trace-dir", trace_dir, "--trace-steps",
                   str(TRACED)])
        files = sorted(os.listdir(trace_dir))
        if files != [f"rank{r}.trace.json" for r in range(RANKS)]:
            fail(f"trace directory holds {files}\n{out}")
        for r in range(RANKS):
            check_rank(os.path.join(trace_dir, f"rank{r}.trace.json"), r, tasks)
        check_co2(bin_dir, work)
        check_edit(bin_dir, work)
        check_aedit(bin_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
