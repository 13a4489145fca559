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

--ranks N trains data parallel as gpt_char --dp N: N gloo processes on
loopback under DistributedDataParallel, each on its rows of every global
batch, optionally with a --ddp-hook (fp16, powersgd:R) compressing the
gradient exchange; the JSON line then has the TCP bytes each rank sent per
step, measured on its sockets. --eval-every N adds gpt_char's validation loss.
The hook options and the byte meter are shared with bench/mlp_torch.py from
here, the file bench/gpu/pack.sh ships.

--local-sgd-period H trains the N ranks with post-local SGD instead
(gpt_char --dp N --sync diloco:H --outer-lr 1 --outer-momentum 0): DDP with
post_localSGD_hook (start_localSGD_iter = --local-sgd-start, no gradient
all-reduce after it), each rank's AdamW wrapped in PostLocalSGDOptimizer with
a PeriodicModelAverager that averages the parameters every H steps.
"""
import argparse
import json
import math
import os
import socket
import statistics
import struct
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fortunes_batches import DEFAULT_DIR, FortunesText  # noqa: E402

# Offsets in the kernel's struct tcp_info (linux/tcp.h; the struct only grows
# at its end): tcpi_bytes_acked (since 4.1), tcpi_bytes_sent and
# tcpi_bytes_retrans (since 4.19). This machine's 6.18 kernel returns 256 bytes.
TCPI_BYTES_ACKED = 120
TCPI_BYTES_SENT = 200
TCPI_BYTES_RETRANS = 208
TCP_INFO_LEN = 256

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


def tcp_sent_by_socket():
    """{socket: (payload bytes sent, of which retransmitted)} over the TCP
    sockets open in this process (gloo's pairs, the rendezvous store), from
    getsockopt(TCP_INFO) on every socket in /proc/self/fd: tcpi_bytes_sent and
    tcpi_bytes_retrans, or tcpi_bytes_acked and 0 on a kernel whose tcp_info
    predates them. TCP payload only: gloo's framing of each message (144 bytes)
    is in it, TCP/IP headers are not."""
    sent = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")  # "socket:[INODE]"
        except OSError:
            continue  # closed since the listing, or the listing's own fd
        if not target.startswith("socket:"):
            continue
        # A duplicate shares the socket: closing it leaves the original fd
        # and its connection alone.
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
            except OSError:
                continue  # not TCP (a Unix or netlink socket)
        if len(info) >= TCPI_BYTES_RETRANS + 8:
            sent[target] = struct.unpack_from("<QQ", info, TCPI_BYTES_SENT)
        elif len(info) >= TCPI_BYTES_ACKED + 8:
            sent[target] = (struct.unpack_from("<Q", info, TCPI_BYTES_ACKED)[0], 0)
    return sent


class SentBytes:
    """TCP bytes this process sent over the spans between start() and stop()
    (tcp_sent_by_socket), so that evaluations and barriers between spans are
    left out: `total` counts each byte once, `retransmitted` the copies TCP
    sent again (on this busy 2-core machine even loopback sees spurious
    retransmissions, a few per cent of the bytes in some runs and none in
    others). A socket closed within a span loses its bytes (gloo and the store
    keep theirs open for the whole job)."""

    def __init__(self):
        self.total = 0
        self.retransmitted = 0
        self._mark = None

    @property
    def running(self):
        return self._mark is not None

    def start(self):
        self._mark = tcp_sent_by_socket()

    def stop(self):
        now = tcp_sent_by_socket()
        for s, (sent, again) in now.items():
            sent_before, again_before = self._mark.get(s, (0, 0))
            self.total += (sent - again) - (sent_before - again_before)
            self.retransmitted += again - again_before
        self._mark = None


def ddp_hook(text):
    """--ddp-hook: ("none" | "fp16" | "powersgd", rank)."""
    name, _, rank = text.partition(":")
    if name in ("none", "fp16") and not rank:
        return name, 0
    if name == "powersgd" and rank.isdigit() and int(rank) >= 1:
        return name, int(rank)
    raise argparse.ArgumentTypeError(f"'{text}' is not none, fp16 or powersgd:RANK (RANK >= 1)")


def add_ddp_hook_options(p):
    p.add_argument("--ddp-hook", type=ddp_hook, default=("none", 0), metavar="none|fp16|powersgd:R",
                   help="DDP communication hook (torch.distributed.algorithms.ddp_comm_hooks): "
                   "none (DDP's own all-reduce), fp16 (fp16_compress_hook) or powersgd:R "
                   "(powerSGD_hook, matrix rank R, error feedback, warm start)")
    p.add_argument("--powersgd-warmup", type=int, default=10,
                   help="steps of plain all-reduce before PowerSGD starts (start_powerSGD_iter)")
    p.add_argument("--powersgd-min-compression-rate", type=float, default=2.0,
                   help="PowerSGD compresses an [n, m] gradient only where (n + m) * R times "
                   "this is below n * m (torch's default 2)")


def check_ddp_hook_options(p, args):
    # PowerSGDState raises below 2 with error feedback or warm start: DDP
    # rebuilds its buckets after the first step, which would change the
    # shapes of the error and of the warm-started P and Q.
    if args.ddp_hook[0] == "powersgd" and args.powersgd_warmup < 2:
        p.error(f"--powersgd-warmup must be at least 2 (torch's start_powerSGD_iter), "
                f"got {args.powersgd_warmup}")


def ddp_hook_name(args):
    name, rank = args.ddp_hook
    return f"{name}:{rank}" if name == "powersgd" else name


def ddp_with_hook(model, args, **options):
    """DistributedDataParallel over `model` (options passed on) with --ddp-hook
    registered."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    name, rank = args.ddp_hook
    if name != "powersgd":
        ddp = DDP(model, **options)
        if name == "fp16":
            ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return ddp
    # One bucket for the whole model. powerSGD_hook starts a bucket's P and Q
    # all-reduces in callbacks on gloo's threads: with two buckets the ranks
    # can start them in different orders, and gloo then pairs messages of
    # different collectives (it aborts: "op.preamble.length <= op.nbytes").
    # DDP reads the first bucket's cap when it is built.
    whole = sum(q.numel() * q.element_size() for q in model.parameters())
    first = dist._DEFAULT_FIRST_BUCKET_BYTES
    dist._DEFAULT_FIRST_BUCKET_BYTES = whole
    try:
        ddp = DDP(model, bucket_cap_mb=whole / 2**20 + 1, **options)
    finally:
        dist._DEFAULT_FIRST_BUCKET_BYTES = first
    state = powerSGD_hook.PowerSGDState(
        process_group=None, matrix_approximation_rank=rank,
        start_powerSGD_iter=args.powersgd_warmup,
        min_compression_rate=args.powersgd_min_compression_rate,
        use_error_feedback=True, warm_start=True, orthogonalization_epsilon=0,
        random_seed=args.seed)  # the seed of the first Qs, the same on every rank
    ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    return ddp


def add_local_sgd_options(p):
    p.add_argument("--local-sgd-period", type=int, default=0, metavar="H",
                   help="post-local SGD: each rank steps its own AdamW on its own gradients "
                   "and the ranks average their parameters every H steps (0: DDP every step)")
    p.add_argument("--local-sgd-start", type=int, default=0, metavar="S",
                   help="post_localSGD_hook's start_localSGD_iter: DDP all-reduces the "
                   "gradients of the first S steps (torch accepts 0: local from the first step)")


def check_local_sgd_options(p, args):
    if args.local_sgd_period < 0 or args.local_sgd_start < 0:
        p.error("--local-sgd-period and --local-sgd-start must be at least 0")
    if args.local_sgd_period and args.ddp_hook[0] != "none":
        p.error("--local-sgd-period registers post_localSGD_hook: it takes no --ddp-hook")
    # Each rank evaluates its rows on its own replica: only right after an
    # average are the replicas one model.
    if args.local_sgd_period and args.eval_every % args.local_sgd_period:
        p.error(f"--eval-every {args.eval_every} is not a multiple of --local-sgd-period "
                f"{args.local_sgd_period}: the ranks' replicas would differ at the evaluation")


def ddp_post_local_sgd(model, args, **options):
    """DistributedDataParallel over `model` with post_localSGD_hook: DDP's
    gradient all-reduce for the first --local-sgd-start steps, then none (with
    post_local_gradient_allreduce the hook would all-reduce within each node's
    subgroup, which on loopback is every rank, and new_subgroups() sizes the
    subgroups by the CUDA device count, 0 here)."""
    from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as post_local
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, **options)
    state = post_local.PostLocalSGDState(process_group=None, subgroup=None,
                                         start_localSGD_iter=args.local_sgd_start,
                                         post_local_gradient_allreduce=False)
    ddp.register_comm_hook(state, post_local.post_localSGD_hook)
    return ddp


