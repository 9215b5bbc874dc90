"""``taskledger audit ...``, ``pause``, ``resume`` and ``paused`` run as a user runs them.

Each test starts the CLI as a subprocess against real PostgreSQL (and RabbitMQ for the
control commands) and checks exit codes, stdout and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from consumer.core.settings import Settings
from tests.support import services
from tests.support.processes import ROOT, cli_command
from tests.support.seed import Seeded, SeededDb

AUDIT = cli_command("audit")
CONTROL = cli_command()


def cli(command: list[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``args``; wide columns so tables do not fold."""
    return subprocess.run(
        [*command, *args],
        env={**os.environ, "COLUMNS": "240", "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def env(seeded_db: SeededDb) -> dict[str, str]:
    return {"TASKLEDGER_DATABASE_URL": seeded_db.url}


def test_help_lists_every_audit_command() -> None:
    result = cli(AUDIT, "--help", env={})
    assert result.returncode == 0
    for command in ("tasks", "failures", "by-service", "timeline", "orphans", "stale", "summary"):
        assert command in result.stdout


def test_kuma_changes_in_the_past_week(env: dict[str, str], seeded: Seeded) -> None:
    expected = {
        str(seeded[n]) for n in ("kuma_deploy", "kuma_rollout", "kuma_restart", "kuma_dns_dep")
    }
    page = as_json(cli(AUDIT, "by-service", "kuma", "--since", "7d", "--json", env=env))
    assert {i["task_id"] for i in page["items"]} == expected
    same = as_json(cli(AUDIT, "tasks", "--service", "kuma", "--since", "7d", "--json", env=env))
    assert {i["task_id"] for i in same["items"]} == expected
    table = cli(AUDIT, "tasks", "--service", "kuma", "--since", "7d", env=env)
    assert table.returncode == 0, table.stderr
    assert str(seeded["kuma_deploy"]) in table.stdout
    assert "Deploy Uptime Kuma 2.0 on the edge host" in table.stdout


def test_failures_by_cause(env: dict[str, str], seeded: Seeded) -> None:
    report = as_json(cli(AUDIT, "failures", "--json", env=env))
    assert report["by_cause"] == {"resource": 2, "application": 1, "dependency": 1}
    table = cli(AUDIT, "failures", "--cause", "application", env=env)
    assert table.returncode == 0, table.stderr
    assert "1 failed task(s)" in table.stdout and str(seeded["billing_app"]) in table.stdout


def test_task_step_by_step(env: dict[str, str], seeded: Seeded) -> None:
    table = cli(AUDIT, "timeline", str(seeded["kuma_deploy"]), env=env)
    assert table.returncode == 0, table.stderr
    assert "step 3 portainer.stack.redeploy kuma: completed" in table.stdout
    assert "released (capacity)" in table.stdout
    detail = as_json(cli(AUDIT, "timeline", str(seeded["kuma_deploy"]), "--json", env=env))
    assert detail["task"]["task_id"] == str(seeded["kuma_deploy"])
    missing = cli(AUDIT, "timeline", str(uuid4()), env=env)
    assert missing.returncode == 4
    assert missing.stderr.startswith("error: no task") and missing.stderr.count("\n") == 1


def test_intent_orphans_stale_summary(env: dict[str, str], seeded: Seeded) -> None:
    deploys = as_json(
        cli(AUDIT, "tasks", "--intent", "deploy_kuma", "--since", "7d", "--json", env=env)
    )
    assert {i["task_id"] for i in deploys["items"]} == {
        str(seeded["kuma_deploy"]),
        str(seeded["kuma_rollout"]),
    }
    orphans = as_json(cli(AUDIT, "orphans", "--older-than", "10m", "--json", env=env))
    assert {o["task_id"] for o in orphans} == {
        str(seeded.orphan_task),
        str(seeded["approved_waiting"]),
    }
    stale = as_json(cli(AUDIT, "stale", "--json", env=env))
    assert [s["task_id"] for s in stale] == [str(seeded["stale"])]
    summary = as_json(cli(AUDIT, "summary", "--since", "7d", "--json", env=env))
    assert summary["total"] == 13


def test_pages_follow_the_cursor(env: dict[str, str]) -> None:
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(5):
        page = as_json(cli(AUDIT, "tasks", "--limit", "5", "--json", *cursor, env=env))
        seen += [i["task_id"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]
    assert len(seen) == len(set(seen)) == 14
    table = cli(AUDIT, "tasks", "--limit", "5", env=env)
    assert "more: add --cursor " in table.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "--since", "yesterday"),
        ("tasks", "--status", "bogus"),
        ("tasks", "--until", "99999999999999d"),
        ("failures", "--cause", "gremlins", "--intent", "deploy_kuma"),
        ("tasks", "--cursor", "junk"),
        ("timeline", "not-a-uuid"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(env: dict[str, str], args: tuple[str, ...]) -> None:
    result = cli(AUDIT, *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unmigrated_database_says_to_migrate(empty_db_url: str) -> None:
    result = cli(AUDIT, "tasks", env={"TASKLEDGER_DATABASE_URL": empty_db_url})
    assert result.returncode == 3, result.stderr
    assert "run `taskledger migrate`" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_exits_3_without_the_password() -> None:
    result = cli(
        AUDIT,
        "tasks",
        env={"TASKLEDGER_DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:1/x"},
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error: cannot reach PostgreSQL")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_paused_shows_what_waits_and_why(env: dict[str, str], seeded: Seeded) -> None:
    table = cli(CONTROL, "paused", env=env)
    assert table.returncode == 0, table.stderr
    assert str(seeded["pending"]) in table.stdout
    assert "infra: 2 CPU, 4096 MB RAM" in table.stdout
    assert "held by an operator" in table.stdout
    assert "wait for the dns migration" in table.stdout
    view = as_json(cli(CONTROL, "paused", "--json", env=env))
    assert [e["priority"] for e in view["entries"]] == [1, 2]


def test_pause_and_resume_publish_and_record(settings: Settings, topology: Any) -> None:
    """`pause`/`resume` against this test's own database and broker prefix."""
    env = {
        "TASKLEDGER_DATABASE_URL": settings.dsn,
        "TASKLEDGER_AMQP_URL": settings.amqp,
        "TASKLEDGER_PREFIX": settings.prefix,
        "TASKLEDGER_OPERATOR": "dave",
    }
    task_id = str(uuid4())
    paused = as_json(
        cli(
            CONTROL,
            "pause",
            "--task",
            task_id,
            "--until",
            "2h",
            "--reason",
            "dns move",
            "--json",
            env=env,
        )
    )
    assert paused["action"] == "pause" and paused["task_id"] == task_id
    forced = cli(CONTROL, "resume", "--task", task_id, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"forced task {task_id}")
    refused = cli(CONTROL, "resume", "--force", env=env)
    assert (
        refused.returncode == 2
        and refused.stderr == "error: --force needs a task: give --task ID\n"
    )
    bad_until = cli(CONTROL, "pause", "--until", "never", env=env)
    assert bad_until.returncode == 2 and bad_until.stderr.count("\n") == 1

    async def recorded() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(settings.dsn)
        try:
            rows = await conn.fetch("SELECT action, actor FROM operator_actions ORDER BY id")
        finally:
            await conn.close()
        return [(r["action"], r["actor"]) for r in rows]

    assert services.run(recorded()) == [("pause", "dave"), ("force", "dave")]
