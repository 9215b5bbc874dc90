"""Running the real `taskledger` CLI as subprocesses (acceptance and chaos tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from consumer.core.childenv import child_env
from consumer.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess pointed at the test's database, broker and prefix,
    with the test's batch linger and shutdown budget, unbuffered output."""
    return child_env(settings, "batch_linger_ms", "shutdown_timeout_s",
                     **{"PYTHONUNBUFFERED": "1", **extra})  # fmt: skip


def cli_command(*args: str) -> list[str]:
    """The argv that runs `taskledger ARGS` with this interpreter."""
    return [sys.executable, "-m", "consumer.cli", *args]


async def run_cli(
    settings: Settings, *args: str, timeout: float = 120, **env: str
) -> tuple[int, str, str]:
    """Run `taskledger ARGS` to completion; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *cli_command(*args), env=cli_env(settings, **env), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()  # never leave it running past the test
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Service:
    """A `taskledger run` subprocess."""

    settings: Settings
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    async def start(self) -> Service:
        """Start it; stderr goes to a log file (read it with :meth:`log`)."""
        import tempfile

        fd, name = tempfile.mkstemp(prefix="taskledger-run-", suffix=".log")
        self.log_path = Path(name)
        self.proc = await asyncio.create_subprocess_exec(
            *cli_command("run", *self.args), env=cli_env(self.settings, **self.env), cwd=ROOT,
            stdout=fd, stderr=fd,
        )  # fmt: skip
        os.close(fd)
        return self

    def kill(self) -> None:
        """kill -9."""
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM."""
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 60) -> int:
        """Wait for the exit code."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def log(self) -> str:
        """What it wrote to stdout/stderr."""
        return self.log_path.read_text() if self.log_path else ""

    async def close(self) -> None:
        """Kill it if still running and remove its log."""
        self.kill()
        if self.proc is not None:
            await self.proc.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
