"""Test-only fault injection, read from the environment once at start-up.

With ``TASKLEDGER_FAULT_CRASH_BEFORE_PUBLISH=1`` in its environment, the service gives
the outbox relay a hook that kills the process (``os._exit(137)``, like ``kill -9``)
right before its first publish, after the rows it claimed were committed by the
handler. The acceptance and chaos tests use it to crash the handler deterministically
between commit and publish. Never set it otherwise. Without the variable nothing is
installed and the production path runs no fault code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: Environment variable of the crash-before-publish hook.
FAULT_CRASH_BEFORE_PUBLISH = "TASKLEDGER_FAULT_CRASH_BEFORE_PUBLISH"


def crash_before_publish() -> None:
    """Kill the process at once, as ``kill -9`` would (no cleanup, exit status 137)."""
    log.critical("fault injection: crashing before publish", extra={"action": "fault"})
    os._exit(137)


def before_publish_hook(
    environ: Mapping[str, str] | None = None,
) -> Callable[[], None] | None:
    """The relay's ``before_publish`` hook the environment asks for, or None (always in
    production)."""
    env = os.environ if environ is None else environ
    return crash_before_publish if env.get(FAULT_CRASH_BEFORE_PUBLISH) == "1" else None
