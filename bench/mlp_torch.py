#!/usr/bin/python3
"""PyTorch peer of examples' MLP benchmark: 784-512-ReLU-10 on Fashion-MNIST,
data parallel over N gloo processes on loopback; prints one JSON line.

Run with Debian's /usr/bin/python3 (python3-torch). Every rank takes its
balanced shard of each global batch (runtime/Shape.h: the first
batch % N ranks get one more row), and the loss is scaled so that DDP's
gradient average equals the gradient of the global-batch mean loss.
"""
import argparse
import gzip
import json
import os
import resource
import socket
import struct
import sys
import time

import numpy as np

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


def load_fashion_mnist(data_dir):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), IMAGES_MAGIC,
                      (28, 28)).reshape(-1, 784)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} images but {len(labels)} labels")
    if labels.max() >= 10:
        raise DataError(f"{data_dir}: label {int(labels.max())} out of range 0..9")
    return images, labels.astype(np.int64)


def balanced_chunk(total, parts, index):
    """Same rule as runtime/Shape.cpp balancedChunk: (begin, size)."""
    base, extra = divmod(total, parts)
    return index * base + min(index, extra), base + (1 if index < extra else 0)


def matmul_flops_per_step(batch):
    # forward: both layers; backward: dW and dX for fc2, dW only for fc1.
    return 2 * batch * (2 * 784 * 512 + 3 * 512 * 10)


def worker(rank, args, port):
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)

    images, labels = load_fashion_mnist(args.data_dir)
    n = len(labels)
    g = args.batch
    batches_per_epoch = n // g  # drop the last partial batch
    begin, size = balanced_chunk(g, args.ranks, rank)

    torch.manual_seed(args.seed)  # same initial weights on every rank
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)

    perm_epoch, perm = -1, None
    last_sum = None
    dist.barrier()
    start = None
    for step in range(args.steps):
        if step == args.warmup:
            dist.barrier()
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
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    dist.all_reduce(last_sum)
    rss = [None] * args.ranks
    dist.all_gather_object(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    if rank == 0:
        measured = args.steps - args.warmup
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
            "peak_rss_mb_per_rank": [round(r, 1) for r in rss],
            "final_loss": round(last_sum.item() / g, 6),
            "matmul_flop_per_step": flops,
            "gflop_per_s": round(flops / step_s / 1e9, 3),
            "torch_version": torch.__version__,
        }
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


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=None,
                   help="steps left out of the timing (default: min(10, steps // 5))")
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--json-out", help="also write the JSON line to this file")
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = min(10, args.steps // 5)
    if args.ranks < 1 or args.threads < 1 or args.batch < args.ranks:
        p.error("need ranks >= 1, threads >= 1 and batch >= ranks")
    if not 0 <= args.warmup < args.steps:
        p.error(f"need 0 <= warmup < steps (warmup {args.warmup}, steps {args.steps})")
    try:
        # Checked once here so bad data is one clear line, not N tracebacks.
        images, _ = load_fashion_mnist(args.data_dir)
    except DataError as e:
        sys.exit(f"mlp_torch.py: {e}")
    if len(images) < args.batch:
        sys.exit(f"mlp_torch.py: {len(images)} samples, fewer than one batch of {args.batch}")
    del images

    # torch.set_num_threads does not reach OpenBLAS, which would otherwise run
    # every GEMM on all cores: pin both before the ranks import torch, so
    # "T threads" means T threads on both sides of the comparison.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(args, free_port()), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
