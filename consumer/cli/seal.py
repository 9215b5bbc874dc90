"""``taskledger seal``: chain every ledger row still waiting for the sealer, once.

The service seals continuously while it hosts the audit handler
(:mod:`consumer.ledger.sealer`); this command is for when none runs (after a crash,
before ``verify``, in maintenance). Safe beside running services: sealers take turns
on the chain's lock. Exit 0 (also when nothing was pending), 3 when PostgreSQL is
unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from consumer.cli.common import console, load_settings, open_pool, print_json, run

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``seal`` command to ``app``."""
    app.command(name="seal")(seal)


def seal(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Seal every ledger row waiting for the sealer now; print how many were sealed."""
    from rich.progress import Progress

    from consumer.ledger.sealer import backlog, seal_all

    settings = load_settings()

    async def go() -> dict[str, Any]:
        async with open_pool(settings) as pool:
            waiting = await backlog(pool)
            with Progress(transient=True, disable=as_json or waiting.rows < 5000) as progress:
                bar = progress.add_task("sealing", total=waiting.rows)
                sealed = await seal_all(pool, settings, lambda n: progress.advance(bar, n))
            left = await backlog(pool)
            return {"sealed": sealed, "pending": left.rows}

    result = run(go())
    if as_json:
        print_json(result)
        return
    rows = "row" if result["sealed"] == 1 else "rows"
    more = f"; {result['pending']} listed since" if result["pending"] else ""
    console.print(f"sealed {result['sealed']} ledger {rows}{more}", highlight=False)
