"""The three-node RabbitMQ cluster of ``scripts/rabbitmq-cluster.sh``, driven from tests.

The cluster runs beside the system broker (nodes ``tl1..tl3@localhost`` on 127.0.0.1
ports 5681..5683) in a folder of its own; :meth:`Cluster.stop` removes everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
NODES = ("tl1", "tl2", "tl3")
PORTS = {"tl1": 5681, "tl2": 5682, "tl3": 5683}


def node_of_port(port: int) -> str | None:
    """The node listening for AMQP on ``port`` (None: not a cluster port)."""
    return next((node for node, p in PORTS.items() if p == port), None)


def remote_ports(pid: int) -> set[int]:
    """Remote TCP ports of the established connections of process ``pid`` (Linux /proc)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            # cols: sl local remote state ... inode (index 9); state 01 = ESTABLISHED
            if len(cols) > 9 and cols[3] == "01" and cols[9] in inodes:
                ports.add(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Cluster:
    """Start, stop, kill and restart the nodes; ask which node leads a queue."""

    folder: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment of the script's calls (the cluster's folder)."""
        return {**os.environ, "TASKLEDGER_CLUSTER_DIR": str(self.folder)}

    def url(self, user: str = "guest", password: str = "guest") -> str:
        """``TASKLEDGER_AMQP_URL`` listing the three nodes."""
        return ",".join(f"amqp://{user}:{password}@127.0.0.1:{p}/" for p in PORTS.values())

    async def script(self, *args: str, timeout: float = 180) -> str:
        """Run the script; returns stdout, raises with its output when it fails."""
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmq-cluster.sh {' '.join(args)}: exit {proc.returncode}: "
                               f"{out.decode()[-2000:]} {err.decode()[-2000:]}")  # fmt: skip
        return out.decode()

    async def start(self) -> None:
        """Start the three nodes and join them (recorded in ``timings['start_s']``)."""
        started = time.monotonic()
        await self.script("start")
        self.timings["start_s"] = time.monotonic() - started

    async def stop(self) -> None:
        """Stop every node and remove the folder."""
        await self.script("stop", timeout=120)

    async def kill(self, node: str) -> None:
        """kill -9 the node's VM."""
        await self.script("kill", node)

    async def restart(self, node: str) -> float:
        """Start the node again and wait until it rejoined; returns the seconds it took."""
        started = time.monotonic()
        await self.script("restart", node)
        return time.monotonic() - started

    async def leader(self, queue: str, running: tuple[str, ...] = NODES) -> str:
        """The node (``tl1``..) leading quorum queue ``queue``, asked of a running node."""
        last = ""
        for node in running:
            try:
                out = await self.script("ctl", "-n", f"{node}@localhost", "-q", "list_queues",
                                        "name", "leader", "--formatter", "json", timeout=60)  # fmt: skip
            except RuntimeError as exc:
                last = str(exc)
                continue
            for row in json.loads(out or "[]"):
                if row.get("name") == queue:
                    return str(row["leader"]).split("@", 1)[0]
        raise RuntimeError(f"no running node knows the leader of {queue}: {last}")

    async def members(self, queue: str, node: str = "tl1") -> list[str]:
        """The nodes holding a replica of quorum queue ``queue``."""
        out = await self.script("ctl", "-n", f"{node}@localhost", "-q", "list_queues", "name",
                                "members", "--formatter", "json", timeout=60)  # fmt: skip
        for row in json.loads(out or "[]"):
            if row.get("name") == queue:
                return sorted(str(m).split("@", 1)[0] for m in row["members"])
        raise RuntimeError(f"{queue} is not declared")
