"""The HTTP API never answers 500 to hostile input, and documents itself offline.

Cursors of any JSON shape, times that overflow once converted to UTC, documents nested
hundreds deep in the record: each gets a 4xx or a 200, never a server error. ``/docs``
renders without the internet, and the README's route table is the app's.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractChannel
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from consumer.core.settings import Settings
from consumer.dlq.lease import dead_letter_lease
from consumer.http.app import create_app
from consumer.http.docs import route_table
from consumer.http.limits import DEEP_MARKER, MAX_JSON_DEPTH
from consumer.http.routes import require_token
from tests.support.seed import SeededDb, add_event, add_task

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "robust-token"
READS = (
    "/api/v1/audit/tasks",
    "/api/v1/audit/failures",
    "/api/v1/audit/by-service/kuma",
)


def cursor_of(value: Any) -> str:
    """A cursor carrying ``value`` (what a hostile client may craft)."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.fixture
def read_settings(seeded_db: SeededDb, amqp_url: str, prefix: str) -> Settings:
    """Settings on the module's shared seeded database."""
    return Settings(
        database_url=seeded_db.url,
        amqp_url=amqp_url,
        prefix=prefix,
        api_token=SecretStr(TOKEN),
    )


@pytest.fixture
async def client(read_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on the shared seeded database (read only)."""
    app = create_app(read_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tl.test") as c:
            yield c


# --- cursors and times ------------------------------------------------------------------------

NOW = "2026-11-01T10:00:00+00:00"
HOSTILE_CURSORS = [
    [NOW, 5],  # task part a number
    [NOW, [str(uuid4())]],  # task part a list
    [NOW, None],
    [5, str(uuid4())],
    ["0001-01-01T00:00:00+01:00", str(uuid4())],  # before year 1 in UTC
    ["9999-12-31T23:59:59-01:00", str(uuid4())],  # after year 9999 in UTC
    ["2026-11-01T10:00:00", str(uuid4())],  # naive
    [NOW, "not-a-uuid"],
    [NOW, str(uuid4()), "extra"],
    {NOW: str(uuid4()), "b": 1},
    "ab",
    12,
    None,
    [],
]


async def test_hostile_cursors_give_422(client: httpx.AsyncClient) -> None:
    for value in HOSTILE_CURSORS:
        for path in READS:
            r = await client.get(path, params={"cursor": cursor_of(value)})
            assert r.status_code == 422, (value, path, r.text)
            assert "cursor" in r.json()["error"]


BAD_TIMES = [
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after 9999 in UTC
    "1999-12-31T23:59:59Z",  # before the contract's window
    "99999999999d",
    "100000d",
    "1e9w",
    "2026-01-01",  # no time
    "2026-11-01T10:00:00",  # no offset
    "2026-02-30T10:00:00Z",
    "7d\n",
    "",
]


async def test_times_out_of_range_give_422(client: httpx.AsyncClient) -> None:
    for value in BAD_TIMES:
        for name in ("since", "until"):
            paths = [*READS, "/api/v1/operator-actions"] if name == "since" else list(READS)
            for path in paths:
                r = await client.get(path, params={name: value})
                assert r.status_code == 422, (value, path, r.text)
                assert name in r.json()["error"]


async def test_times_at_the_edges_are_converted_to_utc(client: httpx.AsyncClient) -> None:
    for path in (*READS, "/api/v1/operator-actions"):
        for since in ("2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", "99999w", "1s"):
            r = await client.get(path, params={"since": since})
            assert r.status_code == 200, (path, since, r.text)
    # 10:00+02:00 is 08:00 UTC: the same window as 08:00Z
    a = await client.get(READS[0], params={"since": "2020-01-01T10:00:00+02:00"})
    b = await client.get(READS[0], params={"since": "2020-01-01T08:00:00Z"})
    assert a.json() == b.json()
    for until in ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999999+05:00"):
        r = await client.get(READS[0], params={"until": until})
        assert r.status_code == 200, r.text


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
_TIMES = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
_CURSORS = st.one_of(
    _JSON, st.tuples(_TIMES, _JSON).map(list), st.tuples(_JSON, st.uuids()).map(list)
).map(lambda v: orjson.dumps(v, default=str))


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(raw=_CURSORS)
async def test_any_cursor_json_is_a_4xx(client: httpx.AsyncClient, raw: bytes) -> None:
    """Property: whatever JSON a cursor carries, the answer is 200 or 422, never 5xx."""
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")[:400]
    r = await client.get(READS[0], params={"cursor": cursor})
    assert r.status_code in (200, 422), r.text


# --- deep documents in the record -------------------------------------------------------------


def nested(depth: int) -> str:
    """A JSON object nested ``depth`` levels deep, as text."""
    return '{"a": ' * depth + "1" + "}" * depth


async def test_deeply_nested_step_output_is_cut_not_a_500(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    async with pool.acquire() as conn:
        task_id = await add_task(
            conn, status="executing", request="deep output", created_at=started
        )
        event_id = await add_event(conn, task_id, "task.step", started + timedelta(minutes=1))
        await conn.execute(
            """INSERT INTO execution_logs (event_id, task_id, step_number, agent_type, action,
                                           status, output_summary, output_full, timestamp)
               VALUES ($1, $2, 1, 'infra', 'dig', 'completed', 'deep', $3::text::jsonb, $4)""",
            event_id,
            task_id,
            nested(900),
            started + timedelta(minutes=1),
        )
    app = create_app(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tl.test") as c:
            r = await c.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text[:500]
    step = next(e for e in r.json()["timeline"] if e["kind"] == "step")
    value: Any = step["step"]["output_full"]
    for _ in range(MAX_JSON_DEPTH):
        value = value["a"]
    assert value == DEEP_MARKER


# --- docs and the route table -----------------------------------------------------------------


async def test_docs_render_from_local_assets_only(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs references a non-local URL: {url}"
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
    assert "http://" not in page.text and "https://" not in page.text
    assert '"validatorUrl": null' in page.text


def test_readme_lists_every_route() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### HTTP API routes", 1)[1].split("\n#", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"
    expected = route_table(create_app(Settings()), require_token)
    assert table == expected, (
        "the README's route table drifted: paste `python -m consumer.http.docs` into "
        "its 'HTTP API routes' section"
    )


def test_one_port_everywhere() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert '"--port", "8080"' in compose and ":8080" in compose and "8000" not in compose
    assert re.search(r"^EXPOSE 8080\b", dockerfile, re.MULTILINE)
    assert "8000" not in readme.replace("80000", "")


# --- the dead letters are held by another operation -------------------------------------------


async def test_dlq_summary_while_another_operation_holds_the_dead_letters_is_409(
    settings: Settings, topology: AbstractChannel
) -> None:
    app = create_app(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tl.test") as c:
            async with dead_letter_lease(settings):
                r = await c.get("/api/v1/dlq/summary", headers=auth)
                assert r.status_code == 409, r.text
                assert "busy" in r.json()["error"]
            free = await c.get("/api/v1/dlq/summary", headers=auth)
            assert free.status_code == 200, free.text
