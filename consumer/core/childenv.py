"""The environment of a child ``taskledger`` process configured like a :class:`Settings`.

Tests, benchmarks and scripts start the real command as a subprocess. The child reads
its settings from ``TASKLEDGER_*`` variables only, so the parent's own ``TASKLEDGER_*``
variables are dropped (they must not leak into the child) and the chosen settings are
written back in the form :class:`Settings` reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import SecretStr

from consumer.core.settings import Settings

ENV_PREFIX = "TASKLEDGER_"
ALWAYS = ("database_url", "amqp_url", "prefix")


def env_value(value: object) -> str:
    """``value`` written the way :class:`Settings` reads it from the environment."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return str(value)


def child_env(
    settings: Settings,
    *fields: str,
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """Environment for a child process pointed at ``settings``' database, broker and
    prefix, plus the named ``fields`` of ``settings``; ``extra`` variables are set last.

    ``base`` (default: this process's environment) is copied without its ``TASKLEDGER_*``
    variables. Fields whose value is None are left unset (the child's default applies).
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith(ENV_PREFIX)}
    for name in (*ALWAYS, *fields):
        if name not in Settings.model_fields:
            raise ValueError(f"{name!r} is not a setting")
        value = getattr(settings, name)
        if value is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = env_value(value)
    env.update(extra)
    return env
