"""Intent parsing, the cursor and the task filter: pure code, no services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from pydantic import ValidationError

from consumer.core.errors import InvalidArgument
from consumer.queries import (
    VERB_SYNONYMS,
    TaskFilter,
    decode_cursor,
    encode_cursor,
    parse_intent,
)
from contracts import TaskStatus


def _matches(pattern: str, text: str) -> bool:
    """Evaluate the PostgreSQL pattern with Python's re (``\\m`` is a word start there)."""
    return re.search(pattern.replace(r"\m", r"\b"), text, re.IGNORECASE) is not None


@pytest.mark.parametrize(
    ("text", "verb", "service"),
    [
        ("deploy_kuma", "deploy", "kuma"),
        ("restart_dns", "restart", "dns"),
        ("Deploy_Kuma", "deploy", "Kuma"),
        ("deploy:kuma", "deploy", "kuma"),
        ("deploy kuma", "deploy", "kuma"),
        ("  restart_node_exporter ", "restart", "node_exporter"),
        ("install_kuma", "deploy", "kuma"),
        ("bounce_dns", "restart", "dns"),
        ("upgrade_postgres", "update", "postgres"),
        ("rollout_kuma", "deploy", "kuma"),
        ("deploy", "deploy", None),
        ("deploy_", "deploy", None),
        ("frobnicate_kuma", "frobnicate", "kuma"),
        ("backup_uptime-kuma", "backup", "uptime-kuma"),
    ],
)
def test_parse_intent(text: str, verb: str, service: str | None) -> None:
    intent = parse_intent(text)
    assert (intent.verb, intent.service) == (verb, service)
    assert verb in intent.words


@pytest.mark.parametrize(
    "text", ["", "_kuma", "9deploy_kuma", "deploy_kuma!", "dé_kuma", "deploy_/etc"]
)
def test_parse_intent_refuses_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument, match="intent"):
        parse_intent(text)


def test_synonyms_share_one_pattern() -> None:
    assert parse_intent("install_x").pattern == parse_intent("deploy_x").pattern
    assert parse_intent("reboot_x").words == parse_intent("restart_x").words
    unknown = parse_intent("frobnicate_x")
    assert unknown.words == ("frobnicate",)


@pytest.mark.parametrize(
    ("intent", "text", "expected"),
    [
        ("deploy_kuma", "Deploy kuma 2.7 to the edge", True),
        ("deploy_kuma", "helm install kuma", True),
        ("deploy_kuma", "roll out kuma 2.7", True),
        ("deploy_kuma", "roll-out kuma", True),
        ("deploy_kuma", "the kuma deployment", True),
        ("deploy_kuma", "redeploy kuma", True),
        ("deploy_kuma", "restart kuma", False),
        ("restart_dns", "Bounce the DNS resolver", True),
        ("restart_dns", "systemctl restart coredns", True),
        ("restart_dns", "reboot the box", True),
        ("restart_dns", "deploy coredns", False),
        ("start_kuma", "restart kuma", False),
        ("start_kuma", "start kuma", True),
        ("backup_db", "back up the volume", True),
        ("backup_db", "take a backup", True),
        ("update_kuma", "upgrade kuma", True),
        ("rollback_kuma", "roll back kuma", True),
    ],
)
def test_pattern_matches_verb_and_synonyms(intent: str, text: str, expected: bool) -> None:
    assert _matches(parse_intent(intent).pattern, text) is expected


def test_every_synonym_matches_itself() -> None:
    for verb, words in VERB_SYNONYMS.items():
        pattern = parse_intent(f"{verb}_svc").pattern
        for word in words:
            assert _matches(pattern, f"please {word} now"), (verb, word)


def test_cursor_round_trip_and_refusal() -> None:
    when = datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    task_id = uuid4()
    assert decode_cursor(encode_cursor(when, task_id)) == (when, task_id)
    for bad in ("", "!!!", "bm9wZQ", encode_cursor(when, task_id)[:-3]):
        with pytest.raises(InvalidArgument, match="cursor"):
            decode_cursor(bad)


def test_filter_args_pass_the_intent_service_apart() -> None:
    f = TaskFilter(intent="deploy_kuma", services=["dns", "nginx"], service_mode="any")
    statuses, _, _, any_of, all_of, _, _, pattern, project, service, word, has = f.filter_args()
    assert statuses is None
    assert any_of == ["dns", "nginx"]
    # the intent's service is matched apart: touched, or (unfinished) requested or planned
    assert all_of is None
    assert (service, word) == ("kuma", r"\mkuma\M")
    assert project is None and has is None
    assert pattern is not None and "deploy" in pattern
    g = TaskFilter(services=["dns", "kuma"], service_mode="all", statuses=[TaskStatus.FAILED])
    args = g.filter_args(require=["traefik"])
    assert args[0] == ["failed"]
    assert args[3] is None
    assert args[4] == ["traefik", "dns", "kuma"]


def test_filter_validation() -> None:
    with pytest.raises(ValidationError):
        TaskFilter(limit=0)
    with pytest.raises(ValidationError):
        TaskFilter(limit=501)
    with pytest.raises(ValidationError):
        TaskFilter(services=["bad\x00name"])
    with pytest.raises(ValidationError):
        TaskFilter(intent="!!")
    with pytest.raises(ValidationError):
        TaskFilter(cursor="garbage")
    naive = TaskFilter(since=datetime(2026, 1, 1))
    assert naive.since == datetime(2026, 1, 1, tzinfo=UTC)
    shifted = TaskFilter(until=datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.until == datetime(2026, 1, 1, 0, tzinfo=UTC)
