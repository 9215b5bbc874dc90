"""The HTTP API against real PostgreSQL and RabbitMQ: queries, errors, auth, OpenAPI."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
import schemathesis
from aio_pika.abc import AbstractChannel, AbstractQueue
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi import unregister_string_format

from consumer.core.settings import Settings
from consumer.http.app import create_app, render_openapi
from consumer.queries.filters import encode_cursor
from contracts import ControlPause, ControlResume, decode
from contracts._types import parse_timestamp
from tests.support.seed import Seeded, SeededDb, ago
from tests.support.traffic import collect

TOKEN = "s3cr3t-token"
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def api(settings: Settings, *, token: str | None = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app for ``settings`` (lifespan run, so the pool exists)."""
    app = create_app(
        settings.model_copy(update={"api_token": SecretStr(token) if token is not None else None})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskledger.test") as c:
            yield c


@pytest.fixture
def read_settings(seeded_db: SeededDb, amqp_url: str, prefix: str) -> Settings:
    """Settings on the module's shared seeded database (and this test's broker prefix)."""
    return Settings(database_url=seeded_db.url, amqp_url=amqp_url, prefix=prefix)


@pytest.fixture
async def client(read_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on the shared seeded database (tests with it must not write)."""
    async with api(read_settings) as c:
        yield c


@pytest.fixture
async def write_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on this test's own database."""
    async with api(settings) as c:
        yield c


def task_ids(body: dict[str, Any]) -> set[str]:
    return {item["task_id"] for item in body["items"]}


# --- the seeds' questions over HTTP ---------------------------------------------------------


async def test_kuma_changes_in_the_past_week(client: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await client.get("/api/v1/audit/by-service/kuma", params={"since": "7d"})
    assert r.status_code == 200, r.text
    expected = {
        str(seeded[n]) for n in ("kuma_deploy", "kuma_rollout", "kuma_restart", "kuma_dns_dep")
    }
    assert task_ids(r.json()) == expected
    same = await client.get("/api/v1/audit/tasks", params={"service": "kuma", "since": "7d"})
    assert task_ids(same.json()) == expected
    deploys = await client.get(
        "/api/v1/audit/tasks", params={"intent": "deploy_kuma", "since": "7d"}
    )
    assert task_ids(deploys.json()) == {str(seeded["kuma_deploy"]), str(seeded["kuma_rollout"])}


async def test_failures_by_cause(client: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await client.get("/api/v1/audit/failures")
    body = r.json()
    assert r.status_code == 200
    assert body["by_cause"] == {"resource": 2, "application": 1, "dependency": 1}
    assert body["by_type"]["OOMKilled"] == 2 and body["total"] == 4
    resource = (
        await client.get("/api/v1/audit/failures", params={"error_cause": "resource"})
    ).json()
    assert task_ids(resource) == {str(seeded["dns_oom"]), str(seeded["gpu_oom"])}


async def test_task_timeline(client: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await client.get(f"/api/v1/tasks/{seeded['kuma_deploy']}")
    assert r.status_code == 200
    body = r.json()
    assert body["task"]["status"] == "completed"
    kinds = [e["kind"] for e in body["timeline"]]
    assert kinds.count("step") == 3 and kinds.count("pause") == 2
    assert body["timeline"][0]["event"]["event_type"] == "task.requested"


async def test_pause_queue_and_operator_actions(client: httpx.AsyncClient, seeded: Seeded) -> None:
    view = (await client.get("/api/v1/pause-queue")).json()
    assert [e["task_id"] for e in view["entries"]] == [
        str(seeded.unrequested_waiting),
        str(seeded["pending"]),
    ]
    assert view["entries"][0]["held"] is True
    assert view["entries"][1]["required"] == {"gpu_vram_mb": 0, "cpu_cores": 2.0, "memory_mb": 4096}
    recent = (await client.get("/api/v1/operator-actions", params={"since": "1d"})).json()
    assert [a["actor"] for a in recent] == ["bob"]


async def test_filters_combine_over_http(client: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await client.get(
        "/api/v1/audit/tasks",
        params=[("status", "pending"), ("status", "rejected"), ("since", ago(days=30).isoformat())],
    )
    assert task_ids(r.json()) == {str(seeded["pending"]), str(seeded["rejected"])}
    both = await client.get(
        "/api/v1/audit/tasks",
        params=[("service", "kuma"), ("service", "dns"), ("service_mode", "all")],
    )
    assert task_ids(both.json()) == {str(seeded["kuma_dns_dep"])}
    infra_failed = await client.get(
        "/api/v1/audit/tasks",
        params={
            "status": "failed",
            "agent_type": "infra",
            "error_cause": "resource",
            "until": "1d",
        },
    )
    assert task_ids(infra_failed.json()) == {str(seeded["dns_oom"])}


async def test_pagination_over_http(client: httpx.AsyncClient, seeded: Seeded) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    for _ in range(10):
        body = (await client.get("/api/v1/audit/tasks", params=params)).json()
        seen += [i["task_id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert len(seen) == len(set(seen)) == 14


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/audit/tasks", {"since": "yesterday"}),
        ("/api/v1/audit/tasks", {"since": "99999999999999d"}),
        ("/api/v1/audit/tasks", {"status": "bogus"}),
        ("/api/v1/audit/tasks", {"limit": 0}),
        ("/api/v1/audit/tasks", {"limit": 501}),
        ("/api/v1/audit/tasks", {"cursor": "not-a-cursor"}),
        ("/api/v1/audit/tasks", {"intent": "!!"}),
        ("/api/v1/audit/tasks", {"service": "a\x00b"}),
        ("/api/v1/audit/tasks", {"service_mode": "some"}),
        ("/api/v1/audit/failures", {"error_cause": "gremlins"}),
        ("/api/v1/audit/by-service/%00", {}),
        ("/api/v1/tasks/not-a-uuid", {}),
        ("/api/v1/operator-actions", {"since": "soon"}),
    ],
)
async def test_invalid_parameters_give_422_json(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text


async def test_unknown_task_gives_404_json(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/api/v1/tasks/{uuid4()}")
    assert r.status_code == 404
    assert r.json()["error"].startswith("no task")
    missing = await client.get("/api/v1/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


async def test_database_down_gives_503_json(read_settings: Settings) -> None:
    down = read_settings.model_copy(
        update={"database_url": SecretStr("postgresql://postgres@127.0.0.1:1/none")}
    )
    async with api(down) as c:
        r = await c.get("/api/v1/audit/tasks")
        assert r.status_code == 503 and "error" in r.json()
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"]["database"].startswith("unavailable")
        assert ready.json()["detail"]["broker"] == "ok"
        assert (await c.get("/healthz")).status_code == 200


async def test_refused_login_gives_503_with_the_reason(read_settings: Settings) -> None:
    url = read_settings.dsn.replace("postgres@", "tl_no_such_role:s3cret@", 1)
    refused = read_settings.model_copy(update={"database_url": SecretStr(url)})
    async with api(refused) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["detail"]["database"]
        assert reason.startswith("refused:") and "tl_no_such_role" in reason, reason
        assert "SQLSTATE 28" in reason and "s3cret" not in ready.text


async def test_probes_and_metrics(read_settings: Settings) -> None:
    async with api(read_settings) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
        await c.get("/api/v1/audit/tasks")
        metrics = await c.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert (
            'taskledger_api_request_duration_seconds_count{method="GET",route="/api/v1/audit/tasks"'
            in metrics.text
        )
    broker_down = read_settings.model_copy(
        update={"amqp_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    async with api(broker_down) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"]["broker"].startswith("unavailable")
        assert "guest:guest" not in ready.text


async def test_dlq_summary_needs_the_token(
    client: httpx.AsyncClient, topology: AbstractChannel
) -> None:
    assert (await client.get("/api/v1/dlq/summary")).status_code == 401
    wrong = await client.get("/api/v1/dlq/summary", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    r = await client.get("/api/v1/dlq/summary", headers={"Authorization": f"Bearer {TOKEN}"})
    if importlib.util.find_spec("consumer.dlq") is None:
        # consumer/dlq.py is another change; until it lands the endpoint says so.
        assert r.status_code == 503 and "not installed" in r.json()["error"]
    else:
        assert r.status_code == 200, r.text


# --- auth -----------------------------------------------------------------------------------

PAUSE_ALL = {"scope": "all", "reason": "maintenance"}


async def test_mutations_need_the_token(client: httpx.AsyncClient) -> None:
    no_header = await client.post("/api/v1/pause-queue/pause", json=PAUSE_ALL)
    assert no_header.status_code == 401
    assert no_header.headers["www-authenticate"].startswith("Bearer")
    assert no_header.json()["error"] == "missing bearer token"
    basic = await client.post(
        "/api/v1/pause-queue/pause", json=PAUSE_ALL, headers={"Authorization": "Basic Ym9iOng="}
    )
    assert basic.status_code == 401
    for path in (
        "/api/v1/pause-queue/pause",
        "/api/v1/pause-queue/resume",
        f"/api/v1/pause-queue/{uuid4()}/force",
    ):
        wrong = await client.post(path, json=PAUSE_ALL, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, path
        assert wrong.json()["error"] == "invalid bearer token"
    unicode = await client.post(
        "/api/v1/pause-queue/pause",
        json=PAUSE_ALL,
        headers={"Authorization": "Bearer \xe9t\xe9".encode("latin-1")},
    )
    assert unicode.status_code == 403
    # Auth comes before body validation: no probing without a token.
    assert (await client.post("/api/v1/pause-queue/pause", json={"x": 1})).status_code == 401


async def test_mutations_disabled_without_a_configured_token(read_settings: Settings) -> None:
    async with api(read_settings, token=None) as c:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            r = await c.post("/api/v1/pause-queue/pause", json=PAUSE_ALL, headers=headers)
            assert r.status_code == 403
            assert "disabled" in r.json()["error"]
        # Reads stay open.
        assert (await c.get("/api/v1/pause-queue")).status_code == 200


async def test_mutations_with_the_token_publish_control_events(
    write_client: httpx.AsyncClient,
    control_queue: AbstractQueue,
    pool: asyncpg.Pool,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    task_id = uuid4()
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    pause = await write_client.post(
        "/api/v1/pause-queue/pause",
        json={"scope": "task", "task_id": str(task_id), "reason": "wait", "resume_after": until},
        headers=auth,
    )
    assert pause.status_code == 202, pause.text
    resume = await write_client.post(
        "/api/v1/pause-queue/resume", json={"scope": "all"}, headers=auth
    )
    assert resume.status_code == 202, resume.text
    force = await write_client.post(f"/api/v1/pause-queue/{task_id}/force", headers=auth)
    assert force.status_code == 202, force.text
    assert force.json()["action"] == "force" and force.json()["actor"] == "api"

    events = [decode(m.body, m.routing_key) for m in await collect(control_queue, 3)]
    assert [str(e.id) for e in events] == [
        pause.json()["event_id"],
        resume.json()["event_id"],
        force.json()["event_id"],
    ]
    assert events[0].payload(ControlPause).task_id == task_id
    assert events[0].source == "ops/api"
    assert events[1].payload(ControlResume).task_id is None
    assert events[2].payload(ControlResume).force is True
    rows = await pool.fetch("SELECT action, actor FROM operator_actions ORDER BY id")
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("pause", "api"),
        ("resume", "api"),
        ("force", "api"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "task"},
        {"scope": "all", "task_id": str(uuid4())},
        {"scope": "everything"},
        {"scope": "all", "extra": 1},
        {"scope": "all", "resume_after": "2026-01-01T00:00:00"},  # naive
        {"scope": "all", "resume_after": "2000-01-01T00:00:00Z"},  # in the past
        {"scope": "all", "reason": "nul\x00byte"},
    ],
)
async def test_invalid_control_bodies_give_422(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    r = await client.post(
        "/api/v1/pause-queue/pause", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_document_is_checked_in() -> None:
    checked_in = ROOT / "docs" / "openapi.json"
    assert checked_in.exists(), "run: python -m consumer.http.app docs/openapi.json"
    assert json.loads(checked_in.read_text()) == json.loads(render_openapi()), (
        "docs/openapi.json drifted from the API: run `python -m consumer.http.app docs/openapi.json`"
    )


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.json() == json.loads(render_openapi())


@pytest.fixture
def api_schema(read_settings: Settings, topology: AbstractChannel) -> Iterator[Any]:
    """The served OpenAPI document of an app on the seeded database (for schemathesis)."""
    app = create_app(read_settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    # format: cursor (a next_cursor this API issued)
    schemathesis.openapi.format("cursor", st.builds(encode_cursor, _CURSOR_TIMES, st.uuids()))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.hook("filter_body")(_future_resume_after)
    yield schema
    schemathesis_asgi.shutdown_lifespans()
    unregister_string_format("cursor")


def _future_resume_after(context: Any, body: Any) -> bool:
    """A ``resume_after`` must lie in the future, which JSON Schema cannot say: leave
    bodies with a past one (refused with 422) out of generation."""
    if not isinstance(body, dict) or not isinstance(body.get("resume_after"), str):
        return True
    try:
        return parse_timestamp(body["resume_after"]) > datetime.now(UTC)
    except ValueError:
        return True  # not a timestamp at all: an invalid body, refused as such


_CURSOR_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)


#: Every schemathesis check that applies to this API. Left out: ``use_after_free`` and
#: ``ensure_resource_availability`` (the API creates no resources a later call could
#: find or miss), ``object_level_authorization`` (one token, no per-object owners) and
#: ``max_response_time`` (timing belongs to the benchmarks).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    ignored_auth,
    missing_required_header,
    unsupported_method,
]


def _fuzz(strategy: Any, examples: int) -> None:
    """Send ``examples`` generated requests; fail on the first failed check (hypothesis
    shrinks it)."""

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    run()


def test_no_server_errors(api_schema: Any) -> None:
    """Schemathesis over the OpenAPI document, every applicable check: valid requests are
    accepted, invalid ones refused with a documented 4xx, never a 5xx, and every response
    matches its documented status, content type and schema.

    Open operations get 15 valid and 8 invalid examples. Operations behind the token get a few
    without it (all refused) and, with it, valid ones (a POST publishes a control event)
    and invalid ones (refused by validation).
    """
    auth = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    documented = sum(len(methods) for methods in json.loads(render_openapi())["paths"].values())
    assert len(operations) == documented >= 13
    for operation in operations:
        takes_input = bool(operation.path_parameters or operation.query or operation.body)
        guarded = bool(operation.definition.raw.get("security"))
        headers = auth if guarded else None
        if guarded:
            _fuzz(operation.as_strategy(GenerationMode.POSITIVE), 3)
        _fuzz(operation.as_strategy(GenerationMode.POSITIVE, headers=headers), 5 if guarded else 15)
        if takes_input:  # only an operation that takes input can be sent an invalid one
            _fuzz(operation.as_strategy(GenerationMode.NEGATIVE, headers=headers), 8)
