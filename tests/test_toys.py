"""Toy recovery and interruption/resume through the real `vpd` command line."""
import json
import os
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from procs import has_lines, run, signal_when
from vpd.runs import list_checkpoints

VPD = [str(Path(sys.executable).parent / "vpd")]   # the installed console script
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def vpd(*args, timeout: float = 300):
    "Run the `vpd` command with a hard deadline."
    return run([*VPD, *args], timeout=timeout, env=ENV)


def test_tms_5_2_recovery(tmp_path):
    "TMS 5-2 decomposed to the SPD paper's bar: every column of W found once, at full size, with exact CI patterns."
    out = tmp_path / "tms"
    proc = vpd("toy", "tms-5-2", "--out", str(out), timeout=600)          # the full 10k-step run
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["mmcs"] >= 0.99, s
    assert 0.97 <= s["ml2r"] <= 1.03, s
    assert s["alive"] == {"linear1": 5, "linear2": 5}, s
    assert s["target_ci_error"] == {"linear1": 0, "linear2": 0}, s


def final_weights(run: Path) -> dict:
    return load_file(list_checkpoints(run / "decomposition" / "checkpoints")[-1] / "weights.safetensors")


@pytest.mark.slow   # resuming exactly is also tested by 03_runs, 05_toys (targets) and test_target.py (the command line)
def test_sigterm_then_resume_matches_uninterrupted(tmp_path):
    "A run killed with SIGTERM checkpoints, exits, and the rerun ends bit-for-bit where an uninterrupted run ends."
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert vpd("toy", "tms-5-2", "--out", str(whole), "--steps", "1200").returncode == 0
    r = signal_when([*VPD, "toy", "tms-5-2", "--out", str(split), "--steps", "1200"],
                    has_lines(split / "decomposition" / "metrics.jsonl", 3), timeout=300, env=ENV)
    assert r.returncode == 130, r.stderr[-2000:]
    assert "run the same command again to resume" in r.stderr
    stopped_at = int(list_checkpoints(split / "decomposition" / "checkpoints")[-1].name[5:])
    assert 0 < stopped_at < 1200
    assert vpd("toy", "tms-5-2", "--out", str(split), "--steps", "1200").returncode == 0
    a, b = final_weights(whole), final_weights(split)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_bad_toy_name_is_a_clear_error():
    proc = vpd("toy", "tms-3-3", "--out", "unused")
    assert proc.returncode == 2 and "unknown toy 'tms-3-3'; choose one of ['tms-5-2'" in proc.stderr, proc.stderr


def test_corrupt_or_mismatched_checkpoints_are_one_line_errors(tmp_path):
    "A corrupt decomposition checkpoint, a target made for another toy, and a corrupt target file: exit 2, one line."
    out = tmp_path / "run"
    assert vpd("toy", "tms-5-2", "--out", str(out), "--steps", "20").returncode == 0
    (out / "decomposition" / "checkpoints" / "step_20" / "state.pt").write_bytes(b"garbage")
    (out / "decomposition" / "summary.json").unlink()
    checks = [(["tms-5-2"], "step_20 is corrupt"), (["tms-5-2-id"], "holds a toy target made for 'tms-5-2'")]
    for args, message in checks:
        proc = vpd("toy", *args, "--out", str(out), "--steps", "20")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    (out / "target" / "target.json").write_text("{")
    proc = vpd("toy", "tms-5-2", "--out", str(out), "--steps", "20")
    assert proc.returncode == 2 and f"{out / 'target' / 'target.json'} is unreadable" in proc.stderr, proc.stderr
