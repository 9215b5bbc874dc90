"""Replays started from the console, run in the background so a page can show their progress.

``POST /ui/dead-letters/replay`` starts a :class:`Job` (``dlq.replay`` with a progress
callback) and waits a moment for it: a small replay is done by then, and the browser
lands straight on its result; a long one is watched on ``/ui/dead-letters/replays/{id}``,
which refreshes itself until the job is over. Jobs live in the process (the latest
:data:`KEEP` are kept); when the app stops, those still running are cancelled and end
as ``failed`` with the error ``interrupted: the API stopped`` (what a replay moved before
stays moved, and ``dlq.replay`` records the action as interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from consumer.core.settings import redact_text
from consumer.dlq import ReplayResult

__all__ = ["KEEP", "Job", "Jobs", "jobs_of", "stop_jobs_with"]

log = logging.getLogger(__name__)

#: Finished jobs kept for their result pages.
KEEP = 50


@dataclass
class Job:
    """One replay: its live counts (``result``), what it replays, how it ended."""

    id: str
    what: dict[str, Any]
    result: ReplayResult = field(default_factory=ReplayResult)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the replay is still going."""
        return self.task is not None and not self.task.done()

    @property
    def status(self) -> str:
        """``running``, else the replay's status (``completed``/``interrupted``), or ``failed``."""
        if self.running:
            return "running"
        return "failed" if self.error else self.result.status


class Jobs:
    """The console's replay jobs of one app."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id``, if this process has it."""
        return self._jobs.get(job_id)

    def start(
        self,
        what: dict[str, Any],
        run: Callable[[Callable[[ReplayResult], None]], Coroutine[Any, Any, ReplayResult]],
    ) -> Job:
        """Start ``run(progress)`` as a job; ``progress`` keeps the job's counts current."""
        job = Job(id=secrets.token_urlsafe(12), what=what)

        def progress(result: ReplayResult) -> None:
            job.result = result

        async def body() -> None:
            try:
                job.result = await run(progress)
            except asyncio.CancelledError:
                job.error = "interrupted: the API stopped"
                raise
            except Exception as exc:  # shown on the job's page
                job.error = redact_text(str(exc)) or type(exc).__name__
                log.warning(
                    "console replay failed", extra={"action": "ui_replay", "error": job.error}
                )

        job.task = asyncio.create_task(body(), name=f"ui-replay-{job.id}")
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP:
            oldest = next(iter(self._jobs.values()))
            if oldest.running:
                break
            self._jobs.popitem(last=False)
        return job

    async def wait(self, job: Job, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for ``job`` to end (it goes on after that)."""
        if job.task is not None:
            await asyncio.wait({job.task}, timeout=timeout)

    async def stop(self) -> None:
        """Cancel the running jobs and wait for them (each ends failed: interrupted)."""
        running = [j.task for j in self._jobs.values() if j.task is not None and j.running]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def jobs_of(app: Any) -> Jobs:
    """The jobs registry of ``app`` (made on first use)."""
    jobs: Jobs | None = getattr(app.state, "ui_jobs", None)
    if jobs is None:
        jobs = Jobs()
        app.state.ui_jobs = jobs
    return jobs


def stop_jobs_with(app: FastAPI) -> None:
    """Make ``app``'s lifespan cancel the console's running jobs when it ends."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                yield state
            finally:
                await jobs_of(application).stop()

    app.router.lifespan_context = lifespan
