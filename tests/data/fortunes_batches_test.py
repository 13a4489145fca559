"""bench/fortunes_batches.py draws the batches the C++ FortunesText source draws:
compares vocabulary, split checksum, size and batches 0..2 (seed 5) printed by
fortunes_dump, on a synthetic directory (files to skip, padded rows) and on
the real Debian corpus.

    fortunes_batches_test.py FORTUNES_DUMP BENCH_DIR
"""

import os
import subprocess
import sys
import tempfile
import zlib

dump, bench_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, bench_dir)
import fortunes_batches  # noqa: E402

failures = []


def check(directory, train, seed, context, global_batch, epoch, first, count):
    what = f"{directory} {'train' if train else 'val'} seed {seed} T {context} G {global_batch}"
    out = subprocess.run([dump, directory, "train" if train else "val", str(seed), str(context),
                          str(global_batch), str(epoch), str(first), str(count)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        failures.append(f"{what}: fortunes_dump failed: {out.stderr}")
        return
    lines = out.stdout.splitlines()
    py = fortunes_batches.FortunesText(directory, train=train, seed=seed, context=context)
    expected = ["vocab " + " ".join(str(b) for b in py.vocab),
                f"split {len(py.tokens)} {zlib.crc32(py.tokens)}",
                f"size {py.size()}"]
    for b in range(first, first + count):
        tokens, targets = py.batch(epoch, b, global_batch)
        for name, rows in (("tokens", tokens), ("targets", targets)):
            for r, row in enumerate(rows):
                expected.append(f"{name} {b} {r} " + " ".join(str(t) for t in row))
    if lines != expected:
        bad = next(i for i in range(max(len(lines), len(expected)))
                   if i >= len(lines) or i >= len(expected) or lines[i] != expected[i])
        failures.append(f"{what}: line {bad} differs:\n  C++:    "
                        f"{lines[bad] if bad < len(lines) else '<none>'}\n  Python: "
                        f"{expected[bad] if bad < len(expected) else '<none>'}")
    # The Python shards of a batch form the whole batch, as the C++ ranks' do.
    whole = py.batch(epoch, first, global_batch)
    half = global_batch // 2
    a = py.batch(epoch, first, global_batch, 0, half)
    b = py.batch(epoch, first, global_batch, half, global_batch - half)
    if (a[0] + b[0], a[1] + b[1]) != whole:
        failures.append(f"{what}: two shards of batch {first} differ from the whole batch")
    return py


with tempfile.TemporaryDirectory() as d:
    files = {"b": b"hello world\n" * 9, "a": bytes(range(256)) * 2, "B": b"\x00\xff zz\n" * 7,
             "a.dat": b"not text", "c": b""}
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    os.symlink(os.path.join(d, "b"), os.path.join(d, "b.u8"))
    os.symlink(os.path.join(d, "b"), os.path.join(d, "link"))
    os.mkdir(os.path.join(d, "sub"))
    with open(os.path.join(d, "sub", "x"), "wb") as f:
        f.write(b"QQQ")
    # 42 + 512 + 108 = 662 bytes: train 595 (size 74 with T 8), val 67 (size 8)
    py = check(d, True, 5, 8, 32, 0, 0, 3)  # batch 2 rows 10.. are padding
    if py is not None and (py.size() != 74 or len(py.vocab) != 256):
        failures.append(f"synthetic: size {py.size()}, vocab {len(py.vocab)}")
    check(d, False, 5, 8, 3, 1, 0, 3)
    check(d, True, 2**64 - 1, 1, 4, 7, 1000, 3)

real = fortunes_batches.DEFAULT_DIR
if os.path.isdir(real):
    check(real, True, 5, 64, 16, 0, 0, 3)
    check(real, False, 5, 64, 16, 2, 0, 3)
    py = fortunes_batches.FortunesText(real, train=True, seed=5, context=64)
    text = "Hello, world!\n"
    if py.decode(py.encode(text)).decode() != text:
        failures.append("encode/decode round trip")
else:
    print(f"{real} is absent (Debian package fortunes): real corpus not compared")

for f in failures:
    print("FAIL:", f)
if failures:
    sys.exit(1)
print("Python batches match the C++ source")
