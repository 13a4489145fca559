#!/usr/bin/python3
"""One replica at half speed: the char GPT on 2 replicas (gpt_char --dp 2)
with rank 1 slowed by the straggler harness (--slow-rank 1 --slow-step-ms
MS, MS being the step time of an unslowed run, measured first, so that rank
1 takes two steps' time for each), under each --sync of --syncs; prints one
Markdown table.

Every run trains the same tokens (--steps steps of the global batch: under
A-EDiT's timed rounds a budget of 2 x steps replica steps, which the faster
replica takes more of) and validates every --eval-every steps of them. The
quality bar is the worst final validation loss of the runs (so that every
run reaches it); "time to it" is the train wall time (evaluations excluded)
until the first validation at or below it, from --bench-json's eval_loss and
eval_at_s, and "÷ ddp" compares it with synchronous data parallelism's.

usage: /usr/bin/python3 bench/straggler_bench.py [--syncs ddp,edit:10,aedit:0.8]
           [--steps 1000] [--eval-every 100] [--extra 'aedit:0.8=--aedit-min-steps 20']
           [--build DIR] [--out DIR]
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compress_bench import run as run_logged  # noqa: E402


def run(build, out, name, args):
    """gpt_char on 2 replicas with `args`; its --bench-json report (exits if
    the run failed: compress_bench.run printed the log's tail)."""
    report = run_logged(name, [os.path.join(build, "bin", "gpt_char"), "--dp", "2", "--bench-json",
                               os.path.join(out, name + ".json")] + args, out)
    if report is None:
        sys.exit(f"gpt_char {' '.join(args)} failed; its log is {out}/{name}.log")
    return report


def time_to(report, target):
    for loss, at in zip(report["eval_loss"], report["eval_at_s"]):
        if loss <= target:
            return at
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--syncs", default="ddp,edit:10,aedit:0.8")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--extra", action="append", default=[],
                   help="SPEC=FLAGS: more gpt_char flags for the run of --sync SPEC")
    p.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    p.add_argument("--out", default=tempfile.mkdtemp(prefix="straggler_"))
    args = p.parse_args()
    extra = dict(e.split("=", 1) for e in args.extra)
    os.makedirs(args.out, exist_ok=True)

    probe = run(args.build, args.out, "probe", ["--steps", "60"])
    delay = probe["step_ms"]
    rows = []
    for spec in args.syncs.split(","):
        flags = ["--sync", spec.split("+")[0], "--steps", str(args.steps), "--eval-every",
                 str(args.eval_every), "--slow-rank", "1", "--slow-step-ms", f"{delay:.1f}"]
        flags += extra.get(spec, "").split()
        name = spec.replace(":", "_").replace("+", "_")
        rows.append((spec, extra.get(spec, ""), run(args.build, args.out, name, flags)))
    target = max(r["eval_loss"][-1] for _, _, r in rows)
    ddp = next((time_to(r, target) for s, _, r in rows if s == "ddp"), None)
    print(f"GPT, 2 replicas, rank 1 at half speed (sleeps {delay:.1f} ms, the unslowed step, "
          f"after each step); {args.steps} steps of the global batch; bar: validation loss "
          f"{target:.4f}\n")
    print("| sync | flags | steps per rank | final val loss | train wall s | time to the bar s | "
          "÷ ddp |")
    print("|---|---|---|---|---|---|---|")
    for spec, flags, r in rows:
        t = time_to(r, target)
        ratio = f"{t / ddp:.2f}" if t is not None and ddp else "–"
        print(f"| {spec.split('+')[0]} | {flags or '–'} | "
              f"{' / '.join(str(int(s)) for s in r['steps_per_rank'])} | "
              f"{r['eval_loss'][-1]:.4f} | {r['eval_at_s'][-1]:.1f} | "
              f"{'–' if t is None else f'{t:.1f}'} | {ratio} |")
    print(f"\nreports: {args.out}")


if __name__ == "__main__":
    main()
