"""The subprocess helpers of the tests: deadlines hold and nothing is left running, even a grandchild in its own
session (as torchrun starts its ranks)."""
import os
import sys
import time

import pytest

from procs import Hung, _finished, has_lines, run, signal_when

# Deadline of the tests that kill a tree of Python processes: long enough for two interpreters to start and
# reach their sleep on a loaded 2-core machine (the tests assert where the tree was when it was killed).
STARTUP = 8

# A parent that starts a child in a new session (like torchrun's ranks), writes the child's pid, and waits forever.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    "Whether `pid` is gone within `seconds` (a killed orphan is reaped by init shortly after)."
    deadline = time.monotonic() + seconds
    while not _finished(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _finished(pid)


def test_run_returns_output_and_status():
    r = run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_timeout_kills_the_whole_tree(tmp_path):
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(Hung, match=f"ran past {STARTUP} s"):
        run([sys.executable, "-c", TREE, str(pidfile)], timeout=STARTUP)
    assert time.monotonic() - start < STARTUP + 8
    assert wait_gone(int(pidfile.read_text())), "the grandchild in its own session survived"


def test_a_hung_python_tree_prints_its_stacks_when_faulthandler_is_on(tmp_path):
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with pytest.raises(Hung, match="most recent call first") as e:
        run([sys.executable, "-c", TREE, str(tmp_path / "child.pid")], timeout=STARTUP, env=env)
    assert 'File "<string>", line 5 in <module>' in str(e.value)   # where the parent sleeps
    assert wait_gone(int((tmp_path / "child.pid").read_text()))


def test_signal_when_signals_the_group_once_ready(tmp_path):
    log = tmp_path / "log"
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
              "for i in range(600):\n"
              f"    open({str(log)!r}, 'a').write(f'{{i}}\\n'); time.sleep(0.05)\n")
    r = signal_when([sys.executable, "-c", script], has_lines(log, 3), timeout=30)
    assert r.returncode == 42
    assert len(log.read_text().splitlines()) >= 3


def test_signal_when_cleans_up_if_the_condition_never_comes(tmp_path):
    pidfile = tmp_path / "child.pid"
    with pytest.raises(Hung, match="condition not met"):
        signal_when([sys.executable, "-c", TREE, str(pidfile)], has_lines(tmp_path / "never", 1), timeout=STARTUP)
    assert wait_gone(int(pidfile.read_text()))


def test_signal_when_reports_an_early_exit(tmp_path):
    with pytest.raises(AssertionError, match="exited with status 5 before"):
        signal_when([sys.executable, "-c", "import sys; sys.exit(5)"], has_lines(tmp_path / "never", 1), timeout=30)


def test_a_process_that_ignores_the_signal_is_killed(tmp_path):
    log = tmp_path / "log"
    script = ("import signal, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              f"open({str(log)!r}, 'w').write('up\\n'); time.sleep(600)\n")
    with pytest.raises(Hung, match="did not exit"):
        signal_when([sys.executable, "-c", script], has_lines(log, 1), timeout=STARTUP)
