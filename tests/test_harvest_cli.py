"""`vpd harvest`, `vpd browse`, `vpd label` and `vpd bench harvest` on a trained micro decomposition (a random
one-layer target, the `micro` preset of `test_decompose_cli`): the commands' outputs, their one-line errors, and a
harvest under torchrun with two processes that equals the one-process harvest."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from procs import run, torchrun_or_skip
from test_decompose_cli import MICRO, random_lm_run
from vpd.cli import main
from vpd.decompose import decompose_lm, lm_config
from vpd.harvest import load


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    "A decomposition run directory of the micro preset, trained for 4 steps."
    root = tmp_path_factory.mktemp("harvest_cli")
    target, data = random_lm_run(root)
    decompose_lm(target, data, root / "run", preset=MICRO, config=lm_config(MICRO, overrides={"steps": 4}), progress=False)
    return root / "run"


def test_harvest_browse_label(micro_run, tmp_path, capsys):
    out = tmp_path / "h"
    assert main(["harvest", str(micro_run), "--out", str(out), "--tokens", "600", "--threads", "1"]) == 0, \
        capsys.readouterr().err
    h = load(out)
    assert h.n_tokens == 600 // 12 * 12 and len(h) == 6 * 6
    assert h.manifest["run_dir"] == str(micro_run.resolve()) and h.manifest["seq_len"] == 12
    assert "harvest written to" in capsys.readouterr().out
    assert main(["label", str(out)]) == 0
    assert (out / "labels" / "offline.jsonl").exists() and "offline (statistical)" in capsys.readouterr().out
    assert main(["browse", str(out), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").exists() and "file://" in capsys.readouterr().out
    assert main(["harvest", str(micro_run), "--out", str(out), "--tokens", "600"]) == 0   # done: loaded, not redone
    assert main(["harvest", str(micro_run), "--out", str(out), "--tokens", "500"]) == 2
    assert "made with other settings" in capsys.readouterr().err


def test_one_line_errors(micro_run, tmp_path, capsys, monkeypatch):
    for var in ("VPD_LLM_BASE_URL", "VPD_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    cases = {("harvest", str(tmp_path)): "is not a language-model decomposition run",
             ("harvest", str(micro_run), "--preset", "huge"): "unknown harvest preset 'huge'",
             ("harvest", str(micro_run), "--tokens", "0"): "--tokens: must be at least 1",
             ("browse", str(tmp_path), "--out", str(tmp_path / "s")): "no harvest in",
             ("label", str(micro_run / "nothing")): "no harvest in"}
    for argv, message in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert main(["harvest", str(micro_run), "--out", str(tmp_path / "h"), "--tokens", "300"]) == 0
    capsys.readouterr()
    assert main(["label", str(tmp_path / "h"), "--provider", "env"]) == 2
    assert "needs VPD_LLM_BASE_URL" in capsys.readouterr().err


def test_bench_harvest(micro_run, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "harvest", "--run", str(micro_run), "--tokens", "480", "--split", "val", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n_tokens"] == 480 and r["tokens_per_second"] == pytest.approx(480 / r["seconds"])
    assert r["peak_rss_mib"] > 0 and set(r["load_average_1min"]) == {"before", "after"} and r["cpu_seconds"] > 0


def test_torchrun_matches_one_process(micro_run, tmp_path):
    torchrun = torchrun_or_skip()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "vpd", "harvest", str(micro_run), "--tokens", "900", "--batch-size", "4", "--threads", "1"]
    for cmd, out in (([sys.executable], tmp_path / "one"), ([torchrun, "--standalone", "--nproc_per_node", "2"], tmp_path / "two")):
        done = run(cmd + args + ["--out", str(out)], timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "two" / "state").exists()
    assert load(tmp_path / "two").manifest["world_size"] == 2
    for name in ("subcomponents.safetensors", "examples.safetensors", "tokens.safetensors"):
        one, two = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert sorted(one) == sorted(two)
        for k in one:   # integers and examples exactly; float sums up to the order of additions
            tol = {"rtol": 1e-6, "atol": 1e-9} if one[k].is_floating_point() else {"rtol": 0, "atol": 0}
            torch.testing.assert_close(two[k], one[k], equal_nan=True, msg=f"{name}: {k}", **tol)
