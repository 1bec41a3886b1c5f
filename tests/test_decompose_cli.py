"`vpd decompose` end to end: one process and two torchrun processes on the same global batch agree."
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vpd.decompose import random_lm_run
from vpd.train import list_checkpoints


def _decompose(cmd_prefix, target, data, out, steps=6):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = cmd_prefix + ["-m", "vpd", "decompose", "--preset", "micro", "--target", str(target), "--data", str(data),
                        "--out", str(out), "--steps", str(steps), "--threads", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(list_checkpoints(out / "checkpoints")[-1] / "weights.safetensors")


def test_torchrun_matches_one_process(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    target, data = random_lm_run(tmp_path)
    one = _decompose([sys.executable], target, data, tmp_path / "one")
    two = _decompose([torchrun, "--standalone", "--nproc_per_node", "2"], target, data, tmp_path / "two")
    assert sorted(one) == sorted(two)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
