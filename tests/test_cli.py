"""The `vpd` command line: usage and input errors are one line on stderr with exit status 2, found before any work."""
import json
import os
import sys
from pathlib import Path

import pytest

import procs
from vpd.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    "Exit status, stdout and stderr of `vpd ARGV`, run in this process."
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(result, *fragments):
    status, _, err = result
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def files(tmp_path):
    "Config files with the usual mistakes, and a plain file where a directory is expected."
    (tmp_path / "malformed.yaml").write_text("steps: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- steps\n- 3\n")
    (tmp_path / "typo.yaml").write_text("minimality: {cooef: 1.0}\n")
    (tmp_path / "a_file").write_text("")
    return tmp_path


@pytest.mark.parametrize("command", [["toy", "tms-5-2"], ["target"], ["corpus"]])
def test_malformed_yaml(capsys, files, command):
    result = run(capsys, *command, "--out", files / "out", "--config", files / "malformed.yaml")
    assert_one_line_error(result, f"vpd {command[0]}: config file", "is not valid YAML")
    assert not (files / "out").exists()


@pytest.mark.parametrize("command", [["toy", "tms-5-2"], ["target"], ["corpus"]])
def test_yaml_that_is_not_a_mapping(capsys, files, command):
    result = run(capsys, *command, "--out", files / "out", "--config", files / "list.yaml")
    assert_one_line_error(result, "must hold a mapping of config keys, got a list")
    assert not (files / "out").exists()


def test_unknown_config_key_is_named(capsys, files):
    result = run(capsys, "toy", "tms-5-2", "--out", files / "out", "--config", files / "typo.yaml")
    assert_one_line_error(result, "vpd toy:", "unknown key(s) ['cooef']")
    assert not (files / "out").exists()


def test_unknown_target_config_key_is_named(capsys, files):
    (files / "target.yaml").write_text("model: {d_modle: 64}\n")
    result = run(capsys, "target", "--out", files / "out", "--config", files / "target.yaml")
    assert_one_line_error(result, "vpd target:", "d_modle")


@pytest.mark.parametrize("command", [["toy", "tms-5-2", "--out", "o"], ["target", "--out", "o"],
                                     ["decompose", "--target", "t", "--data", "d", "--out", "o"],
                                     ["bench", "toy", "tms-5-2"], ["bench", "decompose"]])
def test_zero_steps_is_an_error(capsys, command):
    result = run(capsys, *command, "--steps", "0")
    assert_one_line_error(result, "argument --steps: must be at least 1, got 0")


@pytest.mark.parametrize("command", [["toy", "tms-5-2", "--out", "o"], ["target", "--out", "o"],
                                     ["decompose", "--target", "t", "--data", "d", "--out", "o"]])
def test_negative_threads_is_an_error(capsys, command):
    result = run(capsys, *command, "--threads", "-1")
    assert_one_line_error(result, f"vpd {command[0]}: argument --threads: must be at least 1, got -1")


