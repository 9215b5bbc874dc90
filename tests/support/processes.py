"""Running the real `taskledger` CLI as subprocesses (acceptance and chaos tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess pointed at the test's database, broker and prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEDGER_")}
    env.update(
        TASKLEDGER_DATABASE_URL=settings.dsn,
        TASKLEDGER_AMQP_URL=settings.amqp,
        TASKLEDGER_PREFIX=settings.prefix,
        TASKLEDGER_BATCH_LINGER_MS=str(settings.batch_linger_ms),
        TASKLEDGER_SHUTDOWN_TIMEOUT_S=str(settings.shutdown_timeout_s),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


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
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
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
