"""Kernel latency through a real jupyter_client, as a table.

    .venv/bin/python tests/bench/kernel_latency.py [--runs 30] [--taper-runs 5]

Measures, each over several runs (median, 90th percentile, min):
  start        launching the kernel process to its kernel_info_reply
  first cell   the first cell of a fresh kernel (evcxr builds its runtime);
               this and the `:dep taper` rows also with rust-analyzer asked
               for every variable's type (TAPER_TYPE_PROBE=0), in turns
  warm cell    `x + 1` in a kernel that has run cells, with rustc alone (the
               default) and with cargo every time (TAPER_DIRECT_RUSTC=0),
               with and without `:dep taper` in the notebook
  :dep taper   the first training cell of a fresh kernel (`:dep taper`,
               build a model, train 20 steps) after `taper install --warm`,
               sent the moment the kernel answers (a notebook run from the
               top), and sent after --idle seconds (a person typing it)
Uses the kernelspec `taper` from JUPYTER_PATH, or installs one from
TAPER_BIN (default target/release/taper) with --warm into a private prefix.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[2]

TRAINING_CELL = """:dep taper
use taper::{datasets, models, Trainer, TrainingArguments};
let data = datasets::load_tabular("iris", 0.2, 42).unwrap();
let config = models::MlpConfig { input_dim: 4, hidden: vec![16], num_classes: 3 };
let model = models::Mlp::new(&config, 0, &taper::candle_core::Device::Cpu).unwrap();
let args = TrainingArguments::builder().max_steps(20).disable_tqdm(true).build().unwrap();
let mut trainer = Trainer::new(args, model).unwrap().with_train_dataset(data.train);
trainer.train().unwrap().global_step
"""


def started_kernel(env=None):
    km = KernelManager(kernel_name="taper")
    t0 = time.perf_counter()
    km.start_kernel(env=dict(os.environ, **(env or {})))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc, time.perf_counter() - t0


def timed(kc, code, timeout=1200):
    t0 = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
    took = time.perf_counter() - t0
    if reply["content"]["status"] != "ok":
        sys.exit(f"cell failed: {code[:60]!r}: {reply['content']}")
    return took


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def row(name, samples, target):
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):,.0f} | {p90:,.0f} | {ms[0]:,.0f} | {target} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--taper-runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the warm kernels idle before they are timed")
    args = parser.parse_args()
    if "JUPYTER_PATH" not in os.environ:
        prefix = Path(tempfile.mkdtemp(prefix="taper-bench-"))
        taper = os.environ.get("TAPER_BIN", str(ROOT / "target/release/taper"))
        print(f"installing the kernelspec from {taper} with --warm ...", flush=True)
        subprocess.run([taper, "install", "--prefix", str(prefix), "--warm"], check=True)
        os.environ["JUPYTER_PATH"] = str(prefix / "share/jupyter")

    # The first cell and the first training cell, in turns with the baseline
    # that asks rust-analyzer for every variable's type (TAPER_TYPE_PROBE=0).
    rust_analyzer = {"TAPER_TYPE_PROBE": "0"}
    starts, firsts, firsts_ra = [], [], []
    for _ in range(args.runs):
        km, kc, start = started_kernel()
        starts.append(start)
        firsts.append(timed(kc, "let x = 1;"))
        stop(km, kc)
        km, kc, _ = started_kernel(rust_analyzer)
        firsts_ra.append(timed(kc, "let x = 1;"))
        stop(km, kc)

    # The warm cell in four kernels, measured in turns so that a busy moment
    # of the machine falls on all of them: rustc alone (the default) and
    # cargo every time (TAPER_DIRECT_RUSTC=0, the baseline), each with and
    # without `:dep taper` in the notebook.
    kernels = {}
    for name, env, setup in [
        ("direct", {}, []),
        ("cargo", {"TAPER_DIRECT_RUSTC": "0"}, []),
        ("taper direct", {}, [":dep taper", "use taper::Trainer;"]),
        ("taper cargo", {"TAPER_DIRECT_RUSTC": "0"}, [":dep taper", "use taper::Trainer;"]),
    ]:
        km, kc, _ = started_kernel(env)
        for code in setup + ["let x = 1;", "x + 1", "x + 1"]:
            timed(kc, code)
        kernels[name] = (km, kc, [])
    # A kernel idle for 300 ms has rust-analyzer resolve its dependency
    # graph in the background (on two cores, 3 s for the standard library,
    # 4 s more for taper's): let that finish, as it does while a person
    # types, so that it does not fall on the measured cells.
    time.sleep(args.settle)
    for _ in range(args.runs):
        for _, kc, samples in kernels.values():
            samples.append(timed(kc, "x + 1"))
    for km, kc, _ in kernels.values():
        stop(km, kc)
    warm = {name: samples for name, (_, _, samples) in kernels.items()}

    taper, taper_ra, taper_idle = [], [], []
    for _ in range(args.taper_runs):
        for samples, env in [(taper, {}), (taper_ra, rust_analyzer)]:
            km, kc, _ = started_kernel(env)
            samples.append(timed(kc, TRAINING_CELL))
            stop(km, kc)
        km, kc, _ = started_kernel()
        time.sleep(args.idle)
        taper_idle.append(timed(kc, TRAINING_CELL))
        stop(km, kc)

    print()
    print("| measurement | runs | median ms | p90 ms | min ms | target (issue 4) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("start to kernel_info_reply", starts, "<= 1,000 (evcxr: 2,600)"))
    print(row("first cell (`let x = 1;`)", firsts, "-"))
    print(row("the same, rust-analyzer types it (`TAPER_TYPE_PROBE=0`)", firsts_ra, "-"))
    print(row("warm small cell (`x + 1`)", warm["direct"], "<= 150 (evcxr: 196)"))
    print(row("the same, cargo every time (`TAPER_DIRECT_RUSTC=0`)", warm["cargo"], "-"))
    print(row("warm `x + 1` after `:dep taper`", warm["taper direct"], "<= 150"))
    print(row("the same, cargo every time", warm["taper cargo"], "-"))
    for name in ["", "taper "]:
        ratio = statistics.median(warm[name + "cargo"]) / statistics.median(warm[name + "direct"])
        print(f"\nwarm cell{' after :dep taper' if name else ''}: cargo / rustc alone = {ratio:.2f}x (medians)")
    print(row("first `:dep taper` training cell, after --warm, sent at once", taper, "<= 10,000"))
    print(row("the same, rust-analyzer types it (`TAPER_TYPE_PROBE=0`)", taper_ra, "-"))
    for name, probed, asked in [("first cell", firsts, firsts_ra), ("training cell", taper, taper_ra)]:
        ratio = statistics.median(asked) / statistics.median(probed)
        print(f"\n{name}: rust-analyzer / rustc probe = {ratio:.2f}x (medians)")
    print(row(f"the same, sent after {args.idle:g} s idle", taper_idle, "<= 10,000"))


if __name__ == "__main__":
    main()
