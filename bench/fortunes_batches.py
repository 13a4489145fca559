"""The fortunes text batches of runtime/data/FortunesText.h, in Python.

Same files in the same order, same byte vocabulary, same 90/10 split and the
same windows (the formula is documented in FortunesText.h; change both), so a
PyTorch peer trains on exactly the batches sbpflow's ranks see.
tests/data/fortunes_batches_test.py checks this against the C++ source.

    text = FortunesText("/usr/share/games/fortunes", train=True, seed=5, context=64)
    tokens, targets = text.batch(epoch=0, batch_index=3, global_batch=32)
"""

import os

DEFAULT_DIR = "/usr/share/games/fortunes"
MASK64 = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def text_files(directory):
    """Regular files (no symlinks, no directories) not ending in .dat or .u8,
    sorted by the bytes of their names."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"fortunes: directory '{directory}' does not exist")
    names = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        if name.endswith(".dat") or name.endswith(".u8"):
            continue
        names.append(name)
    return sorted(names, key=os.fsencode)


def read_corpus(directory):
    corpus = b"".join(open(os.path.join(directory, n), "rb").read() for n in text_files(directory))
    if not corpus:
        raise ValueError(f"fortunes: no text in '{directory}'")
    return corpus


class FortunesText:
    def __init__(self, directory=DEFAULT_DIR, train=True, seed=0, context=64):
        if context <= 0:
            raise ValueError(f"fortunes: context must be positive, got {context}")
        corpus = read_corpus(directory)
        self.vocab = sorted(set(corpus))  # id -> byte
        self._table = bytes(self.vocab.index(b) if b in self.vocab else 0 for b in range(256))
        n_train = len(corpus) * 9 // 10
        part = corpus[:n_train] if train else corpus[n_train:]
        if len(part) < context + 1:
            raise ValueError(f"fortunes: split of '{directory}' has {len(part)} bytes, "
                             f"fewer than context + 1 = {context + 1}")
        # Ids fit a byte (at most 256 of them): the split as a bytes object of ids.
        self.tokens = part.translate(self._table)
        self.seed = seed & MASK64
        self.context = context

    def size(self):
        """Windows per epoch."""
        return len(self.tokens) // self.context

    def batches_per_epoch(self, global_batch, drop_last):
        n = self.size()
        return n // global_batch if drop_last else (n + global_batch - 1) // global_batch

    def window_start(self, epoch, batch_index, row):
        key = self.seed ^ ((epoch << 40) & MASK64) ^ ((batch_index << 20) & MASK64) ^ row
        return splitmix64(key) % (len(self.tokens) - self.context)

    def batch(self, epoch, batch_index, global_batch, row_begin=0, row_count=None):
        """(tokens, targets): lists of row_count lists of `context` ids. Rows
        past the end of the epoch are padding: tokens 0, targets -1."""
        if row_count is None:
            row_count = global_batch - row_begin
        T = self.context
        tokens, targets = [], []
        for row in range(row_begin, row_begin + row_count):
            if batch_index * global_batch + row >= self.size():
                tokens.append([0] * T)
                targets.append([-1] * T)
                continue
            s = self.window_start(epoch, batch_index, row)
            tokens.append(list(self.tokens[s:s + T]))
            targets.append(list(self.tokens[s + 1:s + T + 1]))
        return tokens, targets

    def encode(self, text):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        ids = []
        for i, b in enumerate(data):
            if b not in self.vocab:
                raise ValueError(f"fortunes: byte {b} at position {i} is not in the vocabulary")
            ids.append(self._table[b])
        return ids

    def decode(self, ids):
        """Bytes of `ids` (decode("utf-8", "replace") for display)."""
        return bytes(self.vocab[i] for i in ids)
