"""JSON Schema export of wire contract v1, for producers in any language.

``envelope.json`` describes any v1 message; ``<type>.json`` describes one complete
message of that type: the envelope with ``type`` fixed and ``data`` the type's payload.
The files are checked into ``contracts/schemas/``; :func:`check_schemas` (and a test)
says when they drift from the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson

from contracts.enums import EventType
from contracts.envelope import Envelope
from contracts.events import DATA_MODELS, OUTBOUND_TYPES

__all__ = [
    "SCHEMA_DIALECT",
    "SCHEMA_DIR",
    "SCHEMA_ID_PREFIX",
    "check_schemas",
    "export_schemas",
    "json_schemas",
    "render_schema",
]

SCHEMA_DIR: Final = Path(__file__).parent / "schemas"
"""Where the checked-in schema files live."""

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX: Final = "urn:taskledger:schema:v1:"
"""``$id`` of a file is this prefix followed by its name without ``.json``."""

_TASK_SUBJECT: Final[dict[str, Any]] = {
    "type": "string",
    "format": "uuid",
    "title": "Subject",
    "description": "The task's UUID.",
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return every schema file of the contract, keyed by file name.

    ``envelope.json`` plus one ``<event type>.json`` per event type. Pure and
    deterministic: the same models always give the same result.
    """
    schemas = {"envelope.json": _envelope_schema()}
    for event_type in EventType:
        schemas[f"{event_type.value}.json"] = _event_schema(event_type)
    return schemas


def render_schema(schema: dict[str, Any]) -> bytes:
    """Serialise a schema the way the checked-in files are written."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export_schemas(out_dir: Path) -> list[Path]:
    """Write :func:`json_schemas` into ``out_dir`` (created if missing).

    Returns the paths written, sorted. Files already in ``out_dir`` that the contract no
    longer defines are left alone; :func:`check_schemas` reports them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas().items()):
        path = out_dir / name
        path.write_bytes(render_schema(schema))
        written.append(path)
    return written


def check_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Compare the schema files in ``directory`` with the models.

    Returns one line per problem (a file missing, differing, or not defined by the
    contract; ``asyncapi.json``, which ``schema export --out`` writes beside them, is
    checked by :func:`contracts.asyncapi.check_asyncapi`); empty when up to date.
    """
    expected = {name: render_schema(schema) for name, schema in json_schemas().items()}
    problems = []
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.read_bytes() != content:
            problems.append(f"{name}: differs from the models")
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if path.name not in expected and path.name != "asyncapi.json":
                problems.append(f"{path.name}: not defined by the contract")
    return problems


def _with_header(name: str, title: str, description: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_PREFIX}{name}",
        "title": title,
        "description": description,
        **body,
    }


def _envelope_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    schema["properties"]["type"] = {
        "type": "string",
        "enum": [t.value for t in EventType],
        "title": "Type",
        "description": "The event type; equals the routing key on the events exchange.",
    }
    schema["allOf"] = [
        {
            "if": {"properties": {"type": {"pattern": r"^(task|dispatch)\."}}},
            "then": {"required": ["subject"], "properties": {"subject": _TASK_SUBJECT}},
        }
    ]
    return _with_header(
        "envelope",
        "taskledger event envelope v1",
        "Any wire contract v1 message: a CloudEvents 1.0 envelope in structured JSON mode. "
        "Unknown top-level attributes are extensions and are kept; the type's own schema "
        "describes `data`.",
        schema,
    )


def _event_schema(event_type: EventType) -> dict[str, Any]:
    envelope = Envelope.model_json_schema()
    model = DATA_MODELS[event_type]
    payload = model.model_json_schema()
    defs: dict[str, Any] = payload.pop("$defs", {})
    for def_name, definition in envelope.get("$defs", {}).items():
        if defs.setdefault(def_name, definition) != definition:
            raise RuntimeError(f"schema definition {def_name!r} means two things")
    if model.__name__ in defs:
        raise RuntimeError(f"schema definition {model.__name__!r} means two things")
    defs[model.__name__] = payload

    properties: dict[str, Any] = dict(envelope["properties"])
    properties["type"] = {"const": event_type.value, "title": "Type", "type": "string"}
    properties["data"] = {"$ref": f"#/$defs/{model.__name__}"}
    required: list[str] = list(envelope["required"])
    if event_type.requires_subject:
        properties["subject"] = _TASK_SUBJECT
        required.append("subject")

    direction = "outbound, published by taskledger" if event_type in OUTBOUND_TYPES else "inbound"
    return _with_header(
        event_type.value,
        f"{event_type.value} v1",
        f"A complete `{event_type.value}` message ({direction}): the CloudEvents envelope "
        f"with `data` a {model.__name__}.",
        {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": True,
            "$defs": defs,
        },
    )
