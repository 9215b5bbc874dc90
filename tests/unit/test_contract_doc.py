"""docs/CONTRACT.md: one example per event type, each valid and equal to contracts/examples.py.

The examples in the document are ``example_event(type)`` with the fixed id and time of the
AsyncAPI document; when a model or an example changes, this test says which block to
regenerate. Every dead-letter reason and every exchange of the topology is documented.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

from consumer.broker import Names
from consumer.broker.topology import AUDIT_BINDINGS, CAPACITY_BINDINGS
from contracts import DeadLetterReason, EventType, decode
from contracts.asyncapi import EXAMPLE_TIME, example_id
from contracts.examples import example_event

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "CONTRACT.md"
TYPE_BLOCK = re.compile(r"^### `([a-z_.]+)`\n.*?```json\n(.*?)```", re.DOTALL | re.MULTILINE)


def examples() -> dict[str, str]:
    return dict(TYPE_BLOCK.findall(DOC.read_text()))


def generator() -> ModuleType:
    path = ROOT / "scripts" / "contract_examples.py"
    spec = importlib.util.spec_from_file_location("contract_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_section_is_up_to_date() -> None:
    text = DOC.read_text()
    assert generator().render(text) == text, "run scripts/contract_examples.py"


def test_every_type_has_an_example() -> None:
    assert set(examples()) == {t.value for t in EventType}


def test_examples_decode_and_match_contracts_examples() -> None:
    for name, block in examples().items():
        event_type = EventType(name)
        event = decode(block.encode())
        assert event.type is event_type
        expected = json.loads(example_event(event_type, id=example_id(event_type),
                                            time=EXAMPLE_TIME))  # fmt: skip
        assert json.loads(block) == expected, f"docs/CONTRACT.md: regenerate the {name} example"


def test_reasons_and_topology_are_documented() -> None:
    text = DOC.read_text()
    for reason in DeadLetterReason:
        assert f"| `{reason.value}` |" in text
    names = Names("<prefix>")
    for name in [*names.all_exchanges(), names.audit, names.capacity, names.dead]:
        assert f"`{name}`" in text
    for binding in (*AUDIT_BINDINGS, *CAPACITY_BINDINGS):
        assert f"`{binding}`" in text
