"""Pure parts of the ops console: redirects stay on the console, replay jobs, templates escape."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from pydantic import SecretStr

from consumer.core.settings import Settings
from consumer.dlq import ReplayResult
from consumer.queries.models import (
    FailureCapture,
    StepEntry,
    SuggestionView,
    TaskDetail,
    TaskRecord,
    TimelineEntry,
)
from consumer.ui.auth import login_csrf, safe_next, session_valid, session_value, token_matches
from consumer.ui.jobs import Jobs
from consumer.ui.render import templates
from contracts import TaskStatus


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/tasks?service=kuma", "/ui/tasks?service=kuma"),
        ("//evil.example/ui/", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/ui/\r\nSet-Cookie: x=1", "/ui/"),
        ("/api/v1/pause-queue", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_login_redirects_only_to_console_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_elapsed_times_read_well() -> None:
    since = templates.filters["since"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert since(start, start) == "+0 s"
    assert since(start + timedelta(seconds=125), start) == "+2 min 5 s"
    assert since(start + timedelta(hours=3, minutes=2), start) == "+3 h 2 min"
    assert since(start + timedelta(days=3, hours=1), start) == "+3 d 1 h"
    assert since(start - timedelta(seconds=5), start) == "-5 s"
    assert since(None, start) == ""


def test_session_cookie_is_derived_from_the_token_not_the_token() -> None:
    settings = Settings(api_token=SecretStr("tok"))
    value = session_value(settings, 1_000_000)
    assert value is not None and "tok" not in value and value.startswith("1000000.")
    assert session_value(Settings(api_token=SecretStr("other")), 1_000_000) != value
    assert session_value(Settings(api_token=None)) is None
    # valid for 12 hours, for this token only; a forged time breaks the HMAC
    assert session_valid(settings, value, now=1_000_000 + 11 * 3600)
    assert not session_valid(settings, value, now=1_000_000 + 12 * 3600)
    assert not session_valid(Settings(api_token=SecretStr("other")), value, now=1_000_001)
    assert not session_valid(settings, "2000000." + value.split(".")[1], now=2_000_001)
    assert not session_valid(settings, "junk", now=1_000_001)
    assert token_matches(settings, "tok") and not token_matches(settings, "tok2")
    assert not token_matches(Settings(api_token=None), "")
    assert login_csrf("a") != login_csrf("b")


def test_templates_escape_what_they_show() -> None:
    html = templates.get_template("error.html").render(
        request=None, path="/ui/x", logged_in=False, csrf="", token_configured=False,
        title="<i>t</i>", status=400, message="<script>alert(1)</script>",
    )  # fmt: skip
    assert "<script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "&lt;i&gt;t&lt;/i&gt;" in html


async def test_a_job_shows_progress_then_its_result() -> None:
    jobs = Jobs()
    go = asyncio.Event()

    async def run(progress: Callable[[ReplayResult], None]) -> ReplayResult:
        result = ReplayResult(total=3, scanned=1, matched=1)
        progress(result)
        await go.wait()
        result.replayed = 1
        return result

    job = jobs.start({"key": "k1"}, run)
    await jobs.wait(job, 0.05)
    assert job.running and job.status == "running" and job.result.scanned == 1
    assert jobs.get(job.id) is job and jobs.get("nope") is None
    go.set()
    await jobs.wait(job, 5)
    assert job.status == "completed" and job.result.replayed == 1


async def test_stopping_cancels_running_jobs() -> None:
    jobs = Jobs()

    async def forever(progress: Callable[[ReplayResult], None]) -> ReplayResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def broken(progress: Callable[[ReplayResult], None]) -> ReplayResult:
        raise RuntimeError("broker said no")

    stuck = jobs.start({}, forever)
    failed = jobs.start({}, broken)
    await jobs.wait(failed, 5)
    assert failed.status == "failed" and failed.error == "broker said no"
    await jobs.stop()
    assert not stuck.running and stuck.status == "failed" and "interrupted" in (stuck.error or "")


def test_task_page_shows_failure_suggestions_and_resources_escaped() -> None:
    task_id = uuid4()
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    record = TaskRecord(
        task_id=task_id, status=TaskStatus.FAILED, request_text="<b>restart</b> dns",
        created_at=at, updated_at=at, services_touched=["dns"], error_cause="resource",
        error_type="OOMKilled", error_message="<script>x</script>", failed_step=2,
        estimated_resources={"memory_mb": 512}, actual_resources={"memory_mb": 900},
        outcome={"stack_trace": "Traceback <script>"},
        suggestions=[
            SuggestionView(
                suggestion_id=uuid4(), suggestion="raise the limit", reason="OOM twice",
                created_at=at, source="agents/doctor",
            )
        ],
    )  # fmt: skip
    step = StepEntry(
        log_id=uuid4(), event_id=uuid4(), step_number=2, agent_type="infra",
        action="systemctl restart", status="failed", duration_ms=1500, timestamp=at,
        recorded_at=at,
    )  # fmt: skip
    timeline = [
        TimelineEntry(at=at, kind="step", title="step 2 systemctl restart: failed", step=step),
        TimelineEntry(
            at=at, kind="event", title="task.failed", failure=FailureCapture(stack_trace="<tb>")
        ),
    ]
    html = templates.get_template("task.html").render(
        request=None, path="/ui/tasks/x", logged_in=False, csrf="", token_configured=True,
        title="Task", task_id=task_id, detail=TaskDetail(task=record, timeline=timeline),
        steps_ms=1500,
    )  # fmt: skip
    assert 'data-testid="task-suggestions"' in html and "raise the limit" in html
    assert 'data-testid="task-error"' in html and "&lt;script&gt;x" in html
    assert "<script>" not in html and "&lt;b&gt;restart" in html and "&lt;tb&gt;" in html
    assert html.count('data-testid="timeline-entry"') == 2 and "1500 ms" in html
    assert "900" in html and f"/ui/dead-letters?task={task_id}" in html
