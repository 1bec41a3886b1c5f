"""Subprocesses for tests that cannot hang and leave nothing running.

Every command starts in a session of its own (`start_new_session=True`) and has a hard deadline. On a timeout,
an exception or a finished test, the command's process group is killed with `os.killpg`, and so is the group of
every process below it: torchrun starts each rank in a session of its own, so killing torchrun's group alone
would leave its ranks running. The process tree is read from /proc before anything is killed, because a rank
whose parent has died is re-parented and can no longer be found from the test.

Output goes to temporary files rather than pipes, so a stray process holding a pipe open cannot block the test.
With PYTHONFAULTHANDLER set in the command's environment, a command that runs past its deadline is first sent
SIGABRT, so every Python process of the tree prints its threads' stacks into the captured stderr before it dies.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence


class Hung(AssertionError):
    "A command ran past its deadline (or never reached its condition); it has been killed with its whole tree."


def _children() -> dict[int, list[int]]:
    "Parent pid -> child pids of every process on the machine, from /proc."
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:        # the process ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])   # the name in parentheses may contain spaces
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    "`pid` and all of its living descendants."
    kids, tree, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += kids.get(p, [])
    return tree


def _finished(pid: int) -> bool:
    "Whether process `pid` has ended (gone, or a zombie waiting to be reaped)."
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _dump_stacks(pids: list[int], env: dict | None) -> None:
    """With faulthandler enabled in `env`, SIGABRT each process so it prints its Python stacks.

    One process at a time, each after the previous one has ended (at most 2 s each): the processes share one
    stderr, and stacks written at the same moment would interleave line by line."""
    if not (env if env is not None else os.environ).get("PYTHONFAULTHANDLER"):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGABRT)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 2
        while not _finished(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the process group of `proc` and of each of its descendants, then reap `proc`; returns the pids found.

    Safe to call on a finished `proc`: it then only clears whatever is left in its process group."""
    found = process_tree(proc.pid) if proc.poll() is None else [proc.pid]
    for pid in found:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):   # already gone (or a zombie whose group is gone)
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # the session's own group, even if its leader has exited
    except ProcessLookupError:
        pass
    proc.wait()
    return found


def _tail(f, n: int = 3000) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")[-n:]


def _no_core_files() -> None:
    "In the child before exec: a process aborted to dump its stacks must not write a core file."
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _start(cmd: Sequence[str], env, cwd, out, err) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_no_core_files)


def _result(cmd, proc, out, err) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([str(c) for c in cmd], proc.returncode, _tail(out, 10**7), _tail(err, 10**7))


def run(cmd: Sequence[str], timeout: float, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    "Run `cmd` to completion within `timeout` seconds (text output captured); on overrun kill its tree and raise `Hung`."
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = _start(cmd, env, cwd, out, err)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = process_tree(proc.pid)
            _dump_stacks(tree, env)
            pids = kill_tree(proc)
            raise Hung(f"{' '.join(map(str, cmd))} ran past {timeout} s; killed processes {sorted(set(tree + pids))}.\n"
                       f"stderr tail:\n{_tail(err, 20_000)}") from None
        finally:
            kill_tree(proc)   # an exception (e.g. KeyboardInterrupt) while waiting, or leftovers in the group
        return _result(cmd, proc, out, err)


def signal_when(cmd: Sequence[str], ready: Callable[[], bool], timeout: float, sig: int = signal.SIGTERM,
                env: dict | None = None, cwd=None, poll: float = 0.05) -> subprocess.CompletedProcess:
    """Start `cmd`; once `ready()` is true send `sig` to its process group, then wait for it to exit.

    The whole call (waiting for the condition and for the exit) has `timeout` seconds. Raises `Hung` if the
    condition or the exit does not come in time, AssertionError if the command exits before the condition;
    either way, and on any exception, nothing started here is left running."""
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = _start(cmd, env, cwd, out, err)
        try:
            while not ready():
                if proc.poll() is not None:
                    raise AssertionError(f"{' '.join(map(str, cmd))} exited with status {proc.returncode} before "
                                         f"the condition was met.\nstderr tail:\n{_tail(err)}")
                if time.monotonic() > deadline:
                    raise Hung(f"{' '.join(map(str, cmd))}: condition not met within {timeout} s.\n"
                               f"stderr tail:\n{_tail(err)}")
                time.sleep(poll)
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _dump_stacks(process_tree(proc.pid), env)
                raise Hung(f"{' '.join(map(str, cmd))} did not exit within {timeout} s of its start after signal "
                           f"{sig}.\nstderr tail:\n{_tail(err, 20_000)}") from None
        finally:
            kill_tree(proc)
        return _result(cmd, proc, out, err)


def has_lines(path: Path, n: int) -> Callable[[], bool]:
    "A condition for `signal_when`: `path` exists and has at least `n` lines."
    def ready() -> bool:
        try:
            return len(Path(path).read_text().splitlines()) >= n
        except FileNotFoundError:
            return False
    return ready


def torchrun_or_skip() -> str:
    "The torchrun executable beside this Python (or on PATH); skips the calling test when it or gloo is missing."
    import shutil
    import sys

    import pytest
    import torch
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    return torchrun
