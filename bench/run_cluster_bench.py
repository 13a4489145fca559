#!/usr/bin/python3
"""What communication costs: data-parallel MLP and GPT steps on node daemons in
network namespaces (tests/cluster/netns.py), each node's link capped with
`tc tbf`, beside the compute-only time of one rank.

usage: bench/run_cluster_bench.py [--nodes N] [--caps none,10gbit,1gbit,100mbit]
                                  [--models mlp,gpt] [--codecs none,powersgd:4,...]
                                  [--syncs ddp,diloco:10,co2:10] [--steps S] [--repeat R]
                                  [--build DIR]

Needs root (network namespaces). For each model and cap it starts N
namespaces with one `sbpflow-worker --listen` each and runs the dp=N plan
through `sbpflow run --workers` from a driver namespace, 1 rank per node, one
kernel thread each:

- step: the driver's steady-state step time (after warm-up) of an S-step run,
  the median of R runs;
- compute only: one rank (`--local 1`, no peers) running the same per-rank
  share of the batch (global batch / N), so step - compute only is what the
  collectives and the synchronisation cost;
- sent/step: bytes each node's eth0 transmitted per step (the kernel's
  counter, so TCP/IP headers, CAF heartbeats and progress messages included),
  measured as the difference between an S-step and an S/3-step run so job
  set-up and evaluation cancel out; the mean over the nodes;
- counted/step: the payload bytes each rank's communicators counted per train
  step (the report's sent_bytes_per_step, runtime/comm/Communicator.h's
  rules: no headers, no CAF), the mean over the ranks; sent/step minus
  counted/step is the framing and control traffic;
- wire time: sent/step at the cap's rate, the least time the link needs.

With --codecs each model runs once per gradient codec (the examples'
--compress SPEC; `none` is the dense all-reduce), and with --syncs once per
local-SGD schedule (--sync SPEC: the step is then the mean over whole
rounds, outer steps included; S and S/3 should be multiples of H), beside
the same compute-only time.

On a 2-core machine N = 2 gives each rank a core of its own; more nodes
share cores, and the compute-only time no longer bounds a step from below.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
import netns  # noqa: E402

PORT = 7100
# The models of examples/: global batch 256 (MLP) and 12 sequences (GPT).
MODELS = {
    "mlp": {"tool": "mlp_fashion_mnist", "ranks": "--local", "batch": 256, "data": "fashion-mnist"},
    "gpt": {"tool": "gpt_char", "ranks": "--dp", "batch": 12, "data": "fortunes"},
}


def tool(build, name):
    path = os.path.join(build, "bin", name)
    if not os.access(path, os.X_OK):
        sys.exit(f"run_cluster_bench.py: {path} not built (scripts/build.sh)")
    return path


def emit_plan(build, model, ranks, batch, path, codec="none", sync="ddp"):
    m = MODELS[model]
    subprocess.run([tool(build, m["tool"]), m["ranks"], str(ranks), "--batch", str(batch),
                    "--compress", codec, "--sync", sync, "--emit-plan", path, "--plan-only"],
                   check=True, stdout=subprocess.DEVNULL)


def step_args(model, steps, bench_json):
    return ["--data", MODELS[model]["data"], "--max-steps", str(steps), "--log-every",
            "1000000", "--bench-json", bench_json]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def compute_only(build, model, plan, steps, repeat, tmp):
    times = []
    for r in range(repeat):
        out = os.path.join(tmp, f"{model}-compute-{r}.json")
        subprocess.run([tool(build, "sbpflow"), "run", plan, "--local", "1",
                        *step_args(model, steps, out)], check=True, stdout=subprocess.DEVNULL)
        times.append(read_json(out)["step_ms"])
    return statistics.median(times)


def tx_bytes(cluster):
    """Bytes each node's eth0 has transmitted so far."""
    return [int(cluster.run(ns, ["cat", "/sys/class/net/eth0/statistics/tx_bytes"],
                            capture_output=True, text=True, check=True).stdout)
            for ns in cluster.nodes]


