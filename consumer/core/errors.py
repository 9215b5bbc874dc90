"""The package's own exceptions. Driver errors are translated into these at the edge."""

from __future__ import annotations


class TaskledgerError(Exception):
    """Base of every error taskledger raises on purpose."""


class ConfigurationError(TaskledgerError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class DatabaseUnavailable(TaskledgerError):
    """PostgreSQL cannot be reached or dropped the connection; the work may be retried as is."""


class DatabaseMisconfigured(DatabaseUnavailable):
    """PostgreSQL refuses us for a reason only an operator can fix: the login (SQLSTATE
    class 28), the database name (3D), missing tables or privileges (an unmigrated schema,
    the wrong role). Work is held exactly like an outage, never dead-lettered."""


class DatabaseTimeout(DatabaseUnavailable):
    """A statement ran past its timeout (SQLSTATE 57014 or the client's command timeout).

    Held like an outage at first; a batch that keeps timing out while the server answers
    a trivial query promptly is bisected like bad data (it is the batch, not the server).
    """


class BrokerUnavailable(TaskledgerError):
    """RabbitMQ cannot be reached or dropped the connection; the work may be retried as is."""


class MessageUnroutable(TaskledgerError):
    """The broker returned a mandatory publish: no queue is bound to take it."""


class ImmutableRecord(TaskledgerError):
    """The database refused to alter a finished task or an append-only row (tamper guard)."""


class TaskNotFound(TaskledgerError):
    """No task with that id is recorded."""


class InvalidArgument(TaskledgerError):
    """An operator-supplied argument (CLI or API) is not valid; the message says why."""
