"""Shared set-up for the Python tests: where the taper binary is, and a
kernelspec for it installed into a private Jupyter path."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAPER = os.environ.get("TAPER_BIN", str(ROOT / "target" / "debug" / "taper"))
# What a test keeps for a person to look at (executed notebooks, screenshots).
ARTIFACTS = ROOT / "target" / "test-artifacts"
# evcxr's build cache for the kernels the tests start: the first `:dep taper`
# fills it and the later kernels copy from it, as after `taper install --warm`.
os.environ.setdefault("XDG_CACHE_HOME", str(ROOT / "target" / "test-cache"))


def install_kernelspec(prefix: Path) -> None:
    """`taper install --prefix` into `prefix`, and point Jupyter (and the
    kernel's history and log files) at private places."""
    subprocess.run([TAPER, "install", "--prefix", str(prefix)], check=True, capture_output=True)
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    os.environ["TAPER_HISTORY"] = str(prefix / "history.jsonl")
    os.environ["TAPER_KERNEL_LOG"] = str(prefix / "kernel.log")