def wait_listening(log, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        with open(log) as f:
            if "listening on" in f.read():
                return
        if time.monotonic() > deadline:
            sys.exit(f"run_cluster_bench.py: a daemon did not start; {log}:\n{open(log).read()}")
        time.sleep(0.05)


def on_nodes(build, model, plan, nodes, cap, steps, repeat, tmp, tag):
    """(median step ms, mean bytes sent per node per step, mean bytes counted by each rank's
    communicators per step) of the plan on `nodes` daemons."""
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    with netns.Cluster(nodes, tag, rate=None if cap == "none" else cap) as cluster:
        for i, (ns, addr) in enumerate(zip(cluster.nodes, cluster.addrs)):
            log = open(os.path.join(tmp, f"{tag}-node{i}.log"), "w")
            cluster.popen(ns, [tool(build, "sbpflow-worker"), "--listen", f"{addr}:{PORT}",
                               "--secret-file", secret], stdout=log, stderr=subprocess.STDOUT)
        for i in range(nodes):
            wait_listening(os.path.join(tmp, f"{tag}-node{i}.log"))
        workers = ",".join(f"{addr}:{PORT}" for addr in cluster.addrs)

        def job(n, out):
            before = tx_bytes(cluster)
            argv = [tool(build, "sbpflow"), "run", plan, "--workers", workers, "--secret-file",
                    secret, "--host", cluster.driver_addr, "--rendezvous-timeout-ms", "30000",
                    *step_args(model, n, out)]
            result = cluster.run(cluster.driver_ns, argv, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"run_cluster_bench.py: {model} at {cap} failed:\n{result.stderr}")
            return [b - a for a, b in zip(before, tx_bytes(cluster))]

        short = max(1, steps // 3)
        times, per_step, counted = [], [], []
        for r in range(repeat):
            out = os.path.join(tmp, f"{tag}-{r}.json")
            sent_long = job(steps, out)
            report = read_json(out)
            times.append(report["step_ms"])
            counted.append(statistics.mean(report["sent_bytes_per_step"]))
            sent_short = job(short, os.path.join(tmp, f"{tag}-short.json"))
            per_step.append(statistics.mean(
                (lo - sh) / (steps - short) for lo, sh in zip(sent_long, sent_short)))
        return statistics.median(times), statistics.median(per_step), statistics.median(counted)


def rate_bits(cap):
    return None if cap == "none" else netns._parse_rate(cap)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--caps", default="none,10gbit,1gbit,100mbit")
    parser.add_argument("--models", default="mlp,gpt")
    parser.add_argument("--codecs", default="none",
                        help="gradient codecs (--compress SPEC), comma-separated")
    parser.add_argument("--syncs", default="ddp",
                        help="local-SGD schedules (--sync SPEC), comma-separated; each runs "
                             "with the dense exchange")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    args = parser.parse_args()
    models = args.models.split(",")
    caps = args.caps.split(",")
    for model in models:
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r} (known: {', '.join(MODELS)})")
    for cap in caps:
        if cap != "none":
            try:
                netns._parse_rate(cap)
            except ValueError as e:
                parser.error(f"--caps: {e}")
    if args.nodes < 2 or args.steps < 15 or args.repeat < 1:
        parser.error("need --nodes >= 2, --steps >= 15 and --repeat >= 1")
    netns.require_root()
    build = os.path.abspath(args.build)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            batch = MODELS[model]["batch"]
            if batch % args.nodes:
                sys.exit(f"run_cluster_bench.py: {args.nodes} nodes do not divide the {model}'s "
                         f"batch of {batch}")
            one_plan = os.path.join(tmp, f"{model}-one.plan")
            emit_plan(build, model, 1, batch // args.nodes, one_plan)
            compute = compute_only(build, model, one_plan, args.steps, args.repeat, tmp)
            print(f"{model}: compute only (1 rank, batch {batch // args.nodes}) {compute:.2f} ms",
                  file=sys.stderr)
            # Each codec with synchronous data parallelism, then each local-SGD
            # schedule (which exchanges no gradients to compress).
            methods = [(c, "ddp") for c in args.codecs.split(",")]
            methods += [("none", s) for s in args.syncs.split(",") if s != "ddp"]
            for codec, sync in methods:
                method = codec if sync == "ddp" else sync
                dp_plan = os.path.join(tmp, f"{model}-dp-{len(rows)}.plan")
                emit_plan(build, model, args.nodes, batch, dp_plan, codec, sync)
                for cap in caps:
                    tag = f"bench{len(rows)}x"  # a namespace name holds 15 characters
                    step, sent, counted = on_nodes(build, model, dp_plan, args.nodes, cap,
                                                   args.steps, args.repeat, tmp, tag)
                    wire = sent * 8 / rate_bits(cap) * 1e3 if rate_bits(cap) else None
                    print(f"{model} {method} at {cap}: step {step:.2f} ms, {sent / 1e6:.3f} MB "
                          f"sent per node per step ({counted / 1e6:.3f} MB counted)",
                          file=sys.stderr)
                    rows.append((model, method, cap, step, compute, sent, counted, wire))

    print(f"\n{args.nodes} nodes x 1 rank (1 thread each), data-parallel; medians of "
          f"{args.repeat} runs of {args.steps} steps")
    print("| model | exchange | link cap | step | compute only (1 rank) | step / compute | "
          "sent per node per step (eth0) | counted per rank per step (sent_bytes_per_step) | "
          "wire time at the cap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, method, cap, step, compute, sent, counted, wire in rows:
        print(f"| {model} | {method} | {'uncapped veth' if cap == 'none' else cap} | "
              f"{step:.2f} ms | {compute:.2f} ms | {step / compute:.2f} | {sent / 1e6:.4f} MB | "
              f"{counted / 1e6:.4f} MB | {'-' if wire is None else f'{wire:.2f} ms'} |")


if __name__ == "__main__":
    main()
