"""`taskledger dlq ...` as an operator runs it: a subprocess against real services.

The last two tests also run the real consumer (`taskledger run --burst`): a replay after a
fix lands in the record, and a replayed message that fails again comes back with its
reason.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from typer.testing import CliRunner

from consumer import dlq as dlq_api
from consumer.broker import H_REASON, Names
from consumer.cli.dlq import app
from consumer.core.settings import Settings
from contracts import EventType, make_event
from contracts.examples import EXAMPLES
from tests.support.dead_letters import (
    broker_dead_letter,
    consumer_dead_letter,
    depth,
    drain,
    event_body,
    event_id,
    ids,
    peek,
    wait_depth,
)
from tests.support.processes import ROOT, Service, cli_command, cli_env, run_cli
from tests.support.traffic import ledger_count, wait_until

# `taskledger dlq` once consumer/cli.py registers the sub-app; until then, the sub-app itself.


async def dlq(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `taskledger dlq ARGS`; returns (exit code, stdout, stderr)."""
    return await run_cli(settings, "dlq", *args, **{"COLUMNS": "220", "NO_COLOR": "1", **env})


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.prefix)


async def test_summary_list_show(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    task = uuid.uuid4()
    step = event_body(task=task)
    made = await consumer_dead_letter(topology, names, step, error="bad step\ndetail")
    await consumer_dead_letter(topology, names, b"{oops", reason="invalid_json", error="eof")
    completed = event_body(EventType.TASK_COMPLETED)
    await broker_dead_letter(topology, names, completed)
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    before = ids(await peek(amqp, names.dead))

    code, out, err = await dlq(settings, "summary")
    assert code == 0, err
    assert names.dead in out and "schema_violation" in out and "bad step" in out
    code, out, _ = await dlq(settings, "list", "--json", "--since", "1h")
    assert [i["message_id"] for i in orjson.loads(out)["items"]] == before
    code, out, _ = await dlq(settings, "list", "--reason", "rejected")
    assert code == 0 and event_id(completed) in out and "task.completed" in out
    code, out, _ = await dlq(settings, "list", "--json", "--task", str(task), "--until", "1h")
    assert orjson.loads(out)["items"] == []  # it failed less than an hour ago

    code, out, err = await dlq(settings, "show", event_id(completed))
    assert code == 0, err
    assert "death history" in out and names.audit in out and '"type": "task.completed"' in out
    code, out, _ = await dlq(settings, "show", made, "--json")  # by message_id
    (detail,) = orjson.loads(out)
    assert detail["headers"][H_REASON] == "schema_violation"
    assert detail["id"] == event_id(step) and detail["subject"] == str(task)

    assert ids(await peek(amqp, names.dead)) == before  # nothing taken, order kept


async def test_dry_run_then_replay(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    steps = [await consumer_dead_letter(topology, names, event_body()) for _ in range(2)]
    other = await consumer_dead_letter(
        topology,
        names,
        event_body(EventType.CAPACITY_REPORTED),
        routing_key="capacity.reported",
        source_queue=names.capacity,
    )
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")

    code, out, err = await dlq(settings, "replay", "--dry-run")
    assert code == 0, err
    assert "would replay 3" in out and "nothing was moved" in out
    assert ids(await peek(amqp, names.dead)) == [*steps, other]

    code, out, err = await dlq(settings, "replay", "--type", "task.*", TASKLEDGER_OPERATOR="carol")
    assert code == 0, err
    assert "replayed 2, skipped 1, failed 0" in out
    assert ids(await drain(amqp, names.audit)) == steps
    assert ids(await peek(amqp, names.dead)) == [other]

    code, out, err = await dlq(settings, "replay", "--json", "--rate", "100")
    assert code == 0, err
    assert orjson.loads(out)["replayed"] == 1
    assert ids(await drain(amqp, names.capacity)) == [other]
    rows = await pool.fetch(
        "SELECT action, actor, params, result FROM operator_actions ORDER BY id"
    )
    assert [(r["action"], r["params"].get("types")) for r in rows] == [
        ("dlq.replay", ["task.*"]),
        ("dlq.replay", None),
    ]
    assert [r["result"]["replayed"] for r in rows] == [2, 1]
    assert rows[0]["actor"] == "carol"


async def test_export_purge_then_import(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    tmp_path: Path,
) -> None:
    await consumer_dead_letter(topology, names, event_body(), correlation_id="c1")
    await consumer_dead_letter(topology, names, b"\xff\x00binary", reason="invalid_json")
    await broker_dead_letter(topology, names, event_body(EventType.TASK_FAILED), "task.failed")
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    before = await peek(amqp, names.dead)
    out_file = tmp_path / "dead.jsonl"

    code, out, err = await dlq(
        settings, "export", "--out", str(out_file), "--purge", TASKLEDGER_OPERATOR="dave"
    )
    assert code == 0, err
    assert f"exported 3 dead letters to {out_file}" in out and "removed 3" in out
    assert await depth(topology, names.dead) == 0

    code, out, err = await dlq(settings, "import", str(out_file))
    assert code == 0, err
    assert "imported 3 of 3" in out
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 imported")
    assert await peek(amqp, names.dead) == before  # byte for byte: body, headers, properties


async def test_ctrl_c_mid_replay_prints_what_moved_and_loses_nothing(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(40)]
    await wait_depth(topology, names.dead, lambda n: n == 40, "40 dead letters")
    proc = await asyncio.create_subprocess_exec(
        *cli_command("dlq", "replay", "--rate", "25"),
        env=cli_env(settings, COLUMNS="220", NO_COLOR="1"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_depth(topology, names.audit, lambda n: n >= 5, "5 replayed")
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, out.decode() + err.decode()
    text = out.decode()
    assert "interrupted:" in text and "Run the same command again to continue" in text
    moved = int(text.split("replayed ", 1)[1].split(",", 1)[0])
    dead, audit = await peek(amqp, names.dead), await peek(amqp, names.audit)
    assert len(audit) == moved and 5 <= moved < 40
    assert sorted(ids(dead) + ids(audit), key=str) == sorted(published, key=str)
    assert ids(dead) == published[moved:]


# Refused before any service is asked: checked in-process (fast), one of them also as a
# subprocess below.
REFUSED_EARLY = [
    (("list", "--since", "yesterday"), "--since 'yesterday' is neither RFC 3339"),
    (("list", "--since", "1h", "--until", "2h"), "--since must be before --until"),
    (("list", "--limit", "0"), "--limit must be at least 1"),
    (("summary", "--limit", "-3"), "--limit must be at least 1"),
    (("replay", "--task", "not-a-uuid"), "is not a UUID"),
    (("replay", "--rate", "0"), "--rate must be positive"),
    (("export",), "--out FILE is required"),
]


@pytest.mark.parametrize(("args", "says"), REFUSED_EARLY)
def test_bad_arguments_are_refused_in_one_line(args: tuple[str, ...], says: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert says in one_line_error(result.stderr)


async def test_bad_arguments_give_one_line_and_exit_2(settings: Settings) -> None:
    cases = [
        (("replay", "--rate", "0"), "--rate must be positive"),
        (("replay", "--to-queue", "no.such.queue"), "queue 'no.such.queue' does not exist"),
        (("import", "/nonexistent/dead.jsonl"), "cannot read /nonexistent/dead.jsonl"),
    ]
    results = await asyncio.gather(*(dlq(settings, *args) for args, _ in cases))
    for (args, says), (code, _, err) in zip(cases, results, strict=True):
        assert code == 2, (args, err)
        assert says in one_line_error(err), args


async def test_wrong_prefix_and_unreachable_broker(
    settings: Settings, topology: AbstractChannel
) -> None:
    code, _, err = await dlq(settings, "summary", TASKLEDGER_PREFIX="nope-" + uuid.uuid4().hex)
    assert code == 2 and "does not exist" in one_line_error(err)
    code, _, err = await dlq(
        settings, "summary", TASKLEDGER_AMQP_URL="amqp://guest:s3cret@127.0.0.1:1/"
    )
    assert code == 3 and "cannot reach RabbitMQ" in one_line_error(err)
    assert "s3cret" not in err
    code, _, err = await dlq(settings, "show", "no-such-id")
    assert code == 4 and "no dead letter with id 'no-such-id'" in one_line_error(err)


# --------------------------------------------------------------------------- with the consumer


async def run_burst(settings: Settings) -> None:
    delays = orjson.dumps(settings.retry_delays_ms).decode()
    code, out, err = await run_cli(
        settings, "run", "--burst", TASKLEDGER_RETRY_DELAYS_MS=delays, timeout=90
    )
    assert code == 0, out + err


async def test_replay_after_a_fix_lands_in_the_record(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    task = uuid.uuid4()
    requested = make_event(
        EventType.TASK_REQUESTED,
        EXAMPLES[EventType.TASK_REQUESTED],
        source="orchestrator",
        subject=task,
    )
    started = make_event(
        EventType.TASK_STARTED, EXAMPLES[EventType.TASK_STARTED], source="agents/a1", subject=task
    )
    bug = "DataError: value out of range (fixed in 1.0.1)"
    for body, key in ((requested, "task.requested"), (started, "task.started")):
        await consumer_dead_letter(
            topology, names, body, routing_key=key, reason="retries_exhausted", error=bug
        )
    await wait_depth(topology, names.dead, lambda n: n == 2, "2 dead letters")

    code, out, err = await dlq(settings, "replay", "--reason", "retries_exhausted")
    assert code == 0 and "replayed 2" in out, out + err
    await run_burst(settings)

    recorded = await pool.fetchval(
        "SELECT count(*) FROM event_ledger WHERE event_id = ANY($1::uuid[])",
        [event_id(requested), event_id(started)],
    )
    assert recorded == 2
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task) == "executing"
    assert await depth(topology, names.dead) == 0

    # The same event dead-lettered twice and replayed again: the ledger absorbs it.
    await consumer_dead_letter(topology, names, requested, routing_key="task.requested")
    await wait_depth(topology, names.dead, lambda n: n == 1, "the duplicate")
    code, out, err = await dlq(settings, "replay")
    assert code == 0 and "replayed 1" in out, out + err
    await run_burst(settings)
    assert await pool.fetchval("SELECT count(*) FROM event_ledger") == 2
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task) == "executing"
    assert await depth(topology, names.dead) == 0


async def test_a_replayed_message_that_fails_again_returns_with_its_reason(
    settings: Settings, topology: AbstractChannel, names: Names
) -> None:
    envelope: dict[str, Any] = orjson.loads(event_body(EventType.TASK_REQUESTED))
    envelope["data"]["unexpected_field"] = 1  # strict v1 payloads: a schema violation
    body = orjson.dumps(envelope)
    events = await topology.get_exchange(names.events)
    await events.publish(
        aio_pika.Message(body, message_id="bad-1", content_type="application/json"),
        routing_key="task.requested",
    )
    await run_burst(settings)
    code, out, _ = await dlq(settings, "list", "--json")
    (first,) = orjson.loads(out)["items"]
    assert (first["reason"], first["replay_count"]) == ("schema_violation", 0)

    code, out, err = await dlq(settings, "replay")
    assert code == 0 and "replayed 1" in out, out + err
    await run_burst(settings)

    code, out, _ = await dlq(settings, "show", "bad-1", "--json")
    (again,) = orjson.loads(out)
    assert (again["reason"], again["replay_count"]) == ("schema_violation", 1)
    assert "unexpected_field" in again["error_full"]
    assert again["headers"]["x-taskledger-last-reason"] == "schema_violation"
    assert again["id"] == envelope["id"]


async def test_killing_the_consumer_of_the_target_mid_replay_loses_nothing(
    settings: Settings, topology: AbstractChannel, names: Names, pool: asyncpg.Pool
) -> None:
    bodies = [
        make_event(
            EventType.TASK_REQUESTED,
            EXAMPLES[EventType.TASK_REQUESTED],
            source="orchestrator",
            subject=uuid.uuid4(),
        )
        for _ in range(30)
    ]
    for body in bodies:
        await consumer_dead_letter(
            topology, names, body, routing_key="task.requested", reason="retries_exhausted"
        )
    await wait_depth(topology, names.dead, lambda n: n == 30, "30 dead letters")
    delays = orjson.dumps(settings.retry_delays_ms).decode()
    env = {"TASKLEDGER_RETRY_DELAYS_MS": delays}
    service = await Service(settings, ("--only", "audit"), env).start()
    replaying = asyncio.create_task(dlq_api.replay(settings, dlq_api.Filters(), rate=40))
    try:
        await wait_until(lambda: _ledger_has(pool, 5), what="the consumer to record replays")
        service.kill()  # kill -9 while the replay keeps publishing to its queue
        await service.wait()
        result = await asyncio.wait_for(replaying, 30)
    finally:
        await service.close()
    assert (result.replayed, result.failed) == (30, 0)
    final = await Service(settings, ("--only", "audit", "--burst"), env).start()
    try:
        assert await final.wait(90) == 0, final.log()
    finally:
        await final.close()
    recorded = {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM event_ledger")}
    assert recorded == {event_id(b) for b in bodies}
    assert await depth(topology, names.dead) == 0


async def _ledger_has(pool: asyncpg.Pool, n: int) -> bool:
    return await ledger_count(pool) >= n


# --------------------------------------------------------------------------- operator output


async def test_piped_output_never_cuts_key_columns_and_show_cuts_big_bodies(
    settings: Settings, topology: AbstractChannel, names: Names
) -> None:
    code, out, err = await dlq(settings, "summary", COLUMNS="40")
    assert code == 0 and f"{names.dead} is empty" in out, err

    long_type = "task.requeued.after.a.very.long.routing.key.name"
    big = b'"' + b"x" * (1024 * 1024) + b'"'
    hostile = {  # shown, not a traceback
        "x-taskledger-replay-count": "\u00b2",
        "nested": {"a": [bytearray(b"\xff\x00"), {"b": None, "c": Decimal("1.5")}]},
    }
    for _ in range(2):  # same body twice: one event, two messages, two keys
        await consumer_dead_letter(
            topology,
            names,
            big,
            routing_key=long_type,
            reason="retries_exhausted",
            error="gave up after 5 attempts at 2026-01-01T00:00:00Z",
            headers=hostile,
        )
    await wait_depth(topology, names.dead, lambda n: n == 2, "2 dead letters")

    code, out, err = await dlq(settings, "summary", COLUMNS="40")
    assert code == 0 and "retries_exhausted" in out and long_type in out, out + err
    assert "gave up after N attempts at <time>" in out  # one group, whole
    code, out, err = await dlq(settings, "list", COLUMNS="40")
    assert code == 0 and "retries_exhausted" in out and long_type in out, out + err
    keys = re.findall(r"\bk[0-9a-f]{15}\b", out)  # whole, one per message
    assert len(set(keys)) == len(keys) == 2, out

    code, out, err = await dlq(settings, "show", keys[1])
    assert code == 0, err
    assert len(out) < 20_000 and "--full for all" in out
    code, out, err = await dlq(settings, "show", keys[1], "--full")
    assert code == 0 and len(out) > 1024 * 1024 and "--full for all" not in out, err


async def test_a_second_operator_is_told_busy_in_one_line(
    settings: Settings, topology: AbstractChannel
) -> None:
    async with dlq_api.dead_letter_lease(settings):
        code, out, err = await dlq(settings, "summary")
    assert code == 1, out + err
    assert "busy: another operation holds the dead letters" in one_line_error(err)
    code, out, err = await dlq(settings, "summary")
    assert code == 0, err
