"""The chaos suite: six fault scenarios, each ending in an exact account.

Each scenario has a full form (``-m slow``, run by ``make chaos``; it writes the table of
``docs/RELIABILITY.md``) and a short form with the same code and smaller parameters that
runs with the default test suite. See :mod:`tests.chaos.scenarios` for what is checked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import SecretStr

from consumer.runtime.faults import FAULT_CRASH_BEFORE_PUBLISH
from tests.chaos.report import SCENARIOS
from tests.chaos.scenarios import Chaos, Scale, Sent, background, build_traffic, via
from tests.support.traffic import wait_until

(KILL_9, AMQP_CUT, PG_OUTAGE, IN_TURN, CRASH_HOOK, POISON) = SCENARIOS


def forms(full: Scale, short: Scale) -> Any:
    """The two forms of a scenario as pytest parameters (the full one marked slow)."""
    return pytest.mark.parametrize(
        "scale",
        [
            pytest.param(full, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
            pytest.param(short, id="short"),
        ],
    )


def deadline_in(seconds: float) -> float:
    """The ``time.monotonic()`` deadline ``seconds`` from now."""
    return time.monotonic() + seconds


# --- 1. kill -9 of the consumer every few seconds, under load -------------------------


@forms(
    Scale("full", tasks=2000, seconds=60, gap=(1.0, 3.5), settle_s=120),
    Scale("short", tasks=80, seconds=5, gap=(0.5, 1.5), settle_s=60),
)
async def test_kill_9_consumer_under_load(chaos: Chaos, scale: Scale) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=101)
    kills = 0
    last_kill = time.monotonic()
    deadline = deadline_in(scale.seconds)
    async with background(chaos.publish(traffic.sent, scale.seconds)) as publishing:
        while time.monotonic() < deadline:
            service = await chaos.start()  # both handlers, as `taskledger run` by default
            await chaos.pause(scale)  # a random moment once it consumes
            await chaos.kill(service)
            last_kill = time.monotonic()
            kills += 1
        await publishing
    await chaos.start()  # recovery includes the restart
    await chaos.conclude(KILL_9, scale, traffic, f"{kills} x kill -9", last_kill)


# --- 2. the AMQP connection cut repeatedly (proxy) --------------------------------------


@forms(
    Scale("full", tasks=2000, seconds=60, gap=(1.0, 4.0), settle_s=120, knobs={"down": 1.0}),
    Scale("short", tasks=80, seconds=5, gap=(0.5, 1.5), settle_s=60, knobs={"down": 0.3}),
)
async def test_amqp_connection_cut_repeatedly(chaos: Chaos, scale: Scale) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=102)
    proxy = await chaos.proxy(chaos.settings.amqp, 5672)
    proxied = chaos.settings.model_copy(
        update={"amqp_url": SecretStr(via(chaos.settings.amqp, proxy))}
    )
    await chaos.start(settings=proxied)
    cuts = 0
    restored = time.monotonic()
    deadline = deadline_in(scale.seconds)
    async with background(chaos.publish(traffic.sent, scale.seconds)) as publishing:
        while time.monotonic() < deadline:
            await chaos.pause(scale)
            proxy.cut()  # every connection of the service (consumer and outbox relay) drops
            cuts += 1
            await asyncio.sleep(chaos.rng.uniform(0.05, scale["down"]))  # the outage itself
            proxy.restore()
            restored = time.monotonic()
        await publishing
    await chaos.conclude(AMQP_CUT, scale, traffic, f"{cuts} cuts of every AMQP connection",
                         restored, notes=f"{proxy.connections_made} AMQP connections made")  # fmt: skip


# --- 3. PostgreSQL unreachable, then slow ----------------------------------------------


@forms(
    Scale("full", tasks=1500, seconds=45, gap=(0, 0), settle_s=120,
          knobs={"before": 5.0, "down": 10.0, "slow": 20.0}),
    Scale("short", tasks=80, seconds=5, gap=(0, 0), settle_s=60,
          knobs={"before": 0.5, "down": 2.0, "slow": 2.0}),
)  # fmt: skip
async def test_postgres_unreachable_then_slow(chaos: Chaos, scale: Scale) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=103)
    proxy = await chaos.proxy(chaos.settings.dsn, 5432)
    proxied = chaos.settings.model_copy(
        update={"database_url": SecretStr(via(chaos.settings.dsn, proxy))}
    )
    await chaos.start(settings=proxied)
    async with background(chaos.publish(traffic.sent, scale.seconds)) as publishing:
        await asyncio.sleep(scale["before"])  # traffic flows normally first
        proxy.cut()  # PostgreSQL unreachable: connections dropped, new ones refused
        await asyncio.sleep(scale["down"])
        proxy.restore(latency_s=0.1)  # 100 ms each way: 200 ms per round trip
        await asyncio.sleep(scale["slow"])
        proxy.restore(latency_s=0.0)
        ended = time.monotonic()
        await publishing
    faults = (f"{scale['down']:.0f} s unreachable, then {scale['slow']:.0f} s at 200 ms "
              "per round trip")  # fmt: skip
    await chaos.conclude(PG_OUTAGE, scale, traffic, faults, ended,
                         notes=f"{proxy.connections_made} PostgreSQL connections made")  # fmt: skip


# --- 4. three consumers and two capacity handlers, killed in turn ------------------------


@forms(
    Scale("full", tasks=2000, seconds=60, gap=(1.0, 3.0), settle_s=120),
    Scale("short", tasks=80, seconds=5, gap=(0.5, 1.5), settle_s=60),
)
async def test_five_processes_killed_in_turn(chaos: Chaos, scale: Scale) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=104)
    roles = [("--only", "audit")] * 3 + [("--only", "capacity")] * 2
    fleet = list(await asyncio.gather(*(chaos.start(*role) for role in roles)))
    kills = 0
    last_kill = time.monotonic()
    deadline = deadline_in(scale.seconds)
    async with background(chaos.publish(traffic.sent, scale.seconds)) as publishing:
        while time.monotonic() < deadline:
            await chaos.pause(scale)
            turn = kills % len(fleet)
            await chaos.kill(fleet[turn])
            last_kill = time.monotonic()
            kills += 1
            fleet[turn] = await chaos.start(*roles[turn])  # back in the pool
        await publishing
    await chaos.conclude(IN_TURN, scale, traffic, f"{kills} x kill -9 in turn over 5 processes",
                         last_kill)  # fmt: skip


# --- 5. the capacity handler killed between commit and publish --------------------------


@forms(
    Scale("full", tasks=1500, seconds=0, gap=(0, 0), settle_s=120, knobs={"rounds": 10}),
    Scale("short", tasks=80, seconds=0, gap=(0, 0), settle_s=60, knobs={"rounds": 2}),
)
async def test_capacity_handler_killed_between_commit_and_publish(
    chaos: Chaos, scale: Scale
) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=105)
    await chaos.start("--only", "audit")  # the audit side runs through it all
    rounds = int(scale["rounds"])
    size = -(-len(traffic.sent) // rounds)
    crashes = 0
    last_crash = time.monotonic()
    published: list[Sent] = []
    for i in range(rounds):
        chunk = traffic.sent[i * size : (i + 1) * size]
        published += chunk
        await chaos.publish(chunk)
        # the relay kills its process (os._exit(137)) right before its first publish,
        # after the handler committed the decisions behind the outbox rows
        hooked = await chaos.start("--only", "capacity", ready=False,
                                   **{FAULT_CRASH_BEFORE_PUBLISH: "1"})  # fmt: skip
        expected = traffic.capacity_ids(published)
        await wait_until(lambda s=hooked, e=expected: _crashed_or_idle(chaos, s, e), timeout=60,
                         what="the hooked handler to crash or to finish its round")  # fmt: skip
        if hooked.proc is not None and hooked.proc.returncode is None:
            hooked.terminate()  # nothing was admitted this round: no publish, no crash
        code = await hooked.wait(30)
        assert code in (0, 137), hooked.log()[-3000:]
        if code == 137:
            crashes += 1
            last_crash = time.monotonic()
        healer = await chaos.start("--only", "capacity")  # drains the outbox on start
        if i + 1 < rounds:  # the last one stays: the system recovers by itself
            await wait_until(lambda: _none_unsent(chaos), timeout=60, what="the outbox drained")
            healer.terminate()
            assert await healer.wait(30) == 0, healer.log()[-3000:]
    assert crashes >= 1, "the crash hook never fired: no admission was committed"
    await chaos.conclude(CRASH_HOOK, scale, traffic,
                         f"{crashes} crashes (exit 137) between commit and publish", last_crash)  # fmt: skip


async def _crashed_or_idle(chaos: Chaos, service: Any, expected: set[str]) -> bool:
    if service.proc.returncode is not None:
        return True
    return await chaos.recorded(expected) == len(expected) and await chaos.unsent() == 0


async def _none_unsent(chaos: Chaos) -> bool:
    return await chaos.unsent() == 0


# --- 6. a burst of poison messages mixed into valid traffic -----------------------------


@forms(
    Scale("full", tasks=1500, seconds=30, gap=(0, 0), settle_s=120,
          knobs={"poison": 100, "burst": 300, "refused": 20}),
    Scale("short", tasks=80, seconds=4, gap=(0, 0), settle_s=60,
          knobs={"poison": 20, "burst": 60, "refused": 5}),
)  # fmt: skip
async def test_poison_burst_in_valid_traffic(chaos: Chaos, scale: Scale) -> None:
    traffic = build_traffic(tasks=scale.tasks, seed=106, poison=int(scale["poison"]),
                            poison_burst=int(scale["burst"]), refused=int(scale["refused"]))  # fmt: skip
    service = await chaos.start()
    await chaos.publish(traffic.sent, scale.seconds)
    ended = time.monotonic()
    faults = (f"{len(traffic.doomed)} invalid messages ({scale['burst']:.0f} in one block, "
              f"{scale['refused']:.0f} refused by PostgreSQL)")  # fmt: skip
    await wait_until(lambda: chaos.recovered(traffic), timeout=scale.settle_s,
                     what="every poison message dead-lettered")  # fmt: skip
    assert service.proc is not None and service.proc.returncode is None, "poison stopped it"
    assert "loop_crash" not in service.log()
    await chaos.conclude(
        POISON, scale, traffic, faults, ended, notes="the consumer never restarted"
    )
