#!/usr/bin/python3
"""Local SGD side by side: sbpflow's gpt_char --sync diloco:H against PyTorch
1.13's post-local SGD (bench/gpt_torch.py --local-sgd-period H), with
synchronous data parallelism on both sides for reference, for the char GPT on
2 gloo ranks over loopback; prints one Markdown table.

The rows, per H of --periods: sbpflow's `--sync diloco:H --outer-lr 1
--outer-momentum 0` (the outer step sets every replica to the replicas' mean:
model averaging every H steps), PyTorch's DDP with post_localSGD_hook (local
from the first step, start_localSGD_iter 0) and PostLocalSGDOptimizer over a
PeriodicModelAverager (period H, averages after steps H, 2H, ... as sbpflow's
rounds: see gpt_torch.py's post_local_sgd_optimizer), and sbpflow's
`--sync diloco:H` with DiLoCo's outer Nesterov step (lr 0.7, momentum 0.9),
which has no PyTorch peer: its time is compared with post-local SGD's, whose
communication it shares. First `--sync ddp` against DDP (--no-ddp: not).

Each rank keeps its own AdamW (lr 1e-3, betas 0.9 and 0.99, decay 0.1 on
matrices, its own gradient clipped to norm 1) and trains on its half of the
same global batches (--batch 12: 6 rows a rank) from the same weights
(PyTorch loads gpt_char's initial checkpoint). Quality is the validation loss
after --steps steps (a multiple of every H, so both sides evaluate the
average). "bytes" is per rank per train step over all of them, warm-up
included: for sbpflow what its communicators sent (--bench-json), for PyTorch
the TCP payload its sockets sent (compress_bench.py's rule); "÷ dense" is the
f32 gradient bytes a 2-rank ring all-reduce sends per rank each step over
that, H for model averaging at best. Step time is the mean after 10 warm-up
steps, end to end: sbpflow's driver's step_ms, PyTorch's wall_step_ms (the
slowest rank from one step's end to the next; its step_ms, the slowest rank
per step, overstates local steps, where the ranks do not wait for each other,
and is listed under the table).

usage: /usr/bin/python3 bench/local_sgd_bench.py [--periods 10,50] [--steps 300]
           [--seed 1] [--build DIR] [--out DIR]
"""
import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compress_bench import (RANKS, gpt_initial_checkpoint, gpt_parameters, mean,  # noqa: E402
                            names, run)


def averaging(H):
    return f"diloco:{H}, outer lr 1, momentum 0 (model averaging)"


def nesterov(H):
    return f"diloco:{H} (outer Nesterov, lr 0.7, momentum 0.9)"


def post_local_sgd(H):
    return f"PostLocalSGDOptimizer, PeriodicModelAverager period {H}"


def step_ms(report):
    return report["step_ms"] if report["framework"] == "sbpflow" else report["wall_step_ms"]


def row(side, method, report, peer, dense_bytes):
    """A table row; `peer` is PyTorch's report of the method compared with
    (None for PyTorch's own rows)."""
    if report is None:
        return f"| char GPT | {side} | {method} | failed | | | | |"
    loss = f"{report['eval_loss'][-1]:.4f}" if report.get("eval_loss") else "–"
    if report["framework"] == "sbpflow":
        sent = mean(report["sent_bytes_per_step"])
    else:
        sent = report["sent_bytes_per_train_step"]
    ratio = "" if peer is None else f"{step_ms(report) / step_ms(peer):.2f}" if peer else "–"
    divided = f"{dense_bytes / sent:.1f}" if sent > 0 else "∞"
    return (f"| char GPT | {side} | {method} | {loss} | {sent:,.0f} | {divided} | "
            f"{step_ms(report):.2f} ms | {ratio} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--periods", type=names, default=["10"],
                   help="H values: steps between averages (comma-separated)")
    p.add_argument("--steps", type=int, default=300,
                   help="train steps, a multiple of every H; validation after the last")
    p.add_argument("--seed", type=int, default=1, help="both sides' --seed")
    p.add_argument("--no-ddp", action="store_true", help="leave out the DDP rows")
    p.add_argument("--build", default=os.path.realpath(os.path.join(HERE, "..", "build")),
                   help="its bin/ holds gpt_char and the sbpflow-worker it starts")
    p.add_argument("--python", default="/usr/bin/python3", help="Debian's python3-torch")
    p.add_argument("--out", help="keep every run's log and JSON here (default: a temporary "
                   "folder, removed)")
    args = p.parse_args()
    try:
        periods = [int(h) for h in args.periods]
    except ValueError:
        p.error(f"--periods takes integers, got {','.join(args.periods)}")
    if args.steps < 1 or not periods or min(periods) < 1:
        p.error("--steps and every H must be at least 1")
    if any(args.steps % h for h in periods):
        p.error(f"--steps {args.steps} is not a multiple of every H in {args.periods}: the "
                "replicas would differ at the validation")

    out = args.out or tempfile.mkdtemp(prefix="local_sgd_bench.")
    os.makedirs(out, exist_ok=True)
    try:
        ours = os.path.join(args.build, "bin", "gpt_char")
        init = gpt_initial_checkpoint(ours, args.seed, out)
        common = ["--threads", "1", "--seed", str(args.seed), "--steps", str(args.steps),
                  "--eval-every", str(args.steps)]

        def sbpflow(name, sync):
            name = "gpt.sbpflow." + name
            return run(name, [ours, "--dp", str(RANKS), *common, *sync,
                              "--bench-json", os.path.join(out, name + ".json")], out)

        def pytorch(name, options):
            name = "gpt.pytorch." + name
            return run(name, [args.python, os.path.join(HERE, "gpt_torch.py"), "--ranks",
                              str(RANKS), *common, "--checkpoint", init, *options,
                              "--json-out", os.path.join(out, name + ".json")], out)

        rows = []  # (side, method, report, PyTorch's report of the method or None)
        if not args.no_ddp:
            torch_report = pytorch("ddp", [])
            rows.append(("sbpflow", "ddp", sbpflow("ddp", ["--sync", "ddp"]),
                         torch_report or False))
            rows.append(("pytorch", "DDP", torch_report, None))
        for H in periods:
            torch_report = pytorch(f"postlocalsgd_{H}", ["--local-sgd-period", str(H)])
            rows.append(("sbpflow", averaging(H),
                         sbpflow(f"diloco_{H}_average",
                                 ["--sync", f"diloco:{H}", "--outer-lr", "1",
                                  "--outer-momentum", "0"]),
                         torch_report or False))
            rows.append(("pytorch", post_local_sgd(H), torch_report, None))
            rows.append(("sbpflow", nesterov(H), sbpflow(f"diloco_{H}", ["--sync", f"diloco:{H}"]),
                         torch_report or False))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)

    dense_bytes = 4 * gpt_parameters(args)
    lines = [f"### char GPT (4 layers, width 128), batch 12, {RANKS} ranks, {args.steps} steps",
             "",
             f"| model | side | method | validation loss after {args.steps} steps | bytes per "
             "step per rank | ÷ dense | step time | ÷ PyTorch's |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [row(*r, dense_bytes) for r in rows]
    lines.append("")
    lines.append(f"dense: {dense_bytes:,} bytes of f32 gradient per rank per step; model "
                 f"averaging every H steps: {dense_bytes:,} / H at best.")
    per_step = [f"{method} {r['step_ms']:.2f} ms" for side, method, r, _ in rows
                if side == "pytorch" and r is not None]
    if per_step:
        lines.append("PyTorch's step time as the slowest rank per step (compress_bench.py's "
                     "rule): " + "; ".join(per_step) + ".")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
