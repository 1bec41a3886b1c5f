"""`vpd graph` on a trained micro decomposition over the harvest tests' 40-word vocabulary: the graph it writes is
valid circuit-tracer JSON and equals the one `vpd.circuits.graph_for_prompt` builds in this process; bad input is one
line on stderr; `vpd attributions` under torchrun with two processes writes the sums of one process."""
import json
import os
import sys

import pytest
import torch

from procs import run, torchrun_or_skip
from test_decompose_cli import MICRO, random_lm_run
from vpd.circuits import graph_for_prompt, load_attributions
from vpd.cli import main
from vpd.decompose import decompose_lm, lm_config
from vpd.graphview import load_graph_json
from vpd.harvest import random_shards


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    "A micro decomposition (4 steps) of a random 1-layer target whose token shards have a word-level tokenizer."
    root = tmp_path_factory.mktemp("graph_cli")
    target, _ = random_lm_run(root, vocab=40)
    data = random_shards(root, 400)     # the same folder, now with tokenizer.json
    decompose_lm(target, data, root / "run", preset=MICRO, config=lm_config(MICRO, overrides={"steps": 4}), progress=False)
    return root / "run"


def test_graph_command_matches_the_api(micro_run, tmp_path):
    out, viewer = tmp_path / "g" / "graph.json", tmp_path / "g" / "graph.html"
    done = run([sys.executable, "-m", "vpd", "graph", str(micro_run), "--prompt", "the of and", "--target", " to",
                "--out", str(out), "--mode", "ci", "--steps", "30", "--viewer", str(viewer), "--threads", "1"],
               timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "subcomponents kept (ci pruning)" in done.stdout and "graph written to" in done.stdout
    graph = load_graph_json(out)
    assert "<svg" in viewer.read_text() or "graph-data" in viewer.read_text()
    torch.set_num_threads(1)
    expected, ex = graph_for_prompt(micro_run, "the of and", " to", "ci", 30)
    assert [n["node_id"] for n in graph["nodes"]] == [n["node_id"] for n in expected["nodes"]]
    assert len([n for n in graph["nodes"] if n["feature_type"] == "subcomponent"]) == ex.pruned.n_kept
    got = {(l["source"], l["target"]): l["weight"] for l in graph["links"]}
    want = {(l["source"], l["target"]): l["weight"] for l in expected["links"]}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) <= 1e-5 * (1 + abs(want[k])) for k in want)
    assert graph["metadata"]["scores"] == pytest.approx(ex.scores, rel=1e-5, abs=1e-7)


def test_one_line_errors(micro_run, tmp_path, capsys):
    cases = {("graph", str(tmp_path), "--prompt", "the", "--out", str(tmp_path / "g.json")):
                 "is not a language-model decomposition run",
             ("graph", str(micro_run), "--prompt", "the", "--out", str(tmp_path)): "is a directory",
             ("graph", str(micro_run), "--prompt", "the", "--out", str(tmp_path / "g.json"), "--mode", "x"):
                 "invalid choice: 'x'",
             ("graph", str(micro_run), "--prompt", "the", "--out", str(tmp_path / "g.json"), "--steps", "0"):
                 "--steps: must be at least 1"}
    for argv, message in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not (tmp_path / "g.json").exists()


def test_attributions_torchrun_matches_one_process(micro_run, tmp_path):
    "Two torchrun processes, each summing half of the batches, write the sums one process writes."
    torchrun = torchrun_or_skip()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "vpd", "attributions", str(micro_run), "--tokens", "96", "--batch-size", "2", "--threads", "1"]
    for cmd, out in (([sys.executable], tmp_path / "one"), ([torchrun, "--standalone", "--nproc_per_node", "2"], tmp_path / "two")):
        done = run(cmd + args + ["--out", str(out)], timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_attributions(tmp_path / "one"), load_attributions(tmp_path / "two")
    assert one.n_tokens == two.n_tokens == 96
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["world_size"] == 2
    assert one.signed.keys() == two.signed.keys() and len(one.signed) > 0
    for pair in one.signed:
        torch.testing.assert_close(two.signed[pair], one.signed[pair], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(two.absolute[pair], one.absolute[pair], rtol=1e-5, atol=1e-6)
    for name in one.ci_sum:
        torch.testing.assert_close(two.ci_sum[name], one.ci_sum[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(two.sq_sum[name], one.sq_sum[name], rtol=1e-5, atol=1e-6)
