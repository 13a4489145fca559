#!/usr/bin/python3
"""PyTorch peer of examples' MLP benchmark: 784-512-ReLU-10 on Fashion-MNIST,
data parallel over N gloo processes on loopback; prints one JSON line.

Run with Debian's /usr/bin/python3 (python3-torch). Every rank takes its
balanced shard of each global batch (runtime/Shape.h: the first
batch % N ranks get one more row), and the loss is scaled so that DDP's
gradient average equals the gradient of the global-batch mean loss.

--ddp-hook fp16 or powersgd:R compresses the gradient exchange with torch's
DDP communication hooks (bench/gpt_torch.py's ddp_with_hook). The bytes each
rank's sockets send are measured (gpt_torch.SentBytes), not computed. What to
expect on 2 ranks (a gloo ring all-reduce of n floats sends 4n bytes per rank
in 4 messages of 144 bytes' framing; DDP puts this model in one bucket):
  none: 4 * 407050 + 576 = 1628776 bytes a step;
  fp16: 2 * 407050 + 576 = 814676;
  powersgd:4 (after --powersgd-warmup steps of the first kind): the biases
  (522 floats) go as they are, fc1's [512, 784] gradient as P [512, 4] and
  Q [784, 4], fc2's [10, 512] as P [10, 4] and Q [512, 4] ((10 + 512) * 4 * 2
  < 5120, so it is compressed too), in three all-reduces: 4 * (522 + 2088
  + 5184) + 3 * 576 = 32904 bytes, 2.0% of none.
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

import numpy as np

from gpt_torch import (SentBytes, add_ddp_hook_options, balanced_chunk, check_ddp_hook_options,
                       ddp_hook_name, ddp_with_hook, free_port)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class DataError(Exception):
    pass


def read_idx(path, magic, sample_shape):
    """An IDX .gz file as a uint8 array [count, *sample_shape]; DataError names
    the path and what was wrong."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file")
    except (OSError, EOFError) as e:  # bad gzip, truncated stream, CRC mismatch
        raise DataError(f"{path}: cannot decompress: {e}")
    ndim = len(sample_shape) + 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, header needs {header}")
    got_magic = struct.unpack(">I", data[:4])[0]
    if got_magic != magic:
        raise DataError(f"{path}: bad magic number 0x{got_magic:08x} (need 0x{magic:08x})")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    if tuple(dims[1:]) != tuple(sample_shape):
        raise DataError(f"{path}: samples are {dims[1:]}, expected {tuple(sample_shape)}")
    need = header + int(np.prod(dims))
    if len(data) != need:
        raise DataError(f"{path}: {len(data)} bytes, header says {need}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(data_dir, train=True):
    """(images [n, 784] uint8, labels [n] int64) of the training set (60,000)
    or the test set (10,000)."""
    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), IMAGES_MAGIC,
                      (28, 28)).reshape(-1, 784)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} images but {len(labels)} labels")
    if labels.max() >= 10:
        raise DataError(f"{data_dir}: label {int(labels.max())} out of range 0..9")
    return images, labels.astype(np.int64)


def matmul_flops_per_step(batch):
    # forward: both layers; backward: dW and dX for fc2, dW only for fc1.
    return 2 * batch * (2 * 784 * 512 + 3 * 512 * 10)


