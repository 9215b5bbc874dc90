"""Dead-letter operations: look at, filter, replay, export and import ``<prefix>.dead``.

The package face: ``from consumer import dlq; await dlq.summary(settings)``. The work is
done in its modules: :mod:`~consumer.dlq.codec` (AMQP values to JSON and back),
:mod:`~consumer.dlq.letters` (what a dead letter is, filters), :mod:`~consumer.dlq.scan`
(reading the queue without consuming it), :mod:`~consumer.dlq.publisher` (confirmed
publishes), :mod:`~consumer.dlq.views` (summary, list, show), :mod:`~consumer.dlq.replayer`
(replay) with :mod:`~consumer.dlq.replay_headers`, :mod:`~consumer.dlq.archive` (export,
import), :mod:`~consumer.dlq.connection` (the broker connection they share),
:mod:`~consumer.dlq.lease` (one operation at a time: a second one gets
:class:`DeadLettersBusy`). Operator
actions are recorded by :mod:`consumer.operations.actions`.
"""

from consumer.dlq.archive import (
    EXPORT_FORMAT,
    ExportedMessage,
    ExportResult,
    ImportResult,
    export,
    export_record,
    import_file,
    iter_export,
    parse_export_line,
    read_export,
)
from consumer.dlq.codec import (
    DELIVERY_ANNOTATIONS,
    PROPERTY_FIELDS,
    decode_value,
    encode_value,
    fingerprint,
    jsonable,
    parse_envelope,
    properties_from_json,
    properties_to_json,
    stored_headers,
    with_headers,
)
from consumer.dlq.lease import BUSY, DeadLettersBusy, dead_letter_lease
from consumer.dlq.letters import (
    H_REPLAY_RUN,
    DeadLetter,
    Filters,
    Origin,
    deaths_of,
    inspect,
    resolve_origin,
)
from consumer.dlq.publisher import Publisher, PublishRefused
from consumer.dlq.replay_headers import (
    FAILURE_HEADERS,
    H_LAST_REASON,
    H_REPLAYED_AT,
    original_routing_key,
    replay_headers,
)
from consumer.dlq.replayer import REPLAY_WINDOW, Move, ProgressCallback, ReplayResult, replay
from consumer.dlq.scan import DeadQueueScan
from consumer.dlq.views import (
    DeadLetterDetail,
    DeadLetterInfo,
    DeadLetterNotFound,
    DlqGroup,
    DlqListing,
    DlqSummary,
    error_pattern,
    list_dead_letters,
    show,
    summary,
)

__all__ = [
    "BUSY",
    "DELIVERY_ANNOTATIONS",
    "EXPORT_FORMAT",
    "FAILURE_HEADERS",
    "H_LAST_REASON",
    "H_REPLAYED_AT",
    "H_REPLAY_RUN",
    "PROPERTY_FIELDS",
    "REPLAY_WINDOW",
    "DeadLetter",
    "DeadLetterDetail",
    "DeadLetterInfo",
    "DeadLetterNotFound",
    "DeadLettersBusy",
    "DeadQueueScan",
    "DlqGroup",
    "DlqListing",
    "DlqSummary",
    "ExportResult",
    "ExportedMessage",
    "Filters",
    "ImportResult",
    "Move",
    "Origin",
    "ProgressCallback",
    "PublishRefused",
    "Publisher",
    "ReplayResult",
    "dead_letter_lease",
    "deaths_of",
    "decode_value",
    "encode_value",
    "error_pattern",
    "export",
    "export_record",
    "fingerprint",
    "import_file",
    "inspect",
    "iter_export",
    "jsonable",
    "list_dead_letters",
    "original_routing_key",
    "parse_envelope",
    "parse_export_line",
    "properties_from_json",
    "properties_to_json",
    "read_export",
    "replay",
    "replay_headers",
    "resolve_origin",
    "show",
    "stored_headers",
    "summary",
    "with_headers",
]
