#!/usr/bin/python3
"""Mixed precision (--bf16) end to end on the CPU executor (bf16 storage, f32
arithmetic inside each op, as the CUDA kernels):
- the plan holds bf16 activations while every variable and every gradient
  all-reduce stays f32;
- a one-layer GPT trained 60 steps in bf16 follows the fp32 loss curve within
  1% at every step, and is not the fp32 run (bf16 rounding is in effect);
- the bf16 run on dp=2, on tp=2 and on dp=2 x tp=2 matches the bf16 run on
  one rank;
- the MLP on Fashion-MNIST trains in bf16 on 2 ranks like fp32.
Usage: mixed_precision_test.py BIN_DIR"""
import json
import os
import re
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
GPT = ["--n-layer", "1", "--dropout", "0", "--seed", "5", "--log-every", "20"]


def gpt(tmp, name, *extra):
    out = os.path.join(tmp, name + ".json")
    subprocess.run([os.path.join(BIN, "gpt_char"), "--bench-json", out] + GPT + list(extra),
                   check=True, stdout=subprocess.DEVNULL)
    return json.load(open(out))["losses"]


def worst(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def main():
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        # The plan: bf16 activations, f32 variables and gradient all-reduces.
        plan = os.path.join(tmp, "gpt.plan")
        subprocess.run([os.path.join(BIN, "gpt_char"), "--bf16", "--dp", "2", "--emit-plan", plan,
                        "--plan-only"] + GPT, check=True, stdout=subprocess.DEVNULL)
        text = subprocess.run([os.path.join(BIN, "sbpflow"), "inspect", plan], check=True,
                              capture_output=True, text=True).stdout
        named = re.findall(r"^  #\d+ (\S+) (\w+)\[", text, re.M)
        # Master weights and optimiser state are f32; AdamW's step counters i32.
        variables = [t for n, t in named if not n.endswith(".adam_step")]
        counters = [t for n, t in named if n.endswith(".adam_step")]
        tensors = re.findall(r"^    %\d+ (\S+) (\w+)\[", text, re.M)
        reduced = re.findall(r"^    %\d+ all_reduce\S* (\w+)\[", text, re.M)
        bf16 = [n for n, t in tensors if t == "BF16"]
        print(f"plan: {len(variables)} variables, {len(bf16)} of {len(tensors)} tensors bf16, "
              f"{len(reduced)} all-reduced tensors")
        assert variables and set(variables) == {"F32"}, set(variables)
        assert counters and set(counters) == {"I32"}, set(counters)
        assert any(n.startswith("matmul") for n in bf16), bf16[:10]
        assert any(n.startswith("causal_attention") for n in bf16), bf16[:10]
        assert reduced and set(reduced) == {"F32"}, reduced

        steps = ["--steps", "60"]
        f32 = gpt(tmp, "f32", *steps)
        b1 = gpt(tmp, "bf16", "--bf16", *steps)
        d = worst(b1, f32)
        print(f"GPT 60 steps: loss {f32[0]:.4f} -> {f32[-1]:.4f} (fp32), {b1[-1]:.4f} (bf16); "
              f"largest relative difference bf16 vs fp32 {d:.2e} (limit 1e-2)")
        failed |= not (d <= 1e-2)
        failed |= not (b1 != f32)  # the bf16 plan must round somewhere
        failed |= not (b1[-1] < b1[0] - 1.0)

        short = ["--steps", "20", "--batch", "8"]
        one = gpt(tmp, "bf16-1", "--bf16", *short)
        for layout in (["--dp", "2"], ["--tp", "2"], ["--dp", "2", "--tp", "2"]):
            other = gpt(tmp, "bf16" + "".join(layout), "--bf16", *short, *layout)
            d = worst(other, one)
            print(f"bf16 {' '.join(layout)} vs 1 rank over 20 steps: {d:.2e} (limit 5e-4)")
            failed |= not (d <= 5e-4)

        # The MLP: 2 ranks, 100 steps, fp32 and bf16 end near each other.
        mlp = []
        for extra in ([], ["--bf16"]):
            out = os.path.join(tmp, "mlp.json")
            subprocess.run([os.path.join(BIN, "mlp_fashion_mnist"), "--local", "2", "--max-steps",
                            "100", "--bench-json", out] + extra, check=True,
                           stdout=subprocess.DEVNULL)
            mlp.append(json.load(open(out))["losses"])
        d = abs(mlp[1][-1] - mlp[0][-1]) / mlp[0][-1]
        print(f"MLP 2 ranks, 100 steps: final loss {mlp[0][-1]:.4f} (fp32), {mlp[1][-1]:.4f} "
              f"(bf16): {d:.2e} apart (limit 1e-2)")
        failed |= not (d <= 1e-2)
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
