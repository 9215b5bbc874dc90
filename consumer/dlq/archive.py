"""``export`` and ``import``: dead letters to a JSONL file, byte for byte, and back.

Both stream: an export writes each line as the pass reads it (to ``<file>.partial``, fsynced
and renamed once complete, before anything is acked with ``--purge``); an import reads the
file twice, a line at a time: once to validate all of it, then to publish, through the
dead-letter exchange, with confirms in windows of :data:`IMPORT_WINDOW`.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec
from pydantic import BaseModel

from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable, InvalidArgument
from consumer.core.settings import Settings, redact_text
from consumer.dlq.codec import decode_value, encode_value, properties_from_json, properties_to_json
from consumer.dlq.connection import CONNECTION_LOST, broker_connection
from consumer.dlq.lease import dead_letter_lease
from consumer.dlq.letters import DeadLetter, Filters
from consumer.dlq.publisher import Publisher, PublishRefused
from consumer.dlq.scan import DeadQueueScan
from consumer.operations.actions import ActionRecorder, default_actor

#: Format tag of every line ``export`` writes.
EXPORT_FORMAT = "taskledger.dlq/1"
PREVIEW_LIMIT = 4096
#: Messages an import publishes before it waits for their confirms.
IMPORT_WINDOW = 128


class ExportResult(BaseModel):
    """What ``export`` wrote and (with ``purge``) removed from the dead queue."""

    status: Literal["completed", "interrupted"] = "completed"
    file: str
    total: int = 0
    scanned: int = 0
    exported: int = 0
    purged: int = 0
    errors: list[str] = []
    action_ids: list[int] = []


class ImportResult(BaseModel):
    """How many exported messages were put back into the dead queue."""

    status: Literal["completed", "interrupted"] = "completed"
    file: str
    read: int = 0
    imported: int = 0
    errors: list[str] = []
    action_ids: list[int] = []


def export_record(letter: DeadLetter, exported_at: datetime) -> dict[str, Any]:
    """One JSONL record: byte-exact body (base64), tagged properties and headers, preview."""
    preview_body: Any
    if letter.envelope is not None:
        preview_body = letter.envelope
    else:
        preview_body = letter.body[:PREVIEW_LIMIT].decode("utf-8", errors="replace")
    return {
        "format": EXPORT_FORMAT,
        "id": letter.id,
        "fingerprint": letter.fingerprint,
        "routing_key": letter.routing_key,
        "exported_at": exported_at.isoformat(),
        "properties": properties_to_json(letter.properties),
        "headers": encode_value(letter.headers),
        "body_b64": base64.b64encode(letter.body).decode("ascii"),
        "preview": {
            "type": letter.event_type,
            "subject": letter.subject,
            "reason": letter.reason,
            "error": letter.error_line,
            "failed_at": letter.failed_at.isoformat() if letter.failed_at else None,
            "body": preview_body,
        },
    }


@dataclass(frozen=True)
class ExportedMessage:
    """A message read back from an export file, ready to publish."""

    body: bytes
    properties: spec.Basic.Properties
    routing_key: str


def parse_export_line(line: bytes, number: int) -> ExportedMessage:
    """Parse one export line; raises :class:`InvalidArgument` naming the line."""
    try:
        record = orjson.loads(line)
        if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not a {EXPORT_FORMAT} record")
        headers = decode_value(record.get("headers") or {})
        if not isinstance(headers, dict):
            raise ValueError("headers is not an object")
        return ExportedMessage(
            body=base64.b64decode(record["body_b64"], validate=True),
            properties=properties_from_json(record.get("properties") or {}, headers),
            routing_key=str(record.get("routing_key") or ""),
        )
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise InvalidArgument(f"line {number}: {exc}") from None


def iter_export(path: Path) -> Iterator[ExportedMessage]:
    """Read an export file line by line (memory does not grow with its size).

    Raises :class:`InvalidArgument` naming the first bad line, or when it cannot be read.
    """
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield parse_export_line(line, number)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}") from None


def validate_export(path: Path) -> int:
    """Check every line of an export file; return how many messages it holds."""
    return sum(1 for _ in iter_export(path))


def read_export(path: Path) -> list[ExportedMessage]:
    """Read and validate a whole export file into memory (small files, tests)."""
    return list(iter_export(path))


class DurableWriter:
    """Lines written to ``<path>.partial`` as they come, then fsynced and renamed to ``path``.

    Raises :class:`InvalidArgument` if ``path`` exists or cannot be written; an unfinished
    file is removed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".partial")
        try:
            self._fh: BinaryIO = self._tmp.open("xb")
        except OSError as exc:
            raise InvalidArgument(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, line: bytes) -> None:
        """Append one line (buffered)."""
        try:
            self._fh.write(line)
        except OSError as exc:
            self.abandon()
            raise InvalidArgument(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def abandon(self) -> None:
        """Close and remove the unfinished file."""
        with suppress(OSError):
            self._fh.close()
        with suppress(OSError):
            self._tmp.unlink()

    def commit(self) -> None:
        """fsync the file, rename it to ``path`` and fsync the directory."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            if self.path.exists():
                raise FileExistsError(self.path)
            os.replace(self._tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.abandon()
            raise InvalidArgument(f"cannot write {self.path}: {exc.strerror or exc}") from None


def write_durably(path: Path, lines: Iterable[bytes]) -> None:
    """Write ``lines`` to ``path`` through a temporary file, fsync it and its directory."""
    writer = DurableWriter(path)
    for line in lines:
        writer.write(line)
    writer.commit()


async def export(
    settings: Settings,
    filters: Filters,
    out: Path,
    *,
    purge: bool = False,
    actor: str | None = None,
) -> ExportResult:
    """Write the matching dead letters to ``out`` (JSONL), fsync, then with ``purge`` ack them.

    Records ``dlq.export`` (and ``dlq.purge``) in ``operator_actions``. Nothing is acked
    unless the file is durably written. Raises :class:`InvalidArgument` (``out`` exists),
    :class:`DatabaseUnavailable`, :class:`BrokerUnavailable`.
    """
    out = Path(out)
    if out.exists():
        raise InvalidArgument(f"{out} already exists: choose another file")
    if not out.parent.is_dir():
        raise InvalidArgument(f"directory {out.parent} does not exist")
    actor = actor or default_actor(settings)
    params = {**filters.params(), "file": str(out), "purge": purge}
    result = ExportResult(file=str(out))
    recorder = await ActionRecorder.open(settings)

    async def record() -> None:
        for action in ("dlq.export", "dlq.purge") if purge else ("dlq.export",):
            action_id = await recorder.record_quietly(action, actor, params, _payload(result))
            if action_id is not None:
                result.action_ids.append(action_id)

    try:
        async with dead_letter_lease(settings) as conn:
            await _recorded(
                _export_pass(conn, settings, filters, out, purge, result), result, record
            )
    finally:
        await recorder.close()
    return result


Outcome = ExportResult | ImportResult
_INTERRUPTIONS: tuple[type[BaseException], ...] = (
    BrokerUnavailable,
    PublishRefused,
    *CONNECTION_LOST,
)


def _payload(result: Outcome) -> dict[str, Any]:
    """What ``operator_actions.result`` keeps of an outcome (not the ids of its own rows)."""
    return result.model_dump(mode="json", exclude={"action_ids"})


async def _recorded(
    work: Coroutine[Any, Any, None], result: Outcome, record: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work``, then ``record()`` it, also when it is interrupted or cancelled."""
    try:
        await work
    except asyncio.CancelledError:
        result.status = "interrupted"
        result.errors.append("interrupted by the operator")
        await record()
        raise
    except _INTERRUPTIONS as exc:
        result.status = "interrupted"
        result.errors.append(redact_text(str(exc)) or type(exc).__name__)
    await record()


async def _export_pass(
    conn: AbstractConnection,
    settings: Settings,
    filters: Filters,
    out: Path,
    purge: bool,
    result: ExportResult,
) -> None:
    names = Names(settings.prefix)
    now = datetime.now(UTC)
    async with DeadQueueScan(conn, names) as scan:
        result.total = scan.depth
        tags: list[int] = []  # what --purge acks once the file is on disk: ints, not bodies
        writer = DurableWriter(out)
        try:
            async with aclosing(scan.messages()) as letters:
                async for letter in letters:
                    result.scanned += 1
                    if not filters.matches(letter):
                        continue
                    writer.write(orjson.dumps(export_record(letter, now)) + b"\n")
                    tags.append(letter.delivery_tag)
                    if filters.limit is not None and len(tags) >= filters.limit:
                        break
            await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abandon()
            raise
        result.exported = len(tags)
        if purge:
            for tag in tags:
                await scan.ack_tag(tag)
                result.purged += 1


async def import_file(
    settings: Settings,
    path: Path,
    *,
    actor: str | None = None,
    connection: AbstractConnection | None = None,
) -> ImportResult:
    """Put the messages of an export file back into the dead queue (via the dlx), confirmed.

    The file is validated whole before anything is published. Importing a file twice
    puts its messages in twice. Records ``dlq.import``. Raises :class:`InvalidArgument`,
    :class:`DatabaseUnavailable`, :class:`BrokerUnavailable`.
    """
    path = Path(path)
    count = await asyncio.to_thread(validate_export, path)
    actor = actor or default_actor(settings)
    names = Names(settings.prefix)
    result = ImportResult(file=str(path), read=count)
    recorder = await ActionRecorder.open(settings)

    async def record() -> None:
        params = {"file": str(path), "read": result.read}
        action_id = await recorder.record_quietly("dlq.import", actor, params, _payload(result))
        if action_id is not None:
            result.action_ids.append(action_id)

    async def publish_one(publisher: Publisher, message: ExportedMessage) -> None:
        await publisher.publish(message.body, message.properties, names.dlx, message.routing_key)
        result.imported += 1

    async def publish_all(conn: AbstractConnection) -> None:
        async with Publisher(conn) as publisher:
            if not await publisher.exchange_exists(names.dlx):
                raise InvalidArgument(f"exchange {names.dlx} does not exist: run the service")
            batch: list[ExportedMessage] = []
            for message in iter_export(path):  # read again, a line at a time
                batch.append(message)
                if len(batch) >= IMPORT_WINDOW:
                    await _publish_batch(publisher, batch, publish_one)
            await _publish_batch(publisher, batch, publish_one)

    try:
        async with dead_letter_lease(settings), broker_connection(settings, connection) as conn:
            await _recorded(publish_all(conn), result, record)
    finally:
        await recorder.close()
    return result


async def _publish_batch(
    publisher: Publisher,
    batch: list[ExportedMessage],
    publish_one: Callable[[Publisher, ExportedMessage], Awaitable[None]],
) -> None:
    """Publish ``batch`` with its confirms awaited together, then empty it."""
    outcomes = await asyncio.gather(
        *(publish_one(publisher, m) for m in batch), return_exceptions=True
    )
    batch.clear()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
