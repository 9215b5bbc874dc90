"""The incident story in Chromium: poison of three reasons reaches the real consumer; the
dead-letters page groups it with the right counts; the operator opens a message, replays
its group with nothing fixed (it comes back, replayed once), fixes the cause, replays
again (it lands: the task page shows the task) and finds both replays in the actions log.

The three reasons are real failures of ``taskledger run``: bytes that are not JSON
(``invalid_json``), events breaking the strict schema (``schema_violation``), and valid
events the database refuses (``retries_exhausted``, after the retry queues): a trigger
stands for the bug that refuses them, and dropping it is the fix.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumer.broker import H_REPLAY_COUNT, Names
from consumer.core.settings import Settings
from contracts import EventType, make_event
from contracts.examples import EXAMPLES
from tests.e2e.browser import Browser
from tests.e2e.conftest import TOKEN
from tests.support.dead_letters import depth, peek
from tests.support.processes import Service
from tests.support.traffic import wait_until

BUG = """
CREATE FUNCTION e2e_billing_bug() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.request_text LIKE 'poison:%' THEN
        RAISE EXCEPTION 'value out of range: billing estimate overflow'
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER e2e_billing_bug BEFORE INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION e2e_billing_bug();
"""
FIX = "DROP TRIGGER e2e_billing_bug ON tasks; DROP FUNCTION e2e_billing_bug();"


def requested(task: uuid.UUID, text: str, **extra: Any) -> bytes:
    data = {**EXAMPLES[EventType.TASK_REQUESTED], "request_text": text}
    if not extra:
        return make_event(EventType.TASK_REQUESTED, data, source="orchestrator", subject=task)
    envelope = orjson.loads(
        make_event(EventType.TASK_REQUESTED, data, source="orchestrator", subject=task)
    )
    envelope["data"].update(extra)  # strict v1 payloads: an unknown field is a violation
    return orjson.dumps(envelope)


async def publish_poison(
    channel: AbstractChannel, names: Names
) -> tuple[list[str], list[uuid.UUID]]:
    """1 x invalid_json, 2 x schema_violation, 3 x (to be) retries_exhausted; returns the
    event ids of the violations and the tasks of the last three."""
    refused = [uuid.uuid4() for _ in range(3)]
    violations = [requested(uuid.uuid4(), "Restart kuma", colour="red") for _ in range(2)]
    bodies = [
        ("task.step", b'{"specversion": "1.0", "id": '),
        *(("task.requested", body) for body in violations),
        *(("task.requested", requested(t, f"poison: bill project {i}"))
          for i, t in enumerate(refused)),
    ]  # fmt: skip
    events = await channel.get_exchange(names.events)
    for key, body in bodies:
        await events.publish(
            aio_pika.Message(body, content_type="application/cloudevents+json"), routing_key=key
        )
    return [str(orjson.loads(body)["id"]) for body in violations], refused


async def dead_letters(channel: AbstractChannel, names: Names, n: int) -> None:
    """Wait until the dead queue holds ``n`` messages (generous: the retries take a while
    on a busy machine)."""

    async def reached() -> bool:
        return await depth(channel, names.dead) == n

    await wait_until(reached, timeout=60, what=f"{n} dead letters")


def group_counts(browser: Browser) -> dict[str | None, int]:
    return {
        row.get_attribute("data-reason"): int(browser.text("dlq-group-count", within=row))
        for row in browser.testids("dlq-group")
    }


def open_group(browser: Browser, reason: str) -> None:
    (row,) = [r for r in browser.testids("dlq-group") if r.get_attribute("data-reason") == reason]
    browser.click("dlq-group-open", within=row, page="dead-letter-group")


def replay_group(browser: Browser, reason: str, expect: int) -> None:
    """From the dead-letters page: open the group, preview, confirm, read the result."""
    browser.visit("/ui/dead-letters", page="dead-letters")
    open_group(browser, reason)
    browser.click("dlq-replay-group", page="confirm")
    assert int(browser.text("dlq-preview-count")) == expect
    assert len(browser.testids("dlq-preview-row")) == expect
    finish_replay(browser, expect)


def finish_replay(browser: Browser, expect: int) -> None:
    """Confirm the replay previewed on this page and read its result: all moved."""
    browser.click("confirm-submit", page="result")
    # A long replay shows its progress (the page refreshes itself) until it ends.
    status = browser.until(
        lambda: (text := browser.text("result-status")) != "running" and text, "the replay's end"
    )
    browser.check("the replay's result", page="result")
    assert status == "completed", browser.text("page-result")
    assert int(browser.text("result-moved")) == expect
    assert int(browser.text("result-failed")) == 0
    assert int(browser.text("result-in-doubt")) == 0


async def test_poison_grouped_replayed_before_and_after_the_fix(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    pool: asyncpg.Pool,
    consumer: Service,
    console: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    names = Names(settings.prefix)
    await pool.execute(BUG)
    violations, refused = await publish_poison(topology, names)
    await dead_letters(topology, names, 6)  # after the retries

    browser.login(TOKEN, "/ui/dead-letters")
    browser.check("dead letters", page="dead-letters")
    assert group_counts(browser) == {"retries_exhausted": 3, "schema_violation": 2,
                                     "invalid_json": 1}  # fmt: skip
    browser.shoot("dead-letters-incident")

    open_group(browser, "retries_exhausted")
    assert len(browser.testids("dlq-message")) == 3
    exported = browser.download("dlq-export-group", tmp_path)
    assert exported.suffix == ".jsonl"
    lines = [orjson.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 3
    browser.click("dlq-message-open", page="dead-letter")
    assert "retries_exhausted" in browser.text("dlq-headers")
    assert "billing estimate overflow" in browser.text("dlq-headers")
    assert "poison: bill project" in browser.text("dlq-body")

    # Nothing fixed: the three go back to the consumer, fail again and come back.
    replay_group(browser, "retries_exhausted", 3)

    async def back_replayed_once() -> bool:
        letters = await peek(amqp, names.dead)
        counts = [m.headers.get(H_REPLAY_COUNT) for m in letters]
        return len(letters) == 6 and counts.count(1) == 3

    await wait_until(back_replayed_once, timeout=60, what="the replayed three to come back")
    browser.visit("/ui/dead-letters", page="dead-letters")
    assert group_counts(browser)["retries_exhausted"] == 3
    open_group(browser, "retries_exhausted")
    browser.click("dlq-message-open", page="dead-letter")
    assert browser.text("dlq-replay-count") == "1"

    # The fix, then the same replay: they land.
    await pool.execute(FIX)
    replay_group(browser, "retries_exhausted", 3)

    async def landed() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = ANY($1)", refused)
        return bool(n == 3)

    await wait_until(landed, timeout=60, what="the replayed tasks in the record")
    await dead_letters(topology, names, 3)  # only the other two groups are left
    browser.visit("/ui/dead-letters", page="dead-letters")
    assert group_counts(browser) == {"schema_violation": 2, "invalid_json": 1}
    browser.visit(f"/ui/tasks/{refused[0]}", page="task")
    assert browser.text("task-request") == "poison: bill project 0"
    assert browser.text("task-status") == "pending"

    # One message replayed by itself: a schema violation fails again at once and comes back.
    browser.visit("/ui/dead-letters", page="dead-letters")
    open_group(browser, "schema_violation")
    browser.click("dlq-message-open", page="dead-letter")
    browser.click("dlq-replay-one", page="confirm")
    assert int(browser.text("dlq-preview-count")) == 1
    finish_replay(browser, 1)

    async def violation_back() -> bool:
        letters = await peek(amqp, names.dead)
        return sorted(m.headers.get(H_REPLAY_COUNT) or 0 for m in letters) == [0, 0, 1]

    await wait_until(violation_back, timeout=60, what="the replayed violation to come back")
    replay_counts = []
    for event_id in violations:  # the message page also takes the CloudEvent id
        browser.visit(f"/ui/dead-letters/{event_id}", page="dead-letter")
        assert browser.text("dlq-reason") == "schema_violation"
        replay_counts.append(browser.text("dlq-replay-count"))
    assert sorted(replay_counts) == ["0", "1"]

    browser.visit("/ui/actions", page="actions")
    replays = [r for r in browser.testids("action-row")
               if r.get_attribute("data-action") == "dlq.replay"]  # fmt: skip
    assert len(replays) == 3
    rows = await pool.fetch("SELECT action, params, result FROM operator_actions ORDER BY id")
    assert [r["action"] for r in rows] == ["dlq.export", *["dlq.replay"] * 3]
    assert [r["result"].get("replayed") for r in rows[1:]] == [3, 3, 1]
