"""The ops console (/ui/) against real PostgreSQL and RabbitMQ, through the API app.

Read-only pages run on the module's shared seeded database; the tests that act (replay,
hold, resume, export) use their own database and broker prefix. The browser tests of
the console (Selenium) are elsewhere; these check what the server answers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from pydantic import SecretStr

from consumer.broker import Names, declare_topology
from consumer.cli import record_verify
from consumer.core.settings import Settings
from consumer.dlq import dead_letter_lease
from consumer.http.app import create_app
from consumer.ledger.verify import verify as verify_ledger
from consumer.ui import routes_dlq
from contracts import EventType
from tests.support.dead_letters import consumer_dead_letter, depth, event_body, wait_depth
from tests.support.seed import Seeded, SeededDb

TOKEN = "ui-t0ken"
BASE = "http://console.test"


@asynccontextmanager
async def console(
    settings: Settings, *, token: str | None = TOKEN, base: str = BASE, **extra: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API app (lifespan run) for ``settings`` with ``token``."""
    update: dict[str, Any] = {"api_token": SecretStr(token) if token is not None else None}
    app = create_app(settings.model_copy(update={**update, **extra}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "no csrf field on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/ui/login", params={"next": "/ui/tasks"})
    assert form.status_code == 200
    return await client.post(
        "/ui/login", data={"token": token, "csrf": csrf_of(form.text), "next": "/ui/tasks"}
    )


def marks(html: str, name: str) -> list[str]:
    """The elements' text-free markers: every ``data-testid="name"`` occurrence."""
    return re.findall(rf'data-testid="{re.escape(name)}"', html)


async def declared(settings: Settings) -> None:
    """Declare the topology of ``settings.prefix`` (the ``prefix`` fixture deletes it)."""
    conn = await aio_pika.connect(settings.amqp)
    try:
        await declare_topology(await conn.channel(), settings)
    finally:
        await conn.close()


@pytest.fixture
def read_settings(seeded_db: SeededDb, amqp_url: str, prefix: str) -> Settings:
    return Settings(database_url=seeded_db.url, amqp_url=amqp_url, prefix=prefix)


@pytest.fixture
async def client(read_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with console(read_settings) as c:
        yield c


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.prefix)


# --- read-only pages --------------------------------------------------------------------


async def test_every_read_page_renders_the_seed(
    client: httpx.AsyncClient, seeded: Seeded, read_settings: Settings
) -> None:
    await declared(read_settings)
    overview = await client.get("/ui/")
    assert overview.status_code == 200
    assert "default-src 'self'" in overview.headers["content-security-policy"]
    html = overview.text
    assert re.search(r'data-testid="health-postgresql">ok<', html)
    assert re.search(r'data-testid="health-rabbitmq">ok<', html)
    assert re.search(r'data-testid="queue-depth-dead-count">0<', html)
    assert re.search(r'data-testid="pause-queue-size">2<', html)
    assert 'http-equiv="refresh"' in html and "never run" in html
    css = await client.get("/ui/static/console.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    assert (await client.get("/ui", follow_redirects=True)).url.path == "/ui/"
    assert "<script" not in html

    tasks = await client.get("/ui/tasks")
    assert tasks.status_code == 200 and len(marks(tasks.text, "task-row")) == 14

    detail = await client.get(f"/ui/tasks/{seeded['kuma_deploy']}")
    assert detail.status_code == 200
    assert len(re.findall(r'data-kind="step"', detail.text)) == 3
    assert f"/ui/dead-letters?task={seeded['kuma_deploy']}" in detail.text

    recent = await client.get("/ui/failures", params={"window": "12h"})
    assert recent.status_code == 200 and 'value="12h" selected' in recent.text
    failures = await client.get("/ui/failures", params={"window": "all"})
    assert failures.status_code == 200
    assert re.search(r'data-cause="resource">\s*<td><a data-testid="failure-link"', failures.text)
    assert "/ui/tasks?status=failed&amp;error_cause=resource" in failures.text

    queue = await client.get("/ui/pause-queue")
    rows = re.findall(r'data-testid="pause-row" data-task-id="([^"]+)"', queue.text)
    assert rows == [str(seeded.unrequested_waiting), str(seeded["pending"])]
    assert len(marks(queue.text, "hold-row")) == 1

    actions = await client.get("/ui/actions", params={"limit": 1})
    assert re.findall(r'data-action="([^"]+)"', actions.text) == ["pause"]
    older = re.search(r'href="/ui/actions\?cursor=([^"]+)" data-testid="next-page"', actions.text)
    assert older is not None
    second = await client.get("/ui/actions", params={"cursor": older.group(1), "limit": 1})
    assert re.findall(r'data-action="([^"]+)"', second.text) == ["replay"]
    assert 'data-testid="next-page"' not in second.text


async def test_task_search_filters_and_pages(client: httpx.AsyncClient, seeded: Seeded) -> None:
    def ids(html: str) -> set[str]:
        return set(re.findall(r'data-testid="task-row" data-task-id="([^"]+)"', html))

    # empty form fields are what a browser sends for the untouched ones
    kuma = await client.get("/ui/tasks", params={"service": "kuma", "since": "7d", "intent": ""})
    expected = {
        str(seeded[n]) for n in ("kuma_deploy", "kuma_rollout", "kuma_restart", "kuma_dns_dep")
    }
    assert ids(kuma.text) == expected
    deploys = await client.get("/ui/tasks", params={"intent": "deploy_kuma", "since": "7d"})
    assert ids(deploys.text) == {str(seeded["kuma_deploy"]), str(seeded["kuma_rollout"])}
    failed = await client.get("/ui/tasks", params={"status": "failed", "error_cause": "resource"})
    assert ids(failed.text) == {str(seeded["dns_oom"]), str(seeded["gpu_oom"])}
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    for _ in range(5):
        page = await client.get("/ui/tasks", params=params)
        seen += re.findall(r'data-testid="task-row" data-task-id="([^"]+)"', page.text)
        cursor = re.search(r'cursor=([A-Za-z0-9_-]+)" data-testid="next-page"', page.text)
        if cursor is None:
            break
        params["cursor"] = cursor.group(1)
    assert len(seen) == len(set(seen)) == 14


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/tasks?since=yesterday", 400),
        ("/ui/tasks?status=bogus", 400),
        ("/ui/tasks?intent=!!", 400),
        ("/ui/tasks?cursor=not*a*cursor", 400),
        ("/ui/tasks?cursor=AAAA", 400),
        ("/ui/tasks?limit=0", 400),
        ("/ui/failures?window=2y", 400),
        ("/ui/actions?cursor=AAAA", 400),
        ("/ui/tasks/not-a-uuid", 400),
        (f"/ui/tasks/{UUID(int=404)}", 404),
        ("/ui/no-such-page", 404),
        ("/ui/logout", 404),  # POST only
        ("/ui/pause-queue/confirm?action=hold", 303),  # not logged in: to the login page
    ],
)
async def test_bad_requests_get_friendly_pages(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    r = await client.get(path)
    assert r.status_code == status, r.text
    if status == 303:
        assert r.headers["location"].startswith("/ui/login?next=")
        return
    assert r.headers["content-type"].startswith("text/html")
    assert f'data-testid="error-status">{status}<' in r.text
    assert "pydantic" not in r.text  # a sentence about the parameter, not the validator's
    assert "Traceback" not in r.text and "default-src" in r.headers["content-security-policy"]


# --- login, CSRF, the token rules -------------------------------------------------------


async def test_login_sets_a_strict_http_only_cookie(read_settings: Settings) -> None:
    async with console(read_settings) as c:
        assert (await c.get("/ui/dead-letters")).status_code == 303  # login first
        wrong = await login(c, "nope")
        assert wrong.status_code == 403 and "wrong token" in wrong.text
        ok = await login(c)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/tasks"
        cookie = next(v for v in ok.headers.get_list("set-cookie") if v.startswith("tl_session="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/ui"} <= flags and "secure" not in flags
        assert TOKEN not in cookie
        assert 'data-testid="logout"' in (await c.get("/ui/tasks")).text
    async with console(read_settings, base="https://console.test") as secure:
        ok = await login(secure)
        cookie = next(v for v in ok.headers.get_list("set-cookie") if v.startswith("tl_session="))
        assert "secure" in cookie.lower()


async def test_posts_need_the_csrf_value_and_the_same_origin(read_settings: Settings) -> None:
    async with console(read_settings) as c:
        form = await c.get("/ui/login")
        no_csrf = await c.post("/ui/login", data={"token": TOKEN})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        foreign = await c.post(
            "/ui/login",
            data={"token": TOKEN, "csrf": csrf_of(form.text)},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403 and "another site" in foreign.text
        assert (await login(c)).status_code == 303
        refused = await c.post("/ui/pause-queue/hold", data={"task_id": ""})
        assert refused.status_code == 403 and "CSRF" in refused.text
        stale = await c.post("/ui/pause-queue/hold", data={"csrf": "0" * 64})
        assert stale.status_code == 403


async def test_without_a_token_actions_are_disabled_and_say_how(read_settings: Settings) -> None:
    async with console(read_settings, token=None) as c:
        page = await c.get("/ui/login")
        assert (
            'data-testid="mutations-disabled"' in page.text and "TASKLEDGER_API_TOKEN" in page.text
        )
        assert (await c.get("/ui/tasks")).status_code == 200  # reading needs no token
        dead = await c.get("/ui/dead-letters")
        assert dead.status_code == 403 and "TASKLEDGER_API_TOKEN" in dead.text
        post = await c.post("/ui/pause-queue/resume", data={"csrf": "x"})
        assert post.status_code == 403
        assert "mutations-disabled" in (await c.get("/ui/pause-queue")).text


async def test_require_token_setting_guards_the_read_pages(read_settings: Settings) -> None:
    async with console(read_settings, ui_require_token=True) as c:
        r = await c.get("/ui/tasks", params={"service": "kuma"})
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%3Fservice%3Dkuma"
        assert (await login(c)).status_code == 303
        assert (await c.get("/ui/tasks")).status_code == 200


# --- acting from the console ------------------------------------------------------------


async def test_replay_a_group_from_the_console_moves_it_and_records_it(
    settings: Settings, topology: aio_pika.abc.AbstractChannel, names: Names, pool: asyncpg.Pool
) -> None:
    body = event_body(EventType.TASK_STEP)
    await consumer_dead_letter(topology, names, body, reason="schema_violation")
    await consumer_dead_letter(
        topology, names, event_body(EventType.TASK_COMPLETED), routing_key="task.completed",
        reason="invalid_json", error="unexpected character: line 1 column 7 (char 6)",
    )  # fmt: skip
    await wait_depth(topology, names.dead, lambda n: n == 2, "two dead letters")
    audit_before = await depth(topology, names.audit)
    async with console(settings) as c:
        await login(c)
        groups = await c.get("/ui/dead-letters")
        assert groups.status_code == 200 and len(marks(groups.text, "dlq-group")) == 2
        link = re.search(
            r'href="(/ui/dead-letters/group\?reason=schema_violation[^"]*)"', groups.text
        )
        assert link is not None
        group = await c.get(link.group(1).replace("&amp;", "&"))
        assert len(marks(group.text, "dlq-message")) == 1
        replay_link = re.search(r'href="(/ui/dead-letters/replay\?[^"]+)"', group.text)
        assert replay_link is not None
        confirm = await c.get(replay_link.group(1).replace("&amp;", "&"))
        assert re.search(r'data-testid="dlq-preview-count">1<', confirm.text)
        assert await depth(topology, names.dead) == 2  # the dry run moved nothing
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm.text))
        started = await c.post("/ui/dead-letters/replay", data=fields)
        assert started.status_code == 303, started.text
        job_page = started.headers["location"]
        assert job_page.startswith("/ui/dead-letters/replays/")
        result = await c.get(job_page)
        assert result.status_code == 200, result.text
        assert re.search(r'data-testid="result-status">completed<', result.text)
        assert (await c.get("/ui/dead-letters/replays/nope")).status_code == 404
        assert re.search(r'data-testid="result-moved">1<', result.text)
        assert re.search(r'data-testid="result-failed">0<', result.text)
    assert await depth(topology, names.dead) == 1
    await wait_depth(topology, names.audit, lambda n: n == audit_before + 1, "the replayed one")
    row = await pool.fetchrow("SELECT actor, params, result FROM operator_actions")
    assert row is not None and row["actor"] == "console"
    assert row["result"]["replayed"] == 1 and row["params"]["reasons"] == ["schema_violation"]


async def test_hostile_dead_letters_are_escaped_and_exported(
    settings: Settings, topology: aio_pika.abc.AbstractChannel, names: Names, pool: asyncpg.Pool
) -> None:
    hostile = b'{"type": "task.step", "note": "<script>alert(1)</script>", "x": "</pre><b>"}'
    message_id = await consumer_dead_letter(
        topology, names, hostile, reason="schema_violation", error="<img src=x onerror=alert(2)>",
        headers={"x-evil": "<script>alert(3)</script>"},
    )  # fmt: skip
    await wait_depth(topology, names.dead, lambda n: n == 1, "the hostile dead letter")
    async with console(settings) as c:
        await login(c)
        groups = await c.get("/ui/dead-letters")
        assert "<img src=x" not in groups.text and "&lt;img src=x" in groups.text
        shown = await c.get(f"/ui/dead-letters/{message_id}")
        assert shown.status_code == 200
        assert "<script>" not in shown.text and "&lt;script&gt;alert(1)" in shown.text
        assert "&lt;script&gt;alert(3)" in shown.text and "</pre><b>" not in shown.text
        form = re.search(r'data-testid="dlq-export-form">(.*?)</form>', shown.text, re.S)
        assert form is None  # the message page replays; export is the group's
        group = await c.get(
            "/ui/dead-letters/group",
            params={"reason": "schema_violation", "type": "task.step",
                    "error": "<img src=x onerror=alert(N)>"},
        )  # fmt: skip
        assert len(marks(group.text, "dlq-message")) == 1
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', group.text))
        fields = {k: v.replace("&lt;", "<").replace("&gt;", ">") for k, v in fields.items()}
        exported = await c.post("/ui/dead-letters/export", data=fields)
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-disposition"].startswith("attachment;")
        lines = exported.content.splitlines()
        assert len(lines) == 1 and orjson.loads(lines[0])["format"] == "taskledger.dlq/1"
    assert await depth(topology, names.dead) == 1  # export leaves the queue as it was
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM operator_actions")]
    assert actions == ["dlq.export"]


async def test_hold_and_resume_from_the_console(
    settings: Settings, control_queue: aio_pika.abc.AbstractQueue, pool: asyncpg.Pool
) -> None:
    task_id = uuid4()
    async with console(settings) as c:
        await login(c)
        confirm = await c.get("/ui/pause-queue/confirm", params={"action": "hold"})
        assert 'data-testid="confirm-form"' in confirm.text
        csrf = csrf_of(confirm.text)
        held = await c.post(
            "/ui/pause-queue/hold",
            data={"csrf": csrf, "task_id": "", "reason": "<b>db upgrade</b>", "until": "30m"},
        )
        assert held.status_code == 200 and 'data-testid="result-event-id"' in held.text
        resumed = await c.post("/ui/pause-queue/resume", data={"csrf": csrf, "task_id": ""})
        assert resumed.status_code == 200
        forced = await c.post("/ui/pause-queue/force", data={"csrf": csrf, "task_id": str(task_id)})
        assert forced.status_code == 200
        log = await c.get("/ui/actions")
        assert re.findall(r'data-action="([^"]+)"', log.text) == ["force", "resume", "pause"]
        assert "<b>db upgrade</b>" not in log.text
    kinds = []
    for _ in range(3):
        message = await control_queue.get(timeout=5)
        await message.ack()
        kinds.append(orjson.loads(message.body)["type"])
    assert kinds == ["control.pause", "control.resume", "control.resume"]
    rows = await pool.fetch("SELECT action, actor, params FROM operator_actions ORDER BY id")
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("pause", "console"), ("resume", "console"), ("force", "console"),
    ]  # fmt: skip
    assert rows[2]["params"]["task_id"] == str(task_id)


async def test_overview_says_what_is_down_instead_of_failing(prefix: str) -> None:
    down = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        amqp_url="amqp://guest:guest@127.0.0.1:1/",
        prefix=prefix,
    )
    async with console(down) as c:
        r = await c.get("/ui/")
        assert r.status_code == 200
        assert re.search(r'data-testid="health-postgresql">unavailable: ', r.text)
        assert re.search(r'data-testid="health-rabbitmq">unavailable: ', r.text)
        tasks = await c.get("/ui/tasks")
        assert tasks.status_code == 503 and 'data-testid="error-status">503<' in tasks.text


async def test_dead_letters_held_by_another_operation_is_a_409_page(
    read_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_dlq, "_BUSY_WAIT_S", 0.3)
    settings = read_settings
    await declared(settings)
    async with console(settings) as c:
        await login(c)
        async with dead_letter_lease(settings):
            busy = await c.get("/ui/dead-letters")
            assert busy.status_code == 409 and "another operation" in busy.text
            overview = await c.get("/ui/")  # the overview does not wait: it says so
            assert overview.status_code == 200 and "another operation holds" in overview.text
        assert (await c.get("/ui/dead-letters")).status_code == 200


async def test_overview_shows_the_last_verify_run(settings: Settings, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await record_verify(conn, settings, await verify_ledger(conn))
    async with console(settings) as c:
        html = (await c.get("/ui/")).text
    shown = re.search(r'data-testid="last-verify">([^<]*)<', html)
    assert shown is not None and shown.group(1).startswith("verify by ")
    assert shown.group(1).endswith(": intact")
