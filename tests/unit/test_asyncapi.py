"""The AsyncAPI 3.0 document: up to date, valid against the official schema, complete.

The official AsyncAPI 3.0.0 JSON Schema comes from the npm package ``@asyncapi/specs``
(no PyPI package ships it), installed into ``.venv/npm`` by ``make install``; no network
is used here.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from contracts import INBOUND_TYPES, OUTBOUND_TYPES, EventType, decode
from contracts.asyncapi import ASYNCAPI_PATH, asyncapi_document, check_asyncapi
from contracts.export import render_schema

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(
    os.environ.get(
        "TASKLEDGER_ASYNCAPI_SPECS", ROOT / ".venv" / "npm" / "node_modules" / "@asyncapi" / "specs"
    )
)


@pytest.fixture(scope="module")
def official() -> jsonschema_rs.Draft7Validator:
    path = SPECS / "schemas" / "3.0.0-without-$id.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make install` (npm package @asyncapi/specs)")
    return jsonschema_rs.Draft7Validator(json.loads(path.read_text()))


def test_checked_in_document_is_up_to_date() -> None:
    assert check_asyncapi() == [], "run `taskledger schema export`"
    assert ASYNCAPI_PATH == ROOT / "docs" / "asyncapi.json"


def test_valid_against_the_official_asyncapi_3_schema(
    official: jsonschema_rs.Draft7Validator,
) -> None:
    document = json.loads(ASYNCAPI_PATH.read_text())
    errors = [f"{list(e.instance_path)}: {e.message[:200]}" for e in official.iter_errors(document)]
    assert errors == []


def test_the_official_schema_catches_a_broken_document(
    official: jsonschema_rs.Draft7Validator,
) -> None:
    broken: dict[str, Any] = copy.deepcopy(asyncapi_document())
    del broken["info"]
    broken["operations"]["receiveTaskRequested"]["action"] = "publish"  # AsyncAPI 2 wording
    assert not official.is_valid(broken)


def test_every_type_has_its_channel_operation_and_message() -> None:
    document = asyncapi_document()
    messages = document["components"]["messages"]
    assert {m["name"] for m in messages.values()} == {t.value for t in EventType}
    addresses = {c["address"] for c in document["channels"].values()}
    assert {t.value for t in INBOUND_TYPES} <= addresses  # routing key == type
    assert {"dispatch.{agent_type}.{agent_id}", "recovery.{agent_type}"} <= addresses
    actions = [o["action"] for o in document["operations"].values()]
    assert actions.count("receive") == len(INBOUND_TYPES)
    assert actions.count("send") == len(OUTBOUND_TYPES)
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in document["channels"]


def test_examples_are_valid_events_and_match_their_payload_schema() -> None:
    for message in asyncapi_document()["components"]["messages"].values():
        [example] = message["examples"]
        body = json.dumps(example["payload"]).encode()
        assert decode(body).type.value == message["name"]
        jsonschema_rs.validator_for(message["payload"]["schema"]).validate(example["payload"])


def test_the_document_is_deterministic() -> None:
    assert render_schema(asyncapi_document()) == render_schema(asyncapi_document())
