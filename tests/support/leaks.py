"""Pytest plugin: a test that leaves asyncio tasks or child processes running fails.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). Two autouse fixtures wrap every
test. After the test and all its fixtures are torn down:

- asyncio tasks of the test's event loop that were started during the test and are still
  pending (after a short grace for tasks already finishing, e.g. the reader of a
  connection that was just closed) are cancelled, then the test errors, naming them;
- processes descended from the pytest process that were started during the test and are
  still alive (zombies do not count) are killed, with their process group when it is
  not pytest's own, then the test errors, naming their command lines.

An error in a fixture's teardown is reported as ``ERROR at teardown of <test>``: the run
fails and says which test leaked. Nothing here needs PostgreSQL or RabbitMQ.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

TASK_GRACE_S = 1.0
PROCESS_GRACE_S = 2.0

ProcessKey = tuple[int, int]  # (pid, start time): a pid alone may be reused


# --- asyncio tasks ---------------------------------------------------------------------


def describe_task(task: asyncio.Task[object]) -> str:
    """``name (coroutine at file:line)`` of a pending task."""
    coro = task.get_coro()
    what = getattr(coro, "__qualname__", repr(coro))
    frame = getattr(coro, "cr_frame", None)
    where = f" at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else ""
    return f"{task.get_name()} ({what}{where})"


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves asyncio tasks running; cancel them for the next test."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    pending = {t for t in asyncio.all_tasks() - before if t is not me and not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=TASK_GRACE_S)
    if not pending:
        return
    names = sorted(describe_task(t) for t in pending)
    for task in pending:
        task.cancel()
    await asyncio.wait(pending, timeout=5)
    pytest.fail(
        f"the test left {len(names)} asyncio task(s) running (cancelled now): " + "; ".join(names),
        pytrace=False,
    )


# --- child processes -------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start time, state) of every process /proc shows."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or f"pid {pid}"


def live_descendants(root: int | None = None) -> dict[ProcessKey, str]:
    """Live (not zombie) descendants of ``root`` (default: this process) -> command line."""
    root = os.getpid() if root is None else root
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        psutil = None
    if psutil is not None:
        found: dict[ProcessKey, str] = {}
        for child in psutil.Process(root).children(recursive=True):
            with suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    key = (child.pid, int(child.create_time() * 100))
                    found[key] = " ".join(child.cmdline()) or f"pid {child.pid}"
        return found
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        _, started, state = table[pid]
        if state not in ("Z", "X"):
            found[(pid, started)] = _cmdline(pid)
    return found


def kill_process(pid: int) -> None:
    """SIGKILL ``pid``, and its process group when that group is not pytest's own."""
    with suppress(ProcessLookupError, PermissionError):
        group = os.getpgid(pid)
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)


def _still_alive(keys: set[ProcessKey], timeout: float) -> set[ProcessKey]:
    deadline = time.monotonic() + timeout
    while True:
        alive = keys & live_descendants().keys()
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """Fail the test if a process it started is still alive after it; kill that process."""
    before = live_descendants().keys()
    yield
    started = {k: cmd for k, cmd in live_descendants().items() if k not in before}
    if not started:
        return
    alive = _still_alive(set(started), PROCESS_GRACE_S)
    if not alive:
        return
    for pid, _ in alive:
        kill_process(pid)
    _still_alive(alive, 5)
    names = sorted(f"pid {pid}: {started[(pid, t)]}" for pid, t in alive)
    pytest.fail(
        f"the test left {len(names)} child process(es) running (killed now): " + "; ".join(names),
        pytrace=False,
    )
