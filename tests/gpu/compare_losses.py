"""Compares taper runs: per-step training losses and final weights (issue 8).

Usage: python3 compare_losses.py BASELINE_DIR REPEAT_DIR CANDIDATE_DIR...

Each directory is a `taper train` output_dir: its trainer_state.json holds
the logged losses (`--logging_steps 1` logs every step) and its
model.safetensors the final weights. BASELINE and REPEAT are the same run
twice (one GPU, the whole batch): their difference is the run-to-run noise
of the GPU kernels (atomics in the embedding backward and the clipping
norm), the floor any other comparison is read against. Each CANDIDATE (N
GPUs, 1/N of the batch each) is compared with BASELINE.

Exits 1 when a candidate's loss differs by more than the tolerance, or its
weights differ from the baseline's by more than WEIGHT_NOISE_FACTOR times
the repeat's difference. The weights are the stronger check: the loss is a
mean over the batch, which an all-reduce bug can leave nearly unchanged
(Adam does not care how a gradient is scaled), while every weight carries
every step's averaged gradient.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

# bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%); a different
# split of the batch changes the order of the sums in the gradients, and
# the difference grows over the steps. 2% relative on every step's loss is
# what "matches within bf16 tolerance" is taken to mean here.
TOLERANCE = 0.02
# A split of the batch over N ranks sums the gradients in another order
# than one GPU does, which is more than the repeat's reordering of atomics;
# a weight difference within 10x the repeat's is read as that noise.
WEIGHT_NOISE_FACTOR = 10.0
WEIGHT_FLOOR = 1e-4


def losses(output_dir):
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def weights(output_dir):
    """The tensors of model.safetensors as float64 arrays (F32 and BF16)."""
    raw = (Path(output_dir) / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        chunk = data[start:end]
        if info["dtype"] == "F32":
            values = np.frombuffer(chunk, dtype="<f4")
        elif info["dtype"] == "BF16":
            values = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        out[name] = values.astype(np.float64)
    return out


def weight_difference(a, b):
    """The relative L2 difference of all weights together, and the tensor
    that contributes most to it. (Per tensor, a bias that starts at zero
    has so small a norm that its relative difference says little.)"""
    if set(a) != set(b):
        raise SystemExit(f"the runs saved different tensors: {sorted(set(a) ^ set(b))}")
    squared = {n: float(np.sum((a[n] - b[n]) ** 2)) for n in a}
    total = sum(float(np.sum(a[n] ** 2)) for n in a)
    return (sum(squared.values()) / max(total, 1e-300)) ** 0.5, max(squared, key=squared.get)


def compare(name, base, other):
    steps = sorted(set(base) & set(other))
    if not steps:
        print(f"| {name} | 0 | - | - | - | no common steps |")
        return False
    diffs = [abs(base[s] - other[s]) for s in steps]
    rel = [d / abs(base[s]) for d, s in zip(diffs, steps)]
    worst = max(range(len(steps)), key=lambda i: rel[i])
    ok = rel[worst] <= TOLERANCE
    print(
        f"| {name} | {len(steps)} | {max(diffs):.5f} | {rel[worst]:.4%} (step {steps[worst]}) "
        f"| {base[steps[-1]]:.4f} -> {other[steps[-1]]:.4f} | {'yes' if ok else 'NO'} |"
    )
    return ok


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    baseline, repeat, candidates = sys.argv[1], sys.argv[2], sys.argv[3:]
    base = losses(baseline)
    print(f"losses of {baseline}: step 1 {base[min(base)]:.4f}, step {max(base)} {base[max(base)]:.4f}")
    print(f"| run against {baseline} | steps | max abs diff | max rel diff | last loss | within {TOLERANCE:.0%} |")
    print("| --- | --- | --- | --- | --- | --- |")
    compare(f"{repeat} (repeat: noise floor)", base, losses(repeat))
    ok = all([compare(d, base, losses(d)) for d in candidates])

    base_weights = weights(baseline)
    noise, noise_name = weight_difference(base_weights, weights(repeat))
    # A repeat can be bitwise equal (no atomics on the path): then a floor.
    bound = max(WEIGHT_NOISE_FACTOR * noise, WEIGHT_FLOOR)
    print(f"\n| final weights against {baseline} | relative L2 difference (most from) | within {WEIGHT_NOISE_FACTOR:g}x the repeat's, at least {WEIGHT_FLOOR:g} |")
    print("| --- | --- | --- |")
    print(f"| {repeat} (repeat: noise floor) | {noise:.3e} ({noise_name}) | - |")
    for d in candidates:
        diff, name = weight_difference(base_weights, weights(d))
        within = diff <= bound
        ok = ok and within
        times = f" ({diff / noise:.1f}x)" if noise > 0 else ""
        print(f"| {d} | {diff:.3e} ({name}) | {'yes' if within else 'NO'}{times} |")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
