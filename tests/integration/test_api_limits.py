"""Limits before work: auth before the body, capped bodies, bounded database waits.

An unauthenticated or oversized request is refused before its body is read; a read that
hangs in PostgreSQL (a lock, a slow plan) answers 503 within the configured timeouts and
never starves the pool; a ``resume_after`` the capacity handler cannot apply is refused
with 422, not accepted and dead-lettered later.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractQueue
from pydantic import SecretStr

from consumer.core.settings import Settings
from consumer.http.app import create_app
from consumer.http.limits import MAX_BODY_BYTES
from contracts import ControlPause, decode
from tests.support.processes import cli_command, cli_env
from tests.support.traffic import collect

TOKEN = "limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAUSE = "/api/v1/pause-queue/pause"
CHUNK = b" " * 65536


@asynccontextmanager
async def api(settings: Settings, **update: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app for ``settings`` (with ``update`` applied), lifespan run."""
    app = create_app(settings.model_copy(update={"api_token": SecretStr(TOKEN), **update}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tl.test") as c:
            yield c


class Body:
    """A streamed request body of ``total`` bytes that counts what the app pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += len(CHUNK)
            yield CHUNK


# --- auth first, bodies capped -----------------------------------------------------------------


async def test_big_unauthenticated_post_is_refused_before_its_body_is_read(
    settings: Settings,
) -> None:
    async with api(settings) as c:
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 403)):
            body = Body(200 * 1024 * 1024)
            r = await c.post(PAUSE, content=body, headers=headers)
            assert r.status_code == status, r.text
            assert body.pulled == 0, f"{body.pulled} bytes read before the {status}"
        declared = await c.post(
            PAUSE, content=b"{}", headers={"Content-Length": str(200 * 1024 * 1024)}
        )
        assert declared.status_code == 401


async def test_bodies_over_the_cap_get_413(settings: Settings) -> None:
    async with api(settings) as c:
        declared = Body(200 * 1024 * 1024)
        r = await c.post(
            PAUSE, content=declared, headers={**AUTH, "Content-Length": str(declared.total)}
        )
        assert r.status_code == 413, r.text
        assert declared.pulled == 0
        assert "larger than" in r.json()["error"]
        streamed = Body(200 * 1024 * 1024)  # chunked: no Content-Length
        r = await c.post(PAUSE, content=streamed, headers=AUTH)
        assert r.status_code == 413, r.text
        assert streamed.pulled <= MAX_BODY_BYTES + 2 * len(CHUNK)
        ok = await c.post(PAUSE, json={"scope": "all", "reason": "x" * 900}, headers=AUTH)
        assert ok.status_code != 413
        bad_length = await c.post(PAUSE, content=b"{}", headers={**AUTH, "Content-Length": "ab"})
        assert bad_length.status_code == 400


async def test_a_real_server_answers_401_without_waiting_for_the_body(
    settings: Settings,
) -> None:
    """``taskledger api`` (uvicorn) answers a 200 MB unauthenticated POST at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(settings, TASKLEDGER_API_TOKEN=TOKEN)
    proc = await asyncio.create_subprocess_exec(
        *cli_command("api", "--port", str(port)),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(100):
                try:
                    await c.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST {PAUSE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
            + b"{"
        )
        await writer.drain()
        started = time.monotonic()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.split()[1] == b"401", status_line
        assert time.monotonic() - started < 2
        writer.close()
        await writer.wait_closed()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert b"\x1b[" not in err, "the API log carries colour escape codes"


# --- bounded database waits --------------------------------------------------------------------


async def test_a_slow_read_answers_503_and_never_starves_the_pool(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with api(settings, api_statement_timeout_ms=300, api_pool_timeout_ms=300) as c:
        assert (await c.get("/api/v1/audit/tasks")).status_code == 200
        async with pool.acquire() as holder, holder.transaction():
            # Every read of tasks now waits for this lock: as a slow query would, or worse.
            await holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answers = await asyncio.gather(
                *(c.get("/api/v1/audit/tasks", params={"intent": "deploy_kuma"}) for _ in range(24))
            )
            elapsed = time.monotonic() - started
            assert {r.status_code for r in answers} == {503}, [r.text for r in answers]
            for r in answers:
                message = r.json()["error"]
                assert "statement timeout" in message or "busy" in message, message
                assert r.headers["retry-after"] == "1"
            # 24 calls on 8 connections, each held at most ~0.3 s: bounded, not queued forever
            assert elapsed < 5, elapsed
            assert (await c.get("/healthz")).status_code == 200
        # The lock is gone: the pool serves again at once.
        assert (await c.get("/api/v1/audit/tasks")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200


# --- resume_after the capacity handler can apply -------------------------------------------------


BAD_RESUME_AFTER = [
    "2000-01-01T00:00:00Z",  # in the past
    (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),  # just past
    "9999-12-31T23:59:59-01:00",  # after 9999 in UTC
    "1999-12-31T23:59:59Z",  # before the contract's window
    "10000-01-01T00:00:00Z",
    "2030-01-01T00:00:00",  # naive
    "2030-01-01T00:00Z",  # no seconds
    "2030-02-30T00:00:00Z",  # no such day
    "2030-01-01T00:00:60Z",  # leap second
    "2030-01-01 00:00:00Z",  # no T
]


async def test_resume_after_the_handler_cannot_apply_gives_422(settings: Settings) -> None:
    async with api(settings) as c:
        for resume_after in BAD_RESUME_AFTER:
            body = {"scope": "all", "resume_after": resume_after}
            r = await c.post(PAUSE, json=body, headers=AUTH)
            assert r.status_code == 422, (resume_after, r.text)
            assert "resume_after" in r.json()["error"]


async def test_resume_after_in_the_window_is_published_as_the_contract_takes_it(
    settings: Settings, control_queue: AbstractQueue
) -> None:
    async with api(settings) as c:
        for when in ("9998-12-31T23:59:59+05:00", "9999-12-31T23:59:59Z"):
            r = await c.post(PAUSE, json={"scope": "all", "resume_after": when}, headers=AUTH)
            assert r.status_code == 202, r.text
    for message in await collect(control_queue, 2):
        event = decode(message.body, message.routing_key)
        assert event.payload(ControlPause).resume_after is not None
