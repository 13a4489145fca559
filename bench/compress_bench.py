#!/usr/bin/python3
"""Compressed gradient exchange side by side: sbpflow's --compress codecs
against PyTorch's DDP communication hooks (bench/mlp_torch.py and
bench/gpt_torch.py --ddp-hook), for the MLP and the char GPT on 2 ranks over
loopback; prints a Markdown table per model.

Quality is the MLP's test accuracy after training and the GPT's validation
loss (gpt_char --eval-every with N = --steps). "sent" is per rank per train
step, warm-up steps included (sbpflow's --bench-json rule): for sbpflow the
payload its communicators counted, for PyTorch the TCP payload its sockets
sent (gloo's 144-byte framing per message included). "÷ dense" divides it by
the model's f32 gradient bytes, what a 2-rank ring all-reduce sends per rank.
Both sides get the same --seed. The GPT's start from the same weights
(PyTorch loads gpt_char's initial checkpoint) and train on the same batches;
the MLP's initialise and shuffle each with their own generators.

usage: /usr/bin/python3 bench/compress_bench.py [--models mlp,gpt]
           [--codecs none,powersgd:4,dgc:0.001] [--hooks none,fp16,powersgd:4]
           [--steps 60 | --epochs E] [--warmup 10] [--seed 1] [--build DIR] [--out DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gpt_torch import build_model  # noqa: E402
from fortunes_batches import DEFAULT_DIR, FortunesText  # noqa: E402

RANKS = 2
MLP_PARAMETERS = 784 * 512 + 512 + 512 * 10 + 10


def gpt_parameters(args):
    vocab = len(FortunesText(DEFAULT_DIR, train=True, seed=args.seed, context=64).vocab)
    return sum(q.numel() for q in build_model(vocab, 4, 4, 128, 64).parameters())


def run(name, command, out):
    """Runs `command` with its output in OUT/NAME.log; the JSON line it wrote to
    OUT/NAME.json, or None (and the log's tail on stderr) if it failed."""
    print(f"== {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    log = os.path.join(out, name + ".log")
    with open(log, "w") as f:
        rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
    path = os.path.join(out, name + ".json")
    if rc == 0 and os.path.exists(path):
        with open(path) as f:
            return json.loads(f.read())
    with open(log) as f:
        tail = f.read().splitlines()[-5:]
    print(f"== {name}: failed (exit {rc}), its row is left empty; its log ends:\n  "
          + "\n  ".join(tail), file=sys.stderr, flush=True)
    return None


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def row(system, codec, report, quality_key, dense_bytes):
    """A table row: sbpflow's bench JSON has per-rank byte counts, PyTorch's
    the mean over ranks (sent_bytes_per_train_step: the same rule)."""
    if report is None:
        return f"| {system} | {codec} | failed | | | |"
    quality = report.get(quality_key) or []
    quality = f"{quality[-1]:.4f}" if quality else "–"
    if report["framework"] == "sbpflow":
        sent = mean(report["sent_bytes_per_step"])
    else:
        sent = report["sent_bytes_per_train_step"]
    return (f"| {system} | {codec} | {quality} | {sent:,.0f} | {sent / dense_bytes:.4f} | "
            f"{report['step_ms']:.2f} ms |")


def table(title, quality_name, quality_key, dense_bytes, rows):
    lines = [f"### {title}", "",
             f"| system | codec | {quality_name} | sent bytes per step | ÷ dense | step time |",
             "|---|---|---|---|---|---|"]
    lines += [row(*r, quality_key, dense_bytes) for r in rows]
    lines.append("")
    lines.append(f"dense: {dense_bytes:,} bytes of f32 gradient per rank per step.")
    # The warm-up's dense steps weigh on short runs: PyTorch also measures
    # the steps after the timing's warm-up (none of PowerSGD's, when the two
    # warm-ups agree).
    timed = [f"{codec} {r['sent_bytes_per_step']:,.0f}" for system, codec, r in rows
             if system == "pytorch" and r is not None]
    if timed:
        warmup = next(r["warmup"] for system, _, r in rows if system == "pytorch" and r)
        lines.append(f"PyTorch's bytes per step after the first {warmup} steps: "
                     + ", ".join(timed) + ".")
    return "\n".join(lines)


def bench_mlp(args, out):
    ours = os.path.join(args.build, "bin", "mlp_fashion_mnist")
    length_ours = (["--epochs", str(args.epochs)] if args.epochs
                   else ["--epochs", "1", "--max-steps", str(args.steps)])
    length_torch = ["--epochs", str(args.epochs)] if args.epochs else ["--steps", str(args.steps)]
    rows = []
    for spec in args.codecs if os.access(ours, os.X_OK) else []:
        name = "mlp.sbpflow." + spec.replace(":", "_")
        command = [ours, "--local", str(RANKS), "--threads", "1", "--seed", str(args.seed),
                   *length_ours, "--bench-json", os.path.join(out, name + ".json")]
        if spec != "none":  # the same dense warm-up as PyTorch's start_powerSGD_iter
            command += ["--compress", spec, "--compress-warmup", str(args.warmup)]
        rows.append(("sbpflow", spec, run(name, command, out)))
    if not os.access(ours, os.X_OK):
        print(f"== sbpflow: skipped, {ours} not built", file=sys.stderr)
    for hook in args.hooks:
        name = "mlp.pytorch." + hook.replace(":", "_")
        command = [args.python, os.path.join(HERE, "mlp_torch.py"), "--ranks", str(RANKS),
                   "--threads", "1", "--seed", str(args.seed), *length_torch,
                   "--ddp-hook", hook, "--powersgd-warmup", str(args.warmup),
                   "--json-out", os.path.join(out, name + ".json")]
        rows.append(("pytorch", hook, run(name, command, out)))
    length = (f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}" if args.epochs
              else f"{args.steps} steps")
    return table(f"MLP 784-512-10, batch 256, {RANKS} ranks, {length}", "test accuracy",
                 "test_accuracy", 4 * MLP_PARAMETERS, rows)


def gpt_initial_checkpoint(ours, seed, out):
    """OUT/gpt.init: gpt_char's (`ours`) initial weights for `seed`, which
    bench/gpt_torch.py --checkpoint loads; exits with one line if it fails."""
    caller = os.path.basename(sys.argv[0])
    if not os.access(ours, os.X_OK):
        sys.exit(f"{caller}: {ours} not built (the GPT's PyTorch peer starts from "
                 "its initial weights)")
    init = os.path.join(out, "gpt.init")
    print(f"== gpt: initial weights -> {init}", file=sys.stderr)
    with open(os.path.join(out, "gpt.init.log"), "w") as f:
        if subprocess.run([ours, "--seed", str(seed), "--init-checkpoint", init],
                          stdout=f, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"{caller}: gpt_char --init-checkpoint failed, see "
                     f"{os.path.join(out, 'gpt.init.log')}")
    return init


def bench_gpt(args, out):
    ours = os.path.join(args.build, "bin", "gpt_char")
    init = gpt_initial_checkpoint(ours, args.seed, out)
    # One validation after the last step. The GPT trains --steps steps also
    # when the MLP trains --epochs (gpt_char counts in steps).
    length = ["--steps", str(args.steps), "--eval-every", str(args.steps)]
    rows = []
    for spec in args.codecs:
        name = "gpt.sbpflow." + spec.replace(":", "_")
        # Without --resume: a job's variables start from the seed alone, so
        # they equal the initial checkpoint PyTorch loads.
        command = [ours, "--dp", str(RANKS), "--threads", "1", "--seed", str(args.seed),
                   *length, "--bench-json", os.path.join(out, name + ".json")]
        if spec != "none":
            command += ["--compress", spec, "--compress-warmup", str(args.warmup)]
        rows.append(("sbpflow", spec, run(name, command, out)))
    for hook in args.hooks:
        name = "gpt.pytorch." + hook.replace(":", "_")
        command = [args.python, os.path.join(HERE, "gpt_torch.py"), "--ranks", str(RANKS),
                   "--threads", "1", "--seed", str(args.seed), *length, "--checkpoint", init,
                   "--ddp-hook", hook, "--powersgd-warmup", str(args.warmup),
                   "--json-out", os.path.join(out, name + ".json")]
        rows.append(("pytorch", hook, run(name, command, out)))
    return table(f"char GPT (4 layers, width 128), batch 12, {RANKS} ranks, {args.steps} steps",
                 "validation loss", "eval_loss", 4 * gpt_parameters(args), rows)


def names(text):
    return [t for t in text.split(",") if t]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--models", type=names, default=["mlp", "gpt"], help="mlp, gpt or both")
    p.add_argument("--codecs", type=names, default=["none", "powersgd:4", "dgc:0.001"],
                   help="sbpflow --compress specs (none, topk:D, dgc:D, randomk:D, qsgd:BITS, "
                   "sign, powersgd:RANK, topk2bit:D, lgreco, auto); none passes no --compress")
    p.add_argument("--hooks", type=names, default=["none", "fp16", "powersgd:4"],
                   help="PyTorch --ddp-hook values")
    p.add_argument("--steps", type=int, default=60,
                   help="train steps (the GPT's always; the MLP's without --epochs)")
    p.add_argument("--epochs", type=int, default=None,
                   help="the MLP trains E epochs (234 steps each) instead of --steps")
    p.add_argument("--warmup", type=int, default=10,
                   help="PyTorch's --powersgd-warmup: plain all-reduce steps before PowerSGD "
                   "(match sbpflow's codecs' warm-up)")
    p.add_argument("--seed", type=int, default=1, help="both sides' --seed")
    p.add_argument("--build", default=os.path.realpath(os.path.join(HERE, "..", "build")))
    p.add_argument("--python", default="/usr/bin/python3", help="Debian's python3-torch")
    p.add_argument("--out", help="keep every run's log and JSON here (default: a temporary "
                   "folder, removed)")
    args = p.parse_args()
    if args.steps < 1 or (args.epochs is not None and args.epochs < 1):
        p.error("--steps and --epochs must be at least 1")
    unknown = set(args.models) - {"mlp", "gpt"}
    if unknown or not args.models:
        p.error(f"--models takes mlp and gpt, got {','.join(args.models)}")
    if args.warmup < 2:
        p.error(f"--warmup must be at least 2 (torch's start_powerSGD_iter), got {args.warmup}")

    out = args.out or tempfile.mkdtemp(prefix="compress_bench.")
    os.makedirs(out, exist_ok=True)
    try:
        tables = []
        if "mlp" in args.models:
            tables.append(bench_mlp(args, out))
        if "gpt" in args.models:
            tables.append(bench_gpt(args, out))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