def post_local_sgd_optimizer(opt, args):
    """`opt` wrapped in PostLocalSGDOptimizer, which averages the ranks'
    parameters (one all-reduce of them all, flattened) after the optimiser's
    step when the averager's step count c (0 at the first step) is at least
    warmup_steps and c - warmup_steps is a multiple of H. PyTorch's example
    sets warmup_steps = start_localSGD_iter = S, which averages after steps
    S + 1, S + 1 + H, ... (counting from 1); H - 1 more puts the averages after
    steps S + H, S + 2H, ..., where sbpflow's rounds end (--sync diloco:H
    averages after steps H, 2H, ...), so that a model evaluated after a
    multiple of H steps is the ranks' average on both sides."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    from torch.distributed.optim import PostLocalSGDOptimizer

    H = args.local_sgd_period
    averager = PeriodicModelAverager(period=H, warmup_steps=args.local_sgd_start + H - 1)
    return PostLocalSGDOptimizer(opt, averager)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def balanced_chunk(total, parts, index):
    """Same rule as runtime/Shape.cpp balancedChunk: (begin, size)."""
    base, extra = divmod(total, parts)
    return index * base + min(index, extra), base + (1 if index < extra else 0)


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


def initial_state(args, vocab):
    """The checkpoint's tensors by the model's parameter names (None without
    --checkpoint); exits with one line if they do not fit the model."""
    import numpy as np
    import torch

    if not args.checkpoint:
        return None
    try:
        weights = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        sys.exit(f"gpt_torch.py: checkpoint: {e}")
    model = build_model(vocab, args.n_layer, args.n_head, args.n_embd, args.block_size)
    state = {}
    for name, param in model.state_dict().items():
        if name not in weights:
            sys.exit(f"gpt_torch.py: checkpoint {args.checkpoint} has no tensor '{name}' "
                     f"(model and checkpoint configurations differ?)")
        if list(weights[name].shape) != list(param.shape):
            sys.exit(f"gpt_torch.py: checkpoint tensor '{name}' is {list(weights[name].shape)}, "
                     f"the model needs {list(param.shape)}")
        state[name] = torch.from_numpy(weights[name].astype(np.float32))
    return state


def validation_loss_sum(model, val, epoch, args, device, begin, rows):
    """(summed cross-entropy, characters counted) over rows [begin, begin +
    rows) of every batch of the validation split that sbpflow's driver
    evaluates after epoch `epoch`: batches of --batch windows, the last one
    padded (targets -1, not counted). The sums of all ranks' rows over the
    count are the mean loss per character of the split's windows."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(val.batches_per_epoch(args.batch, drop_last=False)):
            tokens, targets = val.batch(epoch=epoch, batch_index=b, global_batch=args.batch,
                                        row_begin=begin, row_count=rows)
            x = torch.tensor(tokens, dtype=torch.long, device=device)
            y = torch.tensor(targets, dtype=torch.long, device=device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1),
                                       ignore_index=-1, reduction="sum")
            total += loss.item()
            count += int((y != -1).sum())
    return total, count


