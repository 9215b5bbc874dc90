"""Admission: the capacity handler, the pause queue in and out, operator holds, timers.

- :mod:`consumer.admission.policy`: what an agent has left, what an entry needs, hold
  keys, release triggers, limits.
- :mod:`consumer.admission.release`: releasing waiting entries to agents, pause history.
- :mod:`consumer.admission.handler`: :class:`CapacityHandler`, which applies
  ``capacity.reported``, ``dispatch.requested`` and (through
  :mod:`consumer.admission.holds`) ``control.pause`` / ``control.resume``.
- :mod:`consumer.admission.timers`: the background timer (expired holds, ``not_before``,
  left-over entries, finished tasks, stale work).
- :mod:`consumer.admission.stale`: finding and announcing stale executing tasks.

Import from those modules directly; this package re-exports the main names only.
"""

from consumer.admission.handler import CapacityHandler
from consumer.admission.policy import RELEASE_LIMIT, Policy, Room, hold_key
from consumer.admission.timers import slow_interval

__all__ = ["RELEASE_LIMIT", "CapacityHandler", "Policy", "Room", "hold_key", "slow_interval"]