@pytest.mark.parametrize("command", [["toy", "tms-5-2"], ["target"], ["corpus", "--no-apt"]])
def test_out_that_is_a_file(capsys, files, command):
    result = run(capsys, *command, "--out", files / "a_file")
    assert_one_line_error(result, f"vpd {command[0]}: output directory", "is an existing file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_out_that_cannot_be_written(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run(capsys, "toy", "tms-5-2", "--out", locked / "run")
    assert_one_line_error(result, "vpd toy: output directory", "cannot be written")


def test_bench_out_is_respected(capsys, tmp_path, monkeypatch):
    "The benchmark's JSON and the toy target it trains go where --out says; nothing goes to ./runs."
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out = tmp_path / "results" / "tms.json"
    status, stdout, err = run(capsys, "bench", "toy", "tms-5-2", "--steps", "2", "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["tms.json", "tms.json.work"]
    assert list((tmp_path / "cwd").iterdir()) == []
    assert str(out) in stdout


def test_bench_unknown_preset(capsys, tmp_path):
    result = run(capsys, "bench", "decompose", "--preset", "nosuch", "--out", tmp_path / "b.json")
    assert_one_line_error(result, "vpd bench decompose: unknown decomposition preset 'nosuch'")


@pytest.mark.parametrize("command", [["toy", "nosuch", "--out", "o"], ["target", "--preset", "nosuch", "--out", "o"],
                                     ["corpus", "--preset", "nosuch", "--out", "o"], ["reproduce", "--preset", "nosuch"],
                                     ["decompose", "--preset", "nosuch", "--target", "t", "--data", "d", "--out", "o"]])
def test_unknown_preset_or_toy(capsys, command):
    assert_one_line_error(run(capsys, *command), "nosuch", "choose one of")


def test_target_with_missing_data(capsys, tmp_path):
    result = run(capsys, "target", "--out", tmp_path / "target", "--data", tmp_path / "nothing", "--steps", "1")
    assert_one_line_error(result, "vpd target:", "shards.json does not exist")


def test_evaluate_a_directory_that_is_not_a_run(capsys, tmp_path):
    result = run(capsys, "evaluate", tmp_path / "nothing")
    assert_one_line_error(result, "vpd evaluate:", "is not a language-model decomposition run")
    assert not (tmp_path / "nothing").exists()


def test_usage_errors_are_one_line(capsys):
    assert_one_line_error(run(capsys, "toy"), "vpd toy: the following arguments are required: name, --out")
    assert_one_line_error(run(capsys, "frobnicate"), "vpd: argument COMMAND: invalid choice: 'frobnicate'")


def test_version_and_presets(capsys):
    import vpd
    assert run(capsys, "--version")[:2] == (0, f"vpd {vpd.__version__}\n")
    status, out, _ = run(capsys, "presets")
    assert status == 0
    for heading in ("toys", "corpus presets", "target presets", "decomposition presets", "reproduction presets"):
        assert heading in out
    assert "  tms-5-2 " in out and "  resid-mlp-3 " in out


def test_help_is_fast_and_imports_no_stage_module():
    "`vpd --help` answers without importing torch or any stage module."
    vpd = Path(sys.executable).with_name("vpd")
    done = procs.run([vpd, "--help"], timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: vpd"), done.stderr
    probe = ("import sys; from vpd.cli import main; status = main(['--help']); "
             "heavy = [m for m in ('torch', 'vpd.runs', 'vpd.train', 'vpd.target') if m in sys.modules]; "
             "sys.exit(f'imported {heavy}' if heavy else status)")
    done = procs.run([sys.executable, "-c", probe], timeout=60)
    assert done.returncode == 0, done.stderr


def test_toy_with_a_corrupt_or_mismatched_checkpoint(capsys, tmp_path):
    "A run directory whose checkpoint cannot be used is one line naming it and the way out, not a traceback."
    run_dir = tmp_path / "run"
    (tmp_path / "steps.yaml").write_text("steps: 50\n")
    status, _, err = run(capsys, "toy", "tms-5-2", "--out", run_dir, "--config", tmp_path / "steps.yaml", "--steps", "4")
    assert status == 0, err
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4  # the flag overrides the YAML file
    (tmp_path / "other.yaml").write_text("minimality: {coeff: 0.5}\n")
    result = run(capsys, "toy", "tms-5-2", "--out", run_dir, "--steps", "4", "--config", tmp_path / "other.yaml")
    assert_one_line_error(result, "vpd toy: checkpoint", "different config")
    newest = sorted((run_dir / "decomposition" / "checkpoints").glob("step_*"))[-1]
    (newest / "weights.safetensors").write_bytes(b"not a safetensors file")
    result = run(capsys, "toy", "tms-5-2", "--out", run_dir, "--steps", "4")
    assert_one_line_error(result, "vpd toy: checkpoint", "is corrupt")


def test_interrupted_toy_exits_130_and_resumes(tmp_path):
    "SIGTERM during `vpd toy` checkpoints and exits with 130; the same command then finishes the run."
    run_dir = tmp_path / "run"
    cmd = [Path(sys.executable).with_name("vpd"), "toy", "tms-5-2", "--out", run_dir, "--steps", "600"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the second row of metrics.jsonl is the first training row (the first is the warm-up's, at step 0)
    done = procs.signal_when(cmd, procs.has_lines(run_dir / "decomposition" / "metrics.jsonl", 2), timeout=240, env=env)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "run the same command again to resume" in done.stderr.splitlines()[-1]
    done = procs.run(cmd, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 600
