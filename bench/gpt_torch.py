#!/usr/bin/python3
"""PyTorch peer of examples/gpt_char.cpp: the same character-level GPT, started
from the weights of an sbpflow checkpoint, trained on the same fortunes batches
with the same AdamW, clipping and threads; prints the loss of every step, the
median step time and one JSON line.

Run with Debian's /usr/bin/python3 (python3-torch 1.13). The model is
nanoGPT's with separate q/k/v projections, exact GELU, LayerNorm eps 1e-5, an
untied lm_head and no dropout (the comparison runs both sides at dropout 0).
Parameter names are those of examples/gpt_char.cpp, so the checkpoint loads
by name. AdamW decays only parameters of rank >= 2, as sbpflow's autodiff.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fortunes_batches import DEFAULT_DIR, FortunesText  # noqa: E402

SHARD_MAGIC = b"SBPCKPT2"
SHARD_FORMAT = 2
DTYPES = {"f32": ("<f4", 0), "i32": ("<i4", 1)}


class CheckpointError(Exception):
    pass


def read_shard(path, name, dtype, region, generation, size, crc):
    """The payload of one shard file as a numpy array of the region's shape;
    the header must agree with the index (runtime/checkpoint/Checkpoint.h:
    shard format 2, a CRC-32 per 64 KiB payload block and one over the
    header)."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path} (tensor '{name}'): cannot read: {e}")

    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(data):
            raise CheckpointError(f"{path} (tensor '{name}'): truncated in the {what}")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    magic = take(8, "magic")
    if magic != SHARD_MAGIC:
        raise CheckpointError(f"{path} (tensor '{name}'): not a shard file of format "
                              f"{SHARD_FORMAT} (magic {magic!r})")
    (stored_generation,) = struct.unpack("<Q", take(8, "generation"))
    (name_len,) = struct.unpack("<I", take(4, "name length"))
    stored_name = take(name_len, "name").decode("utf-8", "replace")
    (stored_dtype,) = struct.unpack("<B", take(1, "dtype"))
    (rank,) = struct.unpack("<I", take(4, "rank"))
    stored_region = [list(struct.unpack("<qq", take(16, "region"))) for _ in range(rank)]
    (payload_bytes,) = struct.unpack("<Q", take(8, "payload size"))
    block_bytes, blocks = struct.unpack("<II", take(8, "block size and count"))
    if block_bytes == 0 or blocks != (payload_bytes + block_bytes - 1) // block_bytes:
        raise CheckpointError(f"{path} (tensor '{name}'): corrupt header ({blocks} blocks of "
                              f"{block_bytes} bytes for {payload_bytes} payload bytes)")
    block_crcs = struct.unpack(f"<{blocks}I", take(4 * blocks, "block CRCs"))
    header_crc = zlib.crc32(data[:pos]) & 0xFFFFFFFF
    (stored_header_crc,) = struct.unpack("<I", take(4, "header CRC"))
    if header_crc != stored_header_crc:
        raise CheckpointError(f"{path} (tensor '{name}'): corrupt header (CRC mismatch)")
    if stored_name != name:
        raise CheckpointError(f"{path}: holds tensor '{stored_name}', the index says '{name}'")
    if stored_dtype != DTYPES[dtype][1]:
        raise CheckpointError(f"{path} (tensor '{name}'): dtype code {stored_dtype}, "
                              f"the index says {dtype}")
    if stored_region != [list(r) for r in region]:
        raise CheckpointError(f"{path} (tensor '{name}'): region {stored_region}, "
                              f"the index says {region}")
    if stored_generation != generation:
        raise CheckpointError(f"{path} (tensor '{name}'): written by save "
                              f"{stored_generation:016x}, the index is of save {generation:016x}")
    if len(data) != size or stored_header_crc != crc:
        raise CheckpointError(f"{path} (tensor '{name}'): not the file the index recorded")
    count = math.prod(n for _, n in region)
    if payload_bytes != 4 * count or len(data) - pos != payload_bytes:
        raise CheckpointError(f"{path} (tensor '{name}'): payload of {len(data) - pos} bytes "
                              f"(header {payload_bytes}), the region needs {4 * count}")
    payload = data[pos:]
    for b, block_crc in enumerate(block_crcs):
        if zlib.crc32(payload[b * block_bytes:(b + 1) * block_bytes]) & 0xFFFFFFFF != block_crc:
            raise CheckpointError(f"{path} (tensor '{name}'): CRC mismatch in payload block {b} "
                                  "(corrupt shard)")
    shape = [n for _, n in region]
    return np.frombuffer(payload, dtype=DTYPES[dtype][0]).reshape(shape)


