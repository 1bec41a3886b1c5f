"""Shared by the interruption tests: run a command, stop it with SIGTERM once it has logged enough, and collect it."""
import signal
import subprocess
import time
from pathlib import Path


def sigterm_after_metrics(cmd: list[str], metrics: Path, n_lines: int, env=None, timeout: float = 120):
    "Start `cmd`, wait until `metrics` has `n_lines` lines, send SIGTERM; returns (return code, stdout, stderr)."
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= n_lines):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
