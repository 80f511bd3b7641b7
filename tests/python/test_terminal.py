"""taper in a terminal: `taper train` draws indicatif bars on a TTY (a real
pseudo-terminal stands in for the person at the keyboard) and prints plain
lines into a pipe; `taper repl` evaluates Rust cells."""

import os
import pty
import select
import subprocess
import time

from conftest import TAPER

TRAIN = [TAPER, "train", "--max_steps", "300", "--logging_steps", "100", "--output_dir"]


def run_in_pty(argv, keystrokes=(), timeout=600):
    """Runs `argv` on a new pseudo-terminal, typing each of `keystrokes`
    after the previous output settles; returns everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    output = b""
    pending = list(keystrokes)
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            quiet_since = time.monotonic()
        elif pending and time.monotonic() - quiet_since > 1.5:
            os.write(fd, pending.pop(0).encode())
            quiet_since = time.monotonic()
    os.waitpid(pid, 0)
    os.close(fd)
    return output.decode(errors="replace")


def test_train_draws_indicatif_bars_on_a_terminal(tmp_path):
    screen = run_in_pty(TRAIN + [str(tmp_path / "tty")], timeout=300)
    # tqdm's look: percentage, a bar of block characters, steps and rate.
    assert "100%|" in screen, screen[-2000:]
    assert "█" in screen and "300/300" in screen and "it/s" in screen, screen[-2000:]
    # The logs are printed above the bars, as dicts.
    assert "{'loss':" in screen, screen[-2000:]


def test_train_into_a_pipe_prints_plain_lines(tmp_path):
    out = subprocess.run(TRAIN + [str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "█" not in out and "\x1b[" not in out
    assert "[100/300" in out and "{'loss':" in out, out[-2000:]


def test_repl_evaluates_rust_and_keeps_state():
    """The REPL reading cells from a pipe (a pseudo-terminal run of it is
    not automated yet): state carries across cells, an open bracket
    continues the cell, magics work."""
    out = subprocess.run(
        [TAPER, "repl"],
        input="let answer = (40 +\n2);\nanswer * 10\n%memory\n",
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    assert "REPL" in out, out[-2000:]
    assert "420" in out.splitlines(), out[-2000:]
    assert "CPU (RSS)" in out, out[-2000:]
