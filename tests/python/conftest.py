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


def scratch_folder(kernel_pid: int) -> Path:
    """The build folder a running kernel holds: the slot whose lock file
    (`<tmp>/taper-evcxr/slot-<n>.lock`) it keeps open."""
    fd_dir = Path(f"/proc/{kernel_pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "/taper-evcxr/" in target and target.endswith(".lock"):
            return Path(target[: -len(".lock")])
    raise AssertionError(f"kernel {kernel_pid} holds no scratch slot lock")


def slot_is_free(folder: Path) -> bool:
    """Whether no process holds the lock of the slot `folder`."""
    import fcntl

    with open(f"{folder}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True
