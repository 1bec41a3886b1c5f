"""Run the 2-rank (torchrun) tests N times in a row and count passes, hangs and failures.

    .venv/bin/python tests/stress_ddp.py -n 20                  # the default 2-rank tests, 20 rounds
    .venv/bin/python tests/stress_ddp.py -n 5 tests/test_ddp_decompose.py

Each round is one pytest process under a hard deadline (tests/procs.py: own session, the whole tree killed on
overrun, so no rank is ever left behind). A round is a *hang* when pytest overran its deadline or a test's own
subprocess deadline fired (procs.Hung); Python stacks of the hung processes are in its log (faulthandler is on).
Logs of rounds that did not pass go to --logs. Exit status 0 only if every round passed.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from procs import Hung, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TWO_RANK_TESTS = ["tests/test_target.py::test_ddp_two_ranks_match_one_process", "tests/test_ddp_decompose.py",
                  "tests/test_decompose_cli.py::test_torchrun_matches_one_process"]


def one_round(tests: list[str], timeout: float) -> tuple[str, str]:
    "('pass' | 'hang' | 'fail', full output) of one pytest run of `tests`."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    try:
        r = run(cmd, timeout=timeout, env=env, cwd=ROOT)
    except Hung as e:
        return "hang", str(e)
    out = r.stdout + r.stderr
    if r.returncode == 0:
        return "pass", out
    return ("hang" if "procs.Hung" in out or "Hung:" in out else "fail"), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tests", nargs="*", default=TWO_RANK_TESTS, help="pytest node ids (default: the 2-rank tests)")
    p.add_argument("-n", type=int, default=20, help="rounds")
    p.add_argument("--timeout", type=float, default=900, help="seconds per round, for the whole pytest run")
    p.add_argument("--logs", default="stress_logs", help="directory for the logs of rounds that did not pass")
    a = p.parse_args(argv)
    counts = {"pass": 0, "hang": 0, "fail": 0}
    for i in range(1, a.n + 1):
        start = time.monotonic()
        verdict, out = one_round(a.tests, a.timeout)
        counts[verdict] += 1
        if verdict != "pass":
            Path(a.logs).mkdir(parents=True, exist_ok=True)
            (Path(a.logs) / f"round_{i}_{verdict}.log").write_text(out)
        print(f"round {i}/{a.n}: {verdict} ({time.monotonic() - start:.0f} s)", flush=True)
    print(f"{counts['pass']} passed, {counts['hang']} hung, {counts['fail']} failed out of {a.n} rounds"
          + (f"; logs in {a.logs}/" if counts["pass"] < a.n else ""))
    return 0 if counts["pass"] == a.n else 1


if __name__ == "__main__":
    sys.exit(main())