def train(rank, args, port, state, text, val):
    """One rank's training on the FortunesText splits `text` and `val` (None
    without --eval-every) from `state` (initial_state): the whole job on one
    process when port is None, else rank `rank` of args.ranks gloo processes
    under DistributedDataParallel. Rank 0 prints the report."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    distributed = port is not None
    torch.set_num_threads(args.threads)
    if distributed:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    device = torch.device(args.device)
    # Full fp32 products on a GPU, as sbpflow's fp32 GEMMs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    vocab = len(text.vocab)
    torch.manual_seed(args.seed)  # without a checkpoint: the same initialisation every run
    model = build_model(vocab, args.n_layer, args.n_head, args.n_embd, args.block_size)
    if state is not None:
        model.load_state_dict(state)
    model.to(device)
    net = model
    if distributed:
        # The attention masks are the only buffers and never change. DDP
        # would broadcast them at the start (gloo has no bool type) and
        # before every forward (4 KiB a step on the wire): it leaves them be.
        DDP._set_params_and_buffers_to_ignore_for_model(
            model, [name for name, _ in model.named_buffers()])
        if args.local_sgd_period:
            net = ddp_post_local_sgd(model, args, broadcast_buffers=False)
        else:
            net = ddp_with_hook(model, args, broadcast_buffers=False)

    params = list(model.parameters())
    decay = [q for q in params if q.dim() >= 2]
    no_decay = [q for q in params if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    if args.local_sgd_period:
        opt = post_local_sgd_optimizer(opt, args)

    # This rank's rows of each global batch (sbpflow's S(0) split of the batch).
    begin, rows = balanced_chunk(args.batch, args.ranks, rank)
    T = args.block_size
    all_steps, timed_steps = SentBytes(), SentBytes()
    loss_sums, counted_global, times, eval_losses = [], [], [], []
    # From one step's end to the next (batch included, evaluations not), as
    # sbpflow's driver times steps. Under local SGD the ranks wait for each
    # other only every H steps: adding up each step's slower rank (step_ms)
    # overstates the time they take.
    walls = []
    if distributed:
        dist.barrier()
    since = time.perf_counter()
    for step in range(args.steps):
        # With --eval-every N, sbpflow's driver runs N steps an epoch: step s
        # is batch s % N of epoch s // N.
        epoch, b = divmod(step, args.eval_every) if args.eval_every else (0, step)
        tokens, targets = text.batch(epoch=epoch, batch_index=b, global_batch=args.batch,
                                     row_begin=begin, row_count=rows)
        x = torch.tensor(tokens, dtype=torch.long, device=device)
        y = torch.tensor(targets, dtype=torch.long, device=device)
        counted = int((y != -1).sum())
        counted_global.append(T * min(args.batch, text.size() - b * args.batch))
        if step == 0:
            all_steps.start()
        if step == args.warmup:
            timed_steps.start()
        start = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = net(x)
            loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1), ignore_index=-1)
        # DDP averages the ranks' gradients: scaled so, the average is the
        # gradient of the global batch's mean loss (the scale is exactly 1 on
        # one process). Under local SGD a rank's own gradient is then that of
        # its rows' mean loss, as sbpflow's sbp.local_estimate.
        (loss * (counted * args.ranks / counted_global[-1])).backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels, not just their launches
        end = time.perf_counter()
        times.append(end - start)
        walls.append(end - since)
        since = end
        loss_sums.append(loss.item() * counted)  # exact: the float32 loss times an integer
        if args.eval_every and (step + 1) % args.eval_every == 0:
            timed = timed_steps.running
            all_steps.stop()
            if timed:
                timed_steps.stop()
            # Each rank evaluates its rows (the ranks' weights are equal).
            sums = torch.tensor(validation_loss_sum(model, val, epoch, args, device, begin,
                                                    rows), dtype=torch.float64)
            if distributed:
                dist.all_reduce(sums)  # the next step starts together on every rank
            eval_losses.append((sums[0] / sums[1]).item())
            if step + 1 < args.steps:
                all_steps.start()
                if timed:
                    timed_steps.start()
            since = time.perf_counter()
    if all_steps.running:
        all_steps.stop()
        timed_steps.stop()

    measured = args.steps - args.warmup
    wall = sum(walls[args.warmup:])
    sent = [(timed_steps.total / measured, all_steps.total / args.steps,
             timed_steps.retransmitted / measured)]
    if distributed:
        # Per step, the slowest rank's time; losses over the global batch.
        per_rank = [None] * args.ranks
        dist.all_gather_object(per_rank, (times, sent[0], wall))
        times = [max(t) for t in zip(*(r[0] for r in per_rank))]
        sent = [r[1] for r in per_rank]
        wall = max(r[2] for r in per_rank)
        sums = torch.tensor(loss_sums, dtype=torch.float64)
        dist.all_reduce(sums)
        loss_sums = sums.tolist()
    losses = [v / n for v, n in zip(loss_sums, counted_global)]
    if rank == 0:
        for step, (loss, t) in enumerate(zip(losses, times)):
            print(f"step {step + 1} loss {loss:.6f} ms {t * 1e3:.2f}", flush=True)
        for e, loss in enumerate(eval_losses):
            print(f"after step {(e + 1) * args.eval_every}: validation loss {loss:.6f}",
                  flush=True)
        measured_times = times[args.warmup:]
        result = {
            "framework": "pytorch",
            "ranks": args.ranks,
            "threads": args.threads,
            "steps": args.steps,
            "warmup": args.warmup,
            "global_batch": args.batch,
            "step_ms": round(sum(measured_times) / len(measured_times) * 1e3, 4),
            "median_step_ms": round(statistics.median(measured_times) * 1e3, 4),
            # The slowest rank's time over the timed steps, end to end.
            "wall_step_ms": round(wall / measured * 1e3, 4),
            "losses": [round(v, 7) for v in losses],
            "final_loss": round(losses[-1], 7),
            "eval_loss": [round(v, 7) for v in eval_losses],
            "ddp_hook": ddp_hook_name(args) if distributed else None,
            "local_sgd_period": args.local_sgd_period,
            "local_sgd_start": args.local_sgd_start,
            # TCP payload each rank's sockets sent (SentBytes: gloo's 144-byte
            # message framing included, retransmissions not), mean per rank:
            # per timed step, and per train step as sbpflow's --bench-json
            # counts them (warm-up included).
            "sent_bytes_per_step": round(sum(s[0] for s in sent) / len(sent), 1),
            "sent_bytes_per_train_step": round(sum(s[1] for s in sent) / len(sent), 1),
            "sent_bytes_per_step_by_rank": [round(s[0], 1) for s in sent],
            "retransmitted_bytes_per_step": round(sum(s[2] for s in sent) / len(sent), 1),
            "torch_version": torch.__version__,
            "device": args.device,
            "bf16": args.bf16,
            "parameters": sum(q.numel() for q in params),
        }
        if args.ddp_hook[0] == "powersgd":
            result["powersgd_warmup"] = args.powersgd_warmup
        print(f"median step {result['median_step_ms']:.2f} ms over steps {args.warmup + 1}.."
              f"{args.steps}", flush=True)
        line = json.dumps(result)
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(line + "\n")
    if distributed:
        dist.barrier()
        # As bench/mlp_torch.py: torch 1.13 can deadlock tearing down DDP and
        # the gloo group at exit; everything is written, so leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="sbpflow checkpoint with the initial weights "
                   "(without it: PyTorch's initialisation, for timing only)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=None,
                   help="steps left out of the mean step time (default: min(10, steps // 5), "
                        "the rule of sbpflow's driver)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="validation loss every N steps (0: never), as gpt_char --eval-every; "
                   "needs N to divide --steps")
    p.add_argument("--batch", type=int, default=12, help="global batch (sequences)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1, help="data seed (gpt_char --seed)")
    p.add_argument("--ranks", type=int, default=1,
                   help="data-parallel gloo processes on loopback (gpt_char --dp); 1 with "
                   "--ddp-hook none trains in this process without DDP")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (fp32, no TF32; one rank)")
    p.add_argument("--bf16", action="store_true",
                   help="torch.autocast(dtype=bfloat16): sbpflow's --bf16 policy (bf16 "
                   "matmuls and attention, f32 weights, layer norm, softmax and loss)")
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--json-out", help="also write the JSON line to this file")
    add_ddp_hook_options(p)
    add_local_sgd_options(p)
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = min(10, args.steps // 5)
    if args.steps < 1 or args.threads < 1 or args.batch < 1 or args.ranks < 1:
        p.error("need steps, threads, batch and ranks >= 1")
    if args.batch < args.ranks:
        p.error(f"need batch >= ranks (batch {args.batch}, ranks {args.ranks})")
    if not 0 <= args.warmup < args.steps:
        p.error(f"need 0 <= warmup < steps (warmup {args.warmup}, steps {args.steps})")
    if args.eval_every < 0 or (args.eval_every and args.steps % args.eval_every):
        p.error(f"--eval-every {args.eval_every} does not divide --steps {args.steps}")
    if args.n_embd % args.n_head:
        p.error(f"--n-head {args.n_head} does not divide --n-embd {args.n_embd}")
    check_ddp_hook_options(p, args)
    check_local_sgd_options(p, args)
    distributed = args.ranks > 1 or args.ddp_hook[0] != "none" or args.local_sgd_period > 0
    if distributed and args.device != "cpu":
        p.error("--ranks > 1 and --ddp-hook run on the CPU (gloo)")
    try:
        text = FortunesText(args.data_dir, train=True, seed=args.seed, context=args.block_size)
        val = (FortunesText(args.data_dir, train=False, seed=args.seed, context=args.block_size)
               if args.eval_every else None)
    except (OSError, ValueError) as e:
        sys.exit(f"gpt_torch.py: {e}")
    # A train batch past the end of the split would be padding, which
    # sbpflow's driver never trains on (it drops the last partial batch).
    per_epoch = args.eval_every or args.steps
    if per_epoch > text.batches_per_epoch(args.batch, drop_last=True):
        sys.exit(f"gpt_torch.py: {per_epoch} steps per epoch, but the training split has "
                 f"{text.batches_per_epoch(args.batch, drop_last=True)} batches of {args.batch}")

    # torch.set_num_threads does not reach OpenBLAS: pin both before torch
    # loads, so "T threads" means T threads on both sides.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    state = initial_state(args, len(text.vocab))
    if not distributed:
        train(0, args, None, state, text, val)
        return
    import torch.multiprocessing as mp
    mp.spawn(train, args=(args, free_port(), state, text, val), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
