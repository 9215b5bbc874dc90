"""The package's own exceptions. Driver errors are translated into these at the edge."""

from __future__ import annotations


class TaskledgerError(Exception):
    """Base of every error taskledger raises on purpose."""


class ConfigurationError(TaskledgerError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class DatabaseUnavailable(TaskledgerError):
    """PostgreSQL cannot be reached or dropped the connection; the work may be retried as is."""


class BrokerUnavailable(TaskledgerError):
    """RabbitMQ cannot be reached or dropped the connection; the work may be retried as is."""


class ImmutableRecord(TaskledgerError):
    """The database refused to alter a finished task or an append-only row (tamper guard)."""


class TaskNotFound(TaskledgerError):
    """No task with that id is recorded."""


class InvalidArgument(TaskledgerError):
    """An operator-supplied argument (CLI or API) is not valid; the message says why."""
