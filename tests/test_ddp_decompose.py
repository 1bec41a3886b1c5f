"""Data-parallel decomposition: 2 gloo ranks, each on half of every global batch, must do what 1 process does on the
whole batch (every loss on, both adversary scopes), agree on shared adversary sources, and resume exactly."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from procs import run

WORKER = Path(__file__).with_name("ddp_decompose_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS = ("step_5", "step_10")

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available() and TORCHRUN.exists()),
                                reason="needs torch.distributed with the gloo backend and torchrun")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Output directories of the worker run by one process and by `torchrun --nproc_per_node 2`."
    out = {"one": tmp_path_factory.mktemp("one"), "two": tmp_path_factory.mktemp("two")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in ([sys.executable, str(WORKER), str(out["one"])],
                [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(WORKER), str(out["two"])]):
        r = run(cmd, timeout=180, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    return out


def checkpoint(run_dir: Path, step: str) -> tuple[dict, dict]:
    return (load_file(run_dir / "checkpoints" / step / "weights.safetensors"),
            torch.load(run_dir / "checkpoints" / step / "state.pt", weights_only=False))


def metrics(run_dir: Path) -> list[dict]:
    "The metrics records without wall-clock times."
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(two: Path, one: Path) -> None:
    "U, V, CI weights, both optimizers' moments and the logged metrics of two runs agree to float32 round-off."
    for step in STEPS:
        (w2, s2), (w1, s1) = checkpoint(two, step), checkpoint(one, step)
        assert w2.keys() == w1.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=f"{two.name} {step} {k}")
        torch.testing.assert_close(s2["opt_components"]["state"], s1["opt_components"]["state"], rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(s2["opt_ci"]["state"], s1["opt_ci"]["state"], rtol=1e-4, atol=1e-8)
        assert torch.equal(s2["rng"], s1["rng"]), "the shared random stream must be the single process's"
    m2, m1 = metrics(two), metrics(one)
    assert [r["step"] for r in m2] == [r["step"] for r in m1] and any("eval" in r for r in m1)
    for r2, r1 in zip(m2, m1):
        assert r2.keys() == r1.keys()
        for k in r1:
            assert r2[k] == pytest.approx(r1[k], rel=1e-4, abs=1e-7), (two.name, r1["step"], k)


def adversary(state: dict, name: str, part: str = "sources") -> list[torch.Tensor]:
    "One site's adversary tensors, one per rank."
    return [entry[part][name] for entry in state["adversary"]]


def test_per_position_adversary_run_matches_one_process(runs):
    "Stochastic (uniform-k-subset), per-position PPGD, minimality with beta > 0, layerwise and Δ-L2, on 2 ranks."
    assert_same_run(runs["two"] / "ppgd", runs["one"] / "ppgd")
    (_, s2), (_, s1) = checkpoint(runs["two"] / "ppgd", "step_10"), checkpoint(runs["one"] / "ppgd", "step_10")
    for site in ("0", "2"):
        for part in ("sources", "m", "v"):
            halves, whole = adversary(s2, site, part), adversary(s1, site, part)[0]
            assert all(h.shape[0] == whole.shape[0] // 2 for h in halves)
            torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-4, atol=1e-6, msg=f"{site} {part}")


def test_shared_adversary_sources_agree_across_ranks(runs):
    "With one source for the whole batch every rank holds the identical source, and it is the single process's."
    assert_same_run(runs["two"] / "shared", runs["one"] / "shared")
    for step in STEPS:
        (_, s2), (_, s1) = checkpoint(runs["two"] / "shared", step), checkpoint(runs["one"] / "shared", step)
        for site in ("0", "2"):
            rank0, rank1 = adversary(s2, site)
            assert rank0.shape == (1, 5) and torch.equal(rank0, rank1)
            torch.testing.assert_close(rank0, adversary(s1, site)[0], rtol=1e-5, atol=1e-6)


def test_interrupted_on_one_rank_stops_all_and_resumes_exactly(runs):
    "SIGTERM on rank 1 alone stops both ranks at the same step; the resumed run ends exactly where an uninterrupted one does."
    for rank in (0, 1):
        assert "at step 4" in (runs["two"] / f"interrupted_rank{rank}.txt").read_text()
    (w, s), (w_ref, s_ref) = checkpoint(runs["two"] / "resume", "step_10"), checkpoint(runs["two"] / "ppgd", "step_10")
    assert all(torch.equal(w[k], w_ref[k]) for k in w_ref)
    for site in ("0", "2"):
        assert all(torch.equal(a, b) for a, b in zip(adversary(s, site), adversary(s_ref, site)))


def test_minimality_over_two_ranks_is_the_global_batch_loss(runs):
    "Each rank's minimality is the loss of the concatenated batch; rank-averaged gradients are the single process's."
    one = torch.load(runs["one"] / "minimality_rank0.pt")
    for rank in (0, 1):
        two = torch.load(runs["two"] / f"minimality_rank{rank}.pt")
        torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-6, atol=0)
        torch.testing.assert_close(two["grad"], one["grad"], rtol=1e-5, atol=1e-7)


def test_destroying_the_group_stops_its_threads(runs):
    """After destroy_process_group no gloo thread is left: nothing else may hold the group. A gloo worker alive at
    interpreter exit can drop a tensor's Python object there, which needs the GIL and aborts the process."""
    for rank in (0, 1):
        names = (runs["two"] / f"threads_rank{rank}.txt").read_text().split()
        assert not [n for n in names if "gloo" in n], f"rank {rank} threads after destroy_process_group: {names}"
