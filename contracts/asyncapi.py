"""The AsyncAPI 3.0 document of wire contract v1, generated from the models.

Every channel, operation and message taskledger has: the inbound types (published by
agents, the orchestrator and operators to ``<prefix>.events`` with the routing key equal
to the type; taskledger *receives* them) and the outbound ones (``dispatch.assigned``
and ``task.recovery_requested`` on ``<prefix>.dispatch``; taskledger *sends* them). Each
message's payload is the type's exported JSON Schema (:func:`contracts.export.json_schemas`),
its example is :mod:`contracts.examples`. The document is checked in as
``docs/asyncapi.json``; :func:`check_asyncapi` (and a test) says when it drifts, and a
test validates it against the official AsyncAPI 3.0.0 JSON Schema.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from contracts.enums import AgentType, EventType
from contracts.envelope import SCHEMA_VERSION
from contracts.events import DATA_MODELS, INBOUND_TYPES, OUTBOUND_TYPES
from contracts.examples import example_event
from contracts.export import json_schemas, render_schema

__all__ = [
    "ASYNCAPI_PATH",
    "EXAMPLE_TIME",
    "asyncapi_document",
    "check_asyncapi",
    "example_id",
    "export_asyncapi",
]

ASYNCAPI_PATH: Final = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"
"""Where the checked-in document lives (in a source checkout)."""

SCHEMA_FORMAT: Final = "application/schema+json;version=draft-2020-12"
"""The payload schemas are JSON Schema 2020-12, as exported to ``contracts/schemas``."""

CONTENT_TYPE: Final = "application/cloudevents+json"
EXAMPLE_TIME: Final = datetime(2025, 6, 1, 20, 0, 0, tzinfo=UTC)
"""The ``time`` of every documented example (fixed: the document is deterministic)."""

_EXAMPLE_NAMESPACE: Final = uuid.UUID("0b8f5c1e-6d4a-4c2b-9e7f-3a1d2c4b5e6f")
_AMQP_BINDING: Final = "0.3.0"
_PARTS = re.compile(r"[._]")


def example_id(event_type: EventType) -> uuid.UUID:
    """The fixed CloudEvents ``id`` of the documented example of ``event_type``."""
    return uuid.uuid5(_EXAMPLE_NAMESPACE, event_type.value)


def _camel(event_type: EventType) -> str:
    """``task.recovery_requested`` -> ``TaskRecoveryRequested``."""
    return "".join(part.capitalize() for part in _PARTS.split(event_type.value))


def _exchange(name: str) -> dict[str, Any]:
    return {"is": "routingKey", "bindingVersion": _AMQP_BINDING,
            "exchange": {"name": name, "type": "topic", "durable": True, "autoDelete": False,
                         "vhost": "/"}}  # fmt: skip


def _message(event_type: EventType, schema: dict[str, Any]) -> dict[str, Any]:
    payload = {k: v for k, v in schema.items() if k not in ("$id", "$schema")}
    model = DATA_MODELS[event_type]
    body = example_event(event_type, id=example_id(event_type), time=EXAMPLE_TIME)
    direction = "sent by taskledger" if event_type in OUTBOUND_TYPES else "received by taskledger"
    return {
        "name": event_type.value,
        "title": f"{event_type.value} v{SCHEMA_VERSION}",
        "summary": (model.__doc__ or "").strip().splitlines()[0],
        "description": (
            f"A CloudEvents 1.0 event in structured JSON mode ({direction}); `data` is a "
            f"{model.__name__}. Binary content mode (attributes in `ce-` headers or "
            "`cloudEvents_` application properties, the body the `data`) is accepted "
            "inbound too: see docs/CONTRACT.md."
        ),
        "contentType": CONTENT_TYPE,
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": payload},
        "correlationId": {
            "description": "The CloudEvents id: the idempotency key.",
            "location": "$message.payload#/id",
        },
        "bindings": {"amqp": {"messageType": event_type.value, "bindingVersion": _AMQP_BINDING}},
        "examples": [{"name": f"{_camel(event_type)}Example", "payload": orjson.loads(body)}],
    }


def _inbound(event_type: EventType, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = _camel(event_type)
    channel = {
        "address": event_type.value,
        "title": f"{event_type.value} on {prefix}.events",
        "description": (
            f"Routing key `{event_type.value}` on the topic exchange `{prefix}.events`: the "
            "routing key equals the event type."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {"amqp": _exchange(f"{prefix}.events")},
    }
    operation = {
        "action": "receive",
        "title": f"Record {event_type.value}",
        "channel": {"$ref": f"#/channels/{name}"},
        "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
        "bindings": {"amqp": {"ack": True, "bindingVersion": _AMQP_BINDING}},
    }
    return channel, operation


def _outbound(event_type: EventType, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = _camel(event_type)
    types = [t.value for t in AgentType]
    if event_type is EventType.DISPATCH_ASSIGNED:
        address = "dispatch.{agent_type}.{agent_id}"
        parameters: dict[str, Any] = {
            "agent_type": {"description": "The requested agent type.", "enum": types},
            "agent_id": {
                "description": "The agent chosen, or `any` when none was named.",
                "location": "$message.payload#/data/agent_id",
            },
        }
        what = "A dispatch request released to an agent: bind `dispatch.<type>.#`."
    else:
        address = "recovery.{agent_type}"
        parameters = {
            "agent_type": {
                "description": "The silent task's agent type, or `any`.",
                "enum": [*types, "any"],
            },
        }
        what = "A task whose agent went silent: bind `recovery.#` to take over."
    channel = {
        "address": address,
        "title": f"{event_type.value} on {prefix}.dispatch",
        "description": f"{what} Published mandatory and persistent, with confirms.",
        "parameters": parameters,
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {"amqp": _exchange(f"{prefix}.dispatch")},
    }
    operation = {
        "action": "send",
        "title": f"Send {event_type.value}",
        "channel": {"$ref": f"#/channels/{name}"},
        "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
        "bindings": {
            "amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": _AMQP_BINDING}
        },
    }
    return channel, operation


def asyncapi_document(prefix: str = "taskledger") -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every channel, operation and message.

    Pure and deterministic: the same models always give the same document.
    """
    schemas = json_schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in EventType:
        name = _camel(event_type)
        messages[name] = _message(event_type, schemas[f"{event_type.value}.json"])
        if event_type in INBOUND_TYPES:
            channels[name], operations[f"receive{name}"] = _inbound(event_type, prefix)
        else:
            channels[name], operations[f"send{name}"] = _outbound(event_type, prefix)
    return {
        "asyncapi": "3.0.0",
        "id": "urn:taskledger:contract:v1",
        "info": {
            "title": "taskledger wire contract",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Events in and out of taskledger over RabbitMQ (AMQP 0-9-1): CloudEvents 1.0 "
                "with `schemaversion` 1. Generated from the pydantic models in `contracts/` "
                "by `taskledger schema export`; the prose is docs/CONTRACT.md."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ; the exchange names carry the configured prefix.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def export_asyncapi(path: Path = ASYNCAPI_PATH) -> Path:
    """Write :func:`asyncapi_document` to ``path`` (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_schema(asyncapi_document()))
    return path


def check_asyncapi(path: Path = ASYNCAPI_PATH) -> list[str]:
    """One line per problem with the checked-in document; empty when up to date."""
    if not path.is_file():
        return [f"{path.name}: missing"]
    if path.read_bytes() != render_schema(asyncapi_document()):
        return [f"{path.name}: differs from the models (run `taskledger schema export`)"]
    return []
