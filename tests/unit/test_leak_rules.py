"""The leak rules of tests/support/leaks.py: a test that leaves an asyncio task or a child
process running errors, naming it, and what it left is stopped.

Each case runs an inner pytest (a subprocess, with only the leak plugin: no services)
and reads its outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load the leak plugin and can import ``tests``."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    pytester.makeini(INI)
    pytester.makeconftest('pytest_plugins = ["tests.support.leaks"]\n')
    return pytester


def run(inner: pytest.Pytester, source: str) -> pytest.RunResult:
    inner.makepyfile(test_inner=source)
    return inner.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=120)


def test_a_leaked_task_errors_the_test_that_left_it(inner: pytest.Pytester) -> None:
    marker = inner.path / "cancelled"
    result = run(inner, f"""
import asyncio
from pathlib import Path

async def forever():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        Path({str(marker)!r}).write_text("cancelled")
        raise

async def test_leaks_a_task():
    asyncio.create_task(forever(), name="leaky")

async def test_after_it():
    pass
""")  # fmt: skip
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaks_a_task*", "*1 asyncio task(s) running*leaky (forever*"]
    )
    assert marker.read_text() == "cancelled"


def test_a_leaked_process_errors_the_test_that_left_it(inner: pytest.Pytester) -> None:
    pid_file = inner.path / "pid"
    result = run(inner, f"""
import subprocess, sys
from pathlib import Path

def test_leaks_a_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path({str(pid_file)!r}).write_text(str(child.pid))

def test_after_it():
    pass
""")  # fmt: skip
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaks_a_process*", "*child process(es)*time.sleep(3600)*"]
    )
    pid = int(pid_file.read_text())
    assert not _alive(pid), f"the leaked process {pid} still runs"


def test_what_ends_in_time_is_no_leak(inner: pytest.Pytester) -> None:
    result = run(inner, """
import asyncio, subprocess, sys

async def test_awaits_its_task():
    await asyncio.create_task(asyncio.sleep(0.01))

async def test_task_that_is_already_finishing():
    asyncio.create_task(asyncio.sleep(0.1))  # done within the grace

async def test_process_run_to_completion():
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await proc.wait() == 0

def test_sync_subprocess():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
""")  # fmt: skip
    result.assert_outcomes(passed=4)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
