"""Fixtures of the browser tests: the console as a real ``taskledger api`` subprocess on
the test's database and prefix, a headless Chromium on it, and the consumer
(``taskledger run``) when a scenario needs it. One of each per test; every process is
stopped in a ``finally``, failed test or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from consumer.core.settings import Settings
from tests.e2e.browser import Browser, missing, start_chromium
from tests.support.processes import ROOT, Service, cli_command, cli_env
from tests.support.traffic import wait_until

TOKEN = "e2e-operator-token"
#: The consumer's timers, short so a scenario's dispatches move at once. Both processes get
#: the retry delays of the ``settings`` fixture (the ``prefix`` fixture deletes their queues).
RUN_ENV = {
    "TASKLEDGER_TIMER_INTERVAL_S": "0.2",
    "TASKLEDGER_OUTBOX_INTERVAL_S": "0.2",
    "TASKLEDGER_LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    """A ``taskledger api`` subprocess and where it listens."""

    proc: asyncio.subprocess.Process
    base: str
    log: Path

    async def wait_up(self) -> None:
        """Wait until it answers ``/healthz`` (fails at once if it exited)."""
        async with httpx.AsyncClient(base_url=self.base, timeout=2) as client:

            async def up() -> bool:
                assert self.proc.returncode is None, self.log.read_text()
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, timeout=30, what="taskledger api to answer")


@pytest.fixture
async def api(settings: Settings, topology: AbstractChannel) -> AsyncIterator[Api]:
    """``taskledger api`` started (not yet waited for) on a free port, for this test's
    database and prefix (topology declared), with the operator token :data:`TOKEN`;
    stopped afterwards, failed test or not."""
    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix="taskledger-api-", suffix=".log")
    env = cli_env(
        settings,
        TASKLEDGER_API_TOKEN=TOKEN,
        TASKLEDGER_OPERATOR="e2e",
        TASKLEDGER_RETRY_DELAYS_MS=json.dumps(settings.retry_delays_ms),  # its queue depths
    )
    proc = await asyncio.create_subprocess_exec(
        *cli_command("api", "--host", "127.0.0.1", "--port", str(port)),
        env=env, cwd=ROOT, stdout=fd, stderr=fd,
    )  # fmt: skip
    os.close(fd)
    try:
        yield Api(proc, f"http://127.0.0.1:{port}", Path(log_name))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with suppress(FileNotFoundError):
            os.unlink(log_name)


@pytest.fixture
async def browser(api: Api, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    """A headless Chromium on the console of :func:`api`. One per test, not per session:
    its renderer processes are the test's children, and a test may leave no process
    behind (tests/support/leaks.py); it starts while the API does. After the test nothing
    may be left unchecked: no console error, no failed request."""
    why = missing()
    if why is not None:  # never a skip: `make test` installs them (scripts/ensure_browser.sh)
        pytest.fail(why)
    driver = start_chromium()
    try:
        browser = Browser(driver, tmp_path_factory.getbasetemp() / "screenshots", api.base)
        await api.wait_up()
        yield browser
        problems = browser.problems()
        assert not problems, "after the test: " + "; ".join(problems)
    finally:
        driver.quit()


@pytest.fixture
def console(browser: Browser) -> str:
    """The console's base URL (the browser is on it)."""
    return browser.base


@pytest.fixture
async def consumer(
    settings: Settings, topology: AbstractChannel, api: Api
) -> AsyncIterator[Service]:
    """``taskledger run`` (both handlers) for this test's database and prefix, consuming.
    Started after the API's process (``api``), so that the two boot side by side."""
    env = {**RUN_ENV, "TASKLEDGER_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms)}
    service = await Service(settings, (), env).start()
    try:

        async def consuming() -> bool:
            assert service.proc is not None and service.proc.returncode is None, service.log()
            return service.log().count("consuming") >= 2

        await wait_until(consuming, timeout=30, what="taskledger run to consume")
        yield service
        service.terminate()
        assert await service.wait(30) == 0, service.log()
    finally:
        await service.close()
