"""taskledger service: settings, broker and database code, handlers, CLI and API."""

from __future__ import annotations

__version__ = "0.1.0"