def load_checkpoint(directory):
    """{name: numpy array of the global shape}, each tensor assembled from its
    shards (whatever [dp, tp] layout wrote it)."""
    import numpy as np

    index_path = os.path.join(directory, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except OSError as e:
        raise CheckpointError(f"{index_path}: cannot read: {e}")
    except ValueError as e:
        raise CheckpointError(f"{index_path}: not JSON: {e}")
    if index.get("format") != "sbpflow-checkpoint":
        raise CheckpointError(f"{index_path}: not an sbpflow checkpoint index")
    if index.get("shard_format") != SHARD_FORMAT:
        raise CheckpointError(f"{index_path}: shard format {index.get('shard_format', 1)}, "
                              f"this reader reads {SHARD_FORMAT}")
    generation = int(index["generation"], 16)
    tensors = {}
    for t in index.get("tensors", []):
        name, dtype, shape = t["name"], t["dtype"], list(t["shape"])
        if dtype not in DTYPES:
            raise CheckpointError(f"{index_path}: tensor '{name}' has unknown dtype '{dtype}'")
        full = np.zeros(shape, dtype=DTYPES[dtype][0])
        covered = 0
        for shard in t["shards"]:
            region = [tuple(r) for r in shard["region"]]
            if len(region) != len(shape) or any(
                    b < 0 or s < 0 or b + s > n for (b, s), n in zip(region, shape)):
                raise CheckpointError(f"{index_path}: tensor '{name}' {shape}: shard region "
                                      f"{region} lies outside it")
            part = read_shard(os.path.join(directory, shard["file"]), name, dtype, region,
                              generation, shard["bytes"], shard["crc"])
            full[tuple(slice(b, b + s) for b, s in region)] = part
            covered += part.size
        if covered != full.size:
            raise CheckpointError(f"{index_path}: the shards of '{name}' cover {covered} of "
                                  f"{full.size} elements")
        tensors[name] = full
    return tensors


def build_model(vocab, n_layer, n_head, n_embd, block_size):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(n_embd, n_embd)
            self.k = nn.Linear(n_embd, n_embd)
            self.v = nn.Linear(n_embd, n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):
            B, T, C = x.shape
            d = C // n_head

            def heads(t):
                return t.view(B, T, n_head, d).transpose(1, 2)

            q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(n_embd, 4 * n_embd)
            self.proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))  # exact (erf) GELU

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
            self.mlp = Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, n_embd)
            self.wpe = nn.Embedding(block_size, n_embd)
            self.h = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
            self.lm_head = nn.Linear(n_embd, vocab, bias=False)

        def forward(self, tokens):
            # The whole position table: sbpflow adds wpe [T, C] as a bias.
            x = self.wte(tokens) + self.wpe.weight[:tokens.shape[1]]
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return Gpt()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="sbpflow checkpoint with the initial weights "
                   "(without it: PyTorch's initialisation, for timing only)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=None,
                   help="steps left out of the mean step time (default: min(10, steps // 5), "
                        "the rule of sbpflow's driver)")
    p.add_argument("--batch", type=int, default=12, help="global batch (sequences)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1, help="data seed (gpt_char --seed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (fp32, no TF32)")
    p.add_argument("--bf16", action="store_true",
                   help="torch.autocast(dtype=bfloat16): sbpflow's --bf16 policy (bf16 "
                   "matmuls and attention, f32 weights, layer norm, softmax and loss)")
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--json-out", help="also write the JSON line to this file")
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = min(10, args.steps // 5)
    if args.steps < 1 or args.threads < 1 or args.batch < 1:
        p.error("need steps, threads and batch >= 1")
    if not 0 <= args.warmup < args.steps:
        p.error(f"need 0 <= warmup < steps (warmup {args.warmup}, steps {args.steps})")
    if args.n_embd % args.n_head:
        p.error(f"--n-head {args.n_head} does not divide --n-embd {args.n_embd}")

    # torch.set_num_threads does not reach OpenBLAS: pin both before torch
    # loads, so "T threads" means T threads on both sides.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # Full fp32 products on a GPU, as sbpflow's fp32 GEMMs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        text = FortunesText(args.data_dir, train=True, seed=args.seed, context=args.block_size)
    except (OSError, ValueError) as e:
        sys.exit(f"gpt_torch.py: {e}")
    vocab = len(text.vocab)
    model = build_model(vocab, args.n_layer, args.n_head, args.n_embd, args.block_size)
    weights = {}
    if args.checkpoint:
        try:
            weights = load_checkpoint(args.checkpoint)
        except CheckpointError as e:
            sys.exit(f"gpt_torch.py: checkpoint: {e}")
    state = {}
    for name, param in model.state_dict().items() if args.checkpoint else ():
        if name not in weights:
            sys.exit(f"gpt_torch.py: checkpoint {args.checkpoint} has no tensor '{name}' "
                     f"(model and checkpoint configurations differ?)")
        if list(weights[name].shape) != list(param.shape):
            sys.exit(f"gpt_torch.py: checkpoint tensor '{name}' is {list(weights[name].shape)}, "
                     f"the model needs {list(param.shape)}")
        state[name] = torch.from_numpy(weights[name].astype(np.float32))
    if args.checkpoint:
        model.load_state_dict(state)
    model.to(device)

    params = list(model.parameters())
    decay = [q for q in params if q.dim() >= 2]
    no_decay = [q for q in params if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)

    losses, times = [], []
    for step in range(args.steps):
        # Epoch 0, global batch `step`: what sbpflow's driver feeds step `step`.
        tokens, targets = text.batch(epoch=0, batch_index=step, global_batch=args.batch)
        x = torch.tensor(tokens, dtype=torch.long, device=device)
        y = torch.tensor(targets, dtype=torch.long, device=device)
        start = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1), ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels, not just their launches
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        print(f"step {step + 1} loss {losses[-1]:.6f} ms {times[-1] * 1e3:.2f}", flush=True)

    measured = times[args.warmup:]
    result = {
        "framework": "pytorch",
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "global_batch": args.batch,
        "step_ms": round(sum(measured) / len(measured) * 1e3, 4),
        "median_step_ms": round(statistics.median(measured) * 1e3, 4),
        "losses": [round(v, 7) for v in losses],
        "final_loss": round(losses[-1], 7),
        "torch_version": torch.__version__,
        "device": args.device,
        "bf16": args.bf16,
        "parameters": sum(q.numel() for q in params),
    }
    print(f"median step {result['median_step_ms']:.2f} ms over steps {args.warmup + 1}.."
          f"{args.steps}", flush=True)
    line = json.dumps(result)
    print(line, flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
