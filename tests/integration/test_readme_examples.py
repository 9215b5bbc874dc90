"""The README's "Publishing events" examples, extracted from the README and run as written.

Every ``python`` block of that section runs in a subprocess pointed at this test's broker
and prefix (``TASKLEDGER_AMQP_URL``, ``TASKLEDGER_PREFIX``); the events the publishing
examples print must then be recorded by a real consumer, with nothing dead-lettered. The
``json`` block (the any-language example) must be a valid message for its routing key.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumer.broker import Names
from consumer.core.settings import Settings
from contracts import EventType, decode
from tests.support.dead_letters import drain
from tests.support.traffic import burst

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
PUBLISHED = re.compile(r"^published ([0-9a-f-]{36})$", re.MULTILINE)


def section(title: str) -> str:
    """The text of README section ``## title`` (up to the next ``## ``)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(section("Publishing events")) if lang == language]


def run_example(code: str, settings: Settings) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "TASKLEDGER_AMQP_URL": settings.amqp,
        "TASKLEDGER_PREFIX": settings.prefix,
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, f"example failed:\n{code}\n{done.stderr}"
    return done.stdout


def test_the_section_has_the_promised_examples() -> None:
    python = blocks("python")
    assert len(python) == 4
    text = "\n".join(python)
    for needle in ("consumer.producer import Publisher", "import aio_pika",
                   "cloudevents.core.bindings import rabbitmq", "jsonschema_rs"):  # fmt: skip
        assert needle in text
    assert len(blocks("json")) == 1


async def test_publishing_examples_are_recorded(
    amqp: AbstractConnection, topology: AbstractChannel, settings: Settings, pool: asyncpg.Pool
) -> None:
    published: list[str] = []
    for code in blocks("python"):
        out = run_example(code, settings)
        published += PUBLISHED.findall(out)
        if "jsonschema_rs" in code:
            assert out.strip() == "valid"
    assert len(published) == 3
    await burst(settings, only=None)
    rows = await pool.fetch("SELECT event_id FROM event_ledger")
    assert {str(r["event_id"]) for r in rows} == set(published)
    assert await drain(amqp, Names(settings.prefix).dead) == []


def test_any_language_example_is_a_valid_message() -> None:
    [block] = blocks("json")
    text = section("Publishing events")
    key = re.search(r"routing\s+key `([a-z_.]+)`", text)
    assert key is not None
    event = decode(block.encode(), routing_key=key.group(1))
    assert event.type == EventType.TASK_STEP
    assert uuid.UUID(json.loads(block)["id"]) == event.id


@pytest.mark.parametrize("path", ["README.md", *(str(p.relative_to(ROOT))
                                                 for p in sorted((ROOT / "docs").glob("*.md")))])  # fmt: skip
def test_no_link_leaves_the_repository(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "shared/DESIGN.md" not in text
    assert re.findall(r"\]\((?:https?:)?//[^)]*\)", text) == []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert (ROOT / path).parent.joinpath(target).exists(), f"{path}: broken link {target}"
