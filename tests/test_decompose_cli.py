"""`vpd decompose` and `vpd bench decompose` on a random one-layer target with a `micro` preset given as a file:
a bad start writes nothing that blocks the corrected command, and one process and two torchrun processes on the
same global batch agree."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from procs import run, torchrun_or_skip
from vpd.cli import main
from vpd.config import merge_config, to_dict
from vpd.decompose import LM_PRESETS, LMPreset
from vpd.runs import list_checkpoints
from vpd.target import MATRICES, TargetConfig, TargetTrainConfig, build_target, save_target_checkpoint

# fp32 (bf16 off): one process and two torchrun ranks with half the batch each must agree to float rounding, and bf16
# matrix products round differently at different batch shapes.
MICRO = LMPreset(C={m: 6 for m in MATRICES}, batch_size=4, seq_len=12, config=merge_config(
    LM_PRESETS["tiny"].config, {"steps": 8, "log_every": 2, "save_every": 4, "faithfulness_warmup_steps": 3, "bf16": False,
                                "ci": {"d_model": 16, "n_blocks": 1, "n_heads": 2, "max_len": 16}}))


def random_lm_run(root: Path, vocab: int = 64, n_tokens: int = 5000) -> tuple[Path, Path]:
    "A target run directory holding a random 1-layer model, and random token shards: `(target_dir, data_dir)`."
    tok = root / "tok"
    tok.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {"train": n_tokens, "val": n_tokens // 5}
    for split, n in splits.items():
        rng.integers(0, vocab, n).astype(np.uint16).tofile(tok / f"{split}.bin")
    (tok / "shards.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": vocab, "splits": {
        s: {"file": f"{s}.bin", "tokens": n} for s, n in splits.items()}}))
    cfg = TargetTrainConfig(model=TargetConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=vocab,
                                               n_ctx=16))
    model = build_target(cfg.model, seed=0)
    save_target_checkpoint(root / "target", 1, model, torch.optim.AdamW(model.parameters()), cfg)
    return root / "target", tok


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    "`(target_dir, data_dir, preset_file)` of a random target with the micro preset."
    root = tmp_path_factory.mktemp("lm")
    target, data = random_lm_run(root)
    (root / "micro.yaml").write_text(yaml.safe_dump(to_dict(MICRO)))
    return target, data, root / "micro.yaml"


def test_bad_data_start_then_corrected_command(lm, tmp_path, capsys):
    "A start with a wrong --data records nothing, so the corrected command runs; resuming with other data is refused."
    target, data, preset = lm
    args = ["decompose", "--preset-file", str(preset), "--target", str(target), "--out", str(tmp_path / "run"),
            "--steps", "2", "--threads", "1"]
    assert main(args + ["--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vpd decompose: ") and err.count("\n") == 1 and "shards.json does not exist" in err
    assert not (tmp_path / "run" / "lm.json").exists()
    assert main(args + ["--data", str(data)]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
    other = tmp_path / "other"
    shutil.copytree(data, other)
    assert main(args + ["--data", str(other)]) == 2
    assert "holds a decomposition with other ['data_dir']" in capsys.readouterr().err


def test_steps_from_flag_config_file_and_preset(lm, tmp_path, capsys):
    "--steps overrides the --config file, which overrides the preset file; 0 steps is refused."
    target, data, preset = lm
    (tmp_path / "c.yaml").write_text("steps: 3\n")
    base = ["decompose", "--preset-file", str(preset), "--target", str(target), "--data", str(data), "--threads", "1"]
    assert main(base + ["--out", str(tmp_path / "a"), "--config", str(tmp_path / "c.yaml")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--config", str(tmp_path / "c.yaml"), "--steps", "1"]) == 0
    capsys.readouterr()
    assert [json.loads((tmp_path / r / "summary.json").read_text())["steps"] for r in "ab"] == [3, 1]
    assert main(base + ["--out", str(tmp_path / "c"), "--steps", "0"]) == 2
    assert "--steps: must be at least 1, got 0" in capsys.readouterr().err


def test_bench_decompose_writes_where_asked(lm, tmp_path, capsys, monkeypatch):
    target, data, preset = lm
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench" / "micro.json"
    assert main(["bench", "decompose", "--preset-file", str(preset), "--target", str(target), "--data", str(data),
                 "--steps", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert (result["tokens_per_step"], result["subcomponents"], result["timed_steps"]) == (4 * 12, 6 * 6, 2)
    assert result["tokens_per_second"] == pytest.approx(48 / result["seconds_per_step_median"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no work directory left behind


def _decompose(cmd_prefix, target, data, preset, out, steps=6):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = cmd_prefix + ["-m", "vpd", "decompose", "--preset-file", str(preset), "--target", str(target),
                        "--data", str(data), "--out", str(out), "--steps", str(steps), "--threads", "1"]
    done = run(cmd, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(list_checkpoints(out / "checkpoints")[-1] / "weights.safetensors")


def test_torchrun_matches_one_process(lm, tmp_path):
    torchrun = torchrun_or_skip()
    target, data, preset = lm
    one = _decompose([sys.executable], target, data, preset, tmp_path / "one")
    two = _decompose([torchrun, "--standalone", "--nproc_per_node", "2"], target, data, preset, tmp_path / "two")
    assert sorted(one) == sorted(two)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
