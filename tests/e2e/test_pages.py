"""Every console page in Chromium, on a laptop and a phone: no console error, no failed
request, no sideways scrolling at 390 px; a screenshot of each (docs/img with
``make screenshots``). Also: searching tasks by service and intent finds what the JSON API
finds with the same filters, and the dead letters need the token.

The data is the operators' stories of tests/support/seed.py plus dead letters made by hand;
no consumer runs, so this is quick.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from consumer.broker import Names
from consumer.core.settings import Settings
from tests.e2e.browser import Browser
from tests.e2e.conftest import TOKEN
from tests.support.dead_letters import consumer_dead_letter, event_body, wait_depth
from tests.support.seed import Seeded, seed_url


async def dead_letters(channel: AbstractChannel, names: Names, task: uuid.UUID) -> None:
    """Three dead letters of two reasons, one of them naming ``task``."""
    await consumer_dead_letter(channel, names, event_body(task=task))
    await consumer_dead_letter(channel, names, event_body(task=task))
    await consumer_dead_letter(channel, names, b"{oops", reason="invalid_json", error="eof")
    await wait_depth(channel, names.dead, lambda n: n == 3, "3 dead letters")


async def test_every_page_on_a_laptop_and_a_phone_and_the_task_search(
    settings: Settings, db_url: str, topology: AbstractChannel, console: str, browser: Browser
) -> None:
    """One test, not three: each test pays for its own API, browser and database."""
    seeded: Seeded = await seed_url(db_url)
    task = seeded["kuma_deploy"]
    await dead_letters(topology, Names(settings.prefix), task)
    await search_by_service_and_intent(browser, console, seeded)

    browser.visit("/ui/", page="overview")  # readable before logging in
    assert browser.has("dlq-reasons-login")  # but not the dead letters
    browser.visit("/ui/dead-letters", page="login")  # they need the token first
    browser.shoot("login")
    browser.fill("login-token", "not-the-token")
    with browser.allowing(403):
        browser.click("login-submit", page="error")
    assert browser.text("error-status").startswith("403")
    browser.visit("/ui/dead-letters", page="login")
    browser.fill("login-token", TOKEN)
    browser.click("login-submit", page="dead-letters")
    group = browser.testids("dlq-group")[0]
    group_path = browser.testid("dlq-group-open", within=group).get_attribute("href")
    browser.visit(group_path, page="dead-letter-group")
    message_path = browser.testid("dlq-message-open").get_attribute("href")

    pages = {
        "overview": ("/ui/", "overview"),
        "dead-letters": ("/ui/dead-letters", "dead-letters"),
        "dead-letter-group": (group_path, "dead-letter-group"),
        "dead-letter": (message_path, "dead-letter"),
        "failures": ("/ui/failures?window=30d", "failures"),
        "tasks": ("/ui/tasks", "tasks"),
        "task": (f"/ui/tasks/{task}", "task"),
        "pause-queue": ("/ui/pause-queue", "pause-queue"),
        "actions": ("/ui/actions", "actions"),
    }
    for name, (path, page) in pages.items():
        browser.visit(path, page=page)
        browser.shoot(name)
    browser.mobile()
    for name, (path, page) in pages.items():
        browser.visit(path, page=page)  # checks: no sideways scroll at 390 px
        if name == "overview":
            browser.shoot("mobile")
    browser.desktop()

    # What the pages show is the seed, not a blank frame.
    browser.visit(f"/ui/tasks/{task}", page="task")
    assert "Uptime Kuma" in browser.text("task-request")
    assert len(browser.testids("timeline-entry")) >= 4  # requested .. completed, steps
    browser.visit("/ui/pause-queue", page="pause-queue")
    waiting = {row.get_attribute("data-task-id") for row in browser.testids("pause-row")}
    assert waiting == {str(seeded["pending"]), str(seeded.unrequested_waiting)}
    browser.visit("/ui/dead-letters", page="dead-letters")
    counts = {
        row.get_attribute("data-reason"): int(browser.text("dlq-group-count", within=row))
        for row in browser.testids("dlq-group")
    }
    assert counts == {"schema_violation": 2, "invalid_json": 1}
    checks_catch_problems(browser)


def checks_catch_problems(browser: Browser) -> None:
    """The page checks are not blind: a failed request, a console error and a page wider
    than the phone each fail them."""
    with pytest.raises(AssertionError, match="answered 404"):
        browser.visit("/ui/no-such-page")
    browser.visit("/ui/", page="overview")
    browser.driver.execute_script("console.error('planted')")
    with pytest.raises(AssertionError, match="planted"):
        browser.check("a console error")
    browser.mobile()
    browser.visit("/ui/", page="overview")
    browser.driver.execute_script(
        "const d = document.createElement('div'); d.style.width = '900px';"
        "d.textContent = 'wide'; document.body.appendChild(d);"
    )
    with pytest.raises(AssertionError, match="scrolls sideways"):
        browser.check("a wide page")
    browser.desktop()


async def search_by_service_and_intent(browser: Browser, console: str, seeded: Seeded) -> None:
    """Search tasks by service, then by service and intent, through the form: the pages
    list what the JSON API answers to the same filters; a result opens its task."""
    query = {"service": "kuma", "intent": "deploy_kuma"}
    async with httpx.AsyncClient(base_url=console) as api:
        answer = await api.get("/api/v1/audit/tasks", params=query)
        assert answer.status_code == 200, answer.text
        expected = [item["task_id"] for item in answer.json()["items"]]
        by_service = await api.get("/api/v1/audit/tasks", params={"service": "kuma"})
        kuma = {item["task_id"] for item in by_service.json()["items"]}
    assert str(seeded["kuma_deploy"]) in expected
    assert set(expected) < kuma  # the intent narrows the search

    browser.visit("/ui/tasks", page="tasks")
    browser.fill("filter-service", "kuma")
    browser.click("task-search-submit", page="tasks")
    shown = [row.get_attribute("data-task-id") for row in browser.testids("task-row")]
    assert set(shown) == kuma

    browser.fill("filter-intent", "deploy_kuma")
    browser.click("task-search-submit", page="tasks")
    shown = [row.get_attribute("data-task-id") for row in browser.testids("task-row")]
    assert shown == expected  # same tasks, same order as the API
    url = browser.driver.current_url  # a link to share: the filters are in it
    assert "service=kuma" in url and "intent=deploy_kuma" in url, url

    first = browser.testids("task-row")[0]
    browser.click("task-link", within=first, page="task")
    assert browser.driver.current_url.endswith(f"/ui/tasks/{expected[0]}")
    kinds = {e.get_attribute("data-kind") for e in browser.testids("timeline-entry")}
    assert "event" in kinds