def worker(rank, args, port):
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)

    images, labels = load_fashion_mnist(args.data_dir)
    test_images, test_labels = load_fashion_mnist(args.data_dir, train=False)
    n = len(labels)
    g = args.batch
    batches_per_epoch = n // g  # drop the last partial batch
    begin, size = balanced_chunk(g, args.ranks, rank)

    torch.manual_seed(args.seed)  # same initial weights on every rank
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    ddp = ddp_with_hook(model, args)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)

    def test_accuracy():
        # Every rank evaluates the whole test set (their weights are equal),
        # so evaluation sends nothing; in chunks, so that it does not raise
        # the peak memory the benchmark reports.
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_labels), 1000):
                x = torch.tensor(test_images[i:i + 1000], dtype=torch.float32).div_(255.0)
                y = torch.from_numpy(test_labels[i:i + 1000])
                correct += int((model(x).argmax(dim=1) == y).sum())
        return correct / len(test_labels)

    perm_epoch, perm = -1, None
    last_sum = None
    accuracy = []
    # Time and bytes of the train steps: all of them, and the timed ones
    # (after the warm-up); evaluations and barriers are left out.
    all_steps, timed_steps = SentBytes(), SentBytes()
    timed_s, start = 0.0, None
    dist.barrier()
    all_steps.start()
    for step in range(args.steps):
        if step == args.warmup:
            all_steps.stop()
            dist.barrier()
            all_steps.start()
            timed_steps.start()
            start = time.perf_counter()
        epoch, b = divmod(step, batches_per_epoch)
        if epoch != perm_epoch:
            perm = np.random.default_rng([args.seed, epoch]).permutation(n)
            perm_epoch = epoch
        idx = perm[b * g + begin: b * g + begin + size]
        x = torch.from_numpy(images[idx]).float().div_(255.0)
        y = torch.from_numpy(labels[idx])
        out = ddp(x)
        loss_sum = F.cross_entropy(out, y, reduction="sum")
        # DDP divides the summed gradients by N; this makes the result the
        # gradient of sum(all ranks' losses) / global batch.
        (loss_sum * (args.ranks / g)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_sum = loss_sum.detach()
        # Test accuracy after every epoch and after the last step.
        if b + 1 == batches_per_epoch or step + 1 == args.steps:
            timed = start is not None
            if timed:
                timed_s += time.perf_counter() - start
                timed_steps.stop()
            all_steps.stop()
            accuracy.append(test_accuracy())
            if step + 1 < args.steps:
                dist.barrier()  # the next step starts together on every rank
                all_steps.start()
                if timed:
                    timed_steps.start()
                    start = time.perf_counter()
    measured = args.steps - args.warmup
    elapsed = torch.tensor([timed_s], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    dist.all_reduce(last_sum)
    per_rank = [None] * args.ranks
    dist.all_gather_object(per_rank, (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        timed_steps.total / measured, all_steps.total / args.steps,
        timed_steps.retransmitted / measured))
    if rank == 0:
        step_s = elapsed.item() / measured
        flops = matmul_flops_per_step(g)
        result = {
            "framework": "pytorch",
            "ranks": args.ranks,
            "threads": args.threads,
            "steps": args.steps,
            "warmup": args.warmup,
            "global_batch": g,
            "step_ms": round(step_s * 1e3, 4),
            "peak_rss_mb_per_rank": [round(r[0], 1) for r in per_rank],
            "final_loss": round(last_sum.item() / g, 6),
            "test_accuracy": [round(a, 6) for a in accuracy],
            "ddp_hook": ddp_hook_name(args),
            # TCP payload each rank's sockets sent (gpt_torch.SentBytes:
            # gloo's 144-byte message framing included, retransmissions not),
            # mean per rank: per timed step, and per train step as sbpflow's
            # --bench-json counts them (warm-up included).
            "sent_bytes_per_step": round(sum(r[1] for r in per_rank) / args.ranks, 1),
            "sent_bytes_per_train_step": round(sum(r[2] for r in per_rank) / args.ranks, 1),
            "sent_bytes_per_step_by_rank": [round(r[1], 1) for r in per_rank],
            "retransmitted_bytes_per_step": round(sum(r[3] for r in per_rank) / args.ranks, 1),
            "matmul_flop_per_step": flops,
            "gflop_per_s": round(flops / step_s / 1e9, 3),
            "torch_version": torch.__version__,
        }
        if args.ddp_hook[0] == "powersgd":
            result["powersgd_warmup"] = args.powersgd_warmup
        line = json.dumps(result)
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(line + "\n")
    dist.barrier()
    # torch 1.13 can deadlock tearing down DDP's reducer and the gloo process
    # group at exit (a gloo worker thread waits for the GIL while holding the
    # group's mutex); everything is written, so leave without teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--steps", type=int, default=None,
                   help="train steps (default 60; with --epochs: E epochs' batches)")
    p.add_argument("--epochs", type=int, default=None,
                   help="train E epochs over the 60,000 training images (60000 // batch steps "
                   "each) instead of --steps")
    p.add_argument("--warmup", type=int, default=None,
                   help="steps left out of the timing (default: min(10, steps // 5))")
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--json-out", help="also write the JSON line to this file")
    add_ddp_hook_options(p)
    args = p.parse_args()
    check_ddp_hook_options(p, args)
    if args.steps is not None and args.epochs is not None:
        p.error("give --steps or --epochs, not both")
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.ranks < 1 or args.threads < 1 or args.batch < args.ranks:
        p.error("need ranks >= 1, threads >= 1 and batch >= ranks")
    try:
        # Checked once here so bad data is one clear line, not N tracebacks.
        images, _ = load_fashion_mnist(args.data_dir)
        load_fashion_mnist(args.data_dir, train=False)
    except DataError as e:
        sys.exit(f"mlp_torch.py: {e}")
    if len(images) < args.batch:
        sys.exit(f"mlp_torch.py: {len(images)} samples, fewer than one batch of {args.batch}")
    if args.epochs is not None:
        args.steps = args.epochs * (len(images) // args.batch)
    elif args.steps is None:
        args.steps = 60
    del images
    if args.warmup is None:
        args.warmup = min(10, args.steps // 5)
    if not 0 <= args.warmup < args.steps:
        p.error(f"need 0 <= warmup < steps (warmup {args.warmup}, steps {args.steps})")

    # torch.set_num_threads does not reach OpenBLAS, which would otherwise run
    # every GEMM on all cores: pin both before the ranks import torch, so
    # "T threads" means T threads on both sides of the comparison.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(args, free_port()), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
