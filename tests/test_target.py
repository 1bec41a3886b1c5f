"""Integration tests of the target model (vpd.target): the paper preset, DDP, and interruption by a signal."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from procs import has_lines, run, signal_when
from vpd.config import from_dict
from vpd.data import SOURCES, CorpusConfig, build_corpus, fixture_cache, tokenize_corpus, train_tokenizer
from vpd.target import (MODEL_PRESETS, TargetTrainConfig, build_target, checkpoint_list, lm_loss,
                        load_target, n_params, train_target)

FIXTURES = Path(__file__).parent / "fixtures" / "debian"
VPD = [sys.executable, "-m", "vpd"]
SMALL = dict(model=dict(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=512, n_ctx=32),
             batch_size=4, lr=1e-2, warmup_steps=5, eval_batches=2, n_checkpoints=4, log_every=5)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    "A tokenized corpus built from the Debian fixtures (vocab 512)."
    d = tmp_path_factory.mktemp("data")
    fixture_cache(FIXTURES, d / "cache")
    build_corpus(d / "corpus", CorpusConfig(max_mb=None, cache_dir=str(d / "cache"),
                 weights={k: (0.0 if k == "pystdlib" else 1.0) for k in SOURCES}), progress=False)
    train_tokenizer(d / "corpus", 512, d / "tok")
    tokenize_corpus(d / "corpus", d / "tok", progress=False)
    return d / "tok"


def test_paper_preset_parameters_and_one_step():
    "The paper preset has ~67M parameters (28.3M non-embedding) and trains one step at a reduced batch on CPU."
    torch.manual_seed(0)
    model = build_target(MODEL_PRESETS["paper"])
    assert n_params(model) == 66_931_200
    assert n_params(model) - model.embed.W_E.numel() == 28_318_464
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.1)
    batch = torch.randint(0, 50277, (2, 65))
    before = model.blocks[3].mlp.W_out.detach().clone()
    loss = lm_loss(model(batch[:, :-1]), batch)
    loss.backward()
    opt.step()
    assert abs(loss.item() - torch.log(torch.tensor(50277.0)).item()) < 1.5
    assert not torch.equal(before, model.blocks[3].mlp.W_out)
    assert model.unembed.W_U.data_ptr() == model.embed.W_E.data_ptr()


def test_ddp_two_ranks_match_one_process(tokens, tmp_path):
    "torchrun with 2 gloo ranks, each on half the global batch, ends where one process on the whole batch does."
    cfg = dict(SMALL, steps=6, eval_every=100, save_every=100)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = Path(sys.executable).with_name("torchrun")
    r = run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vpd", "target", "--out", tmp_path / "ddp",
             "--data", tokens, "--config", tmp_path / "cfg.yaml", "--threads", "1"], timeout=180,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    train_target(tmp_path / "single", tokens, from_dict(TargetTrainConfig, cfg), progress=False)
    a, b = load_target(tmp_path / "ddp"), load_target(tmp_path / "single")
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


def test_sigterm_checkpoints_then_resumes(tokens, tmp_path):
    "SIGTERM ends training with a checkpoint and exit status 130; the same command then finishes the run."
    cfg = dict(SMALL, steps=300, eval_every=100, save_every=100)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = VPD + ["target", "--out", str(tmp_path / "run"), "--data", str(tokens), "--config", str(tmp_path / "cfg.yaml"),
                 "--threads", "1"]
    metrics = tmp_path / "run" / "metrics.jsonl"
    r = signal_when(cmd, has_lines(metrics, 4), timeout=180)
    assert r.returncode == 130, r.stderr[-2000:]
    stopped = checkpoint_list(tmp_path / "run")[-1]
    assert 0 < stopped < 300
    assert "run the same command again to resume" in r.stderr
    assert not (tmp_path / "run" / "summary.json").exists()   # written only when the run is complete
    r = run(cmd, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming {tmp_path / 'run'} from step {stopped}" in r.stderr
    assert checkpoint_list(tmp_path / "run")[-1] == 300
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
    assert steps == sorted(steps)  # the metrics curve continues where it stopped
