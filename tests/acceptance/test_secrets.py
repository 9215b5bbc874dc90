"""Secrets never leave the process: no password of any URL in logs, errors or ``--help``.

Every command runs as a subprocess with a password in every URL (PostgreSQL owner, the
application role, RabbitMQ) and an API token in its environment; every byte it writes to
stdout and stderr is searched for those secrets. The runs cover the happy path (migrate,
``run --burst`` in text and JSON logs, as the least-privilege application role) and the
paths where libraries like to print URLs: unreachable hosts, refused logins,
reconnect loops, invalid settings, and the help of every command.

The local PostgreSQL trusts 127.0.0.1, so passwords are not checked there, which is fine:
what matters is that they are in the URLs and never printed. RabbitMQ has one user
(guest, password guest, a password equal to the user name that cannot be searched for),
so its secret password goes in URLs that fail: a wrong password on the real broker
(ACCESS_REFUSED) and a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from consumer.core.settings import Settings
from consumer.store import db
from consumer.store.urls import asyncpg_dsn, with_database
from contracts import EventType, make_event
from tests.support.processes import ROOT, Service, cli_env, run_cli
from tests.support.traffic import lifecycle, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")


@dataclass
class Secrets:
    """The secrets of one test and every output collected while it ran."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def owner(self) -> str:
        """Password of the owner (migration) URL; has a character that URLs escape."""
        return f"s3cr3t-owner-{self.tag}%21x"

    @property
    def app(self) -> str:
        """Password of the application role."""
        return f"s3cr3t-app-{self.tag}"

    @property
    def amqp(self) -> str:
        """Password in RabbitMQ URLs (wrong for the real broker)."""
        return f"s3cr3t-mq-{self.tag}"

    @property
    def token(self) -> str:
        """The API bearer token."""
        return f"s3cr3t-token-{self.tag}"

    @property
    def role(self) -> str:
        """Name of this test's application role."""
        return f"tl_secret_{self.tag}"

    def needles(self) -> list[str]:
        """What must never be printed: each secret, raw and URL-decoded."""
        raw = [self.owner, self.app, self.amqp, self.token]
        return raw + [s.replace("%21", "!") for s in raw] + [f"s3cr3t-owner-{self.tag}"]

    def keep(self, what: str, *texts: str) -> str:
        """Remember output of ``what`` for the final search; returns it joined."""
        text = "\n".join(texts)
        self.outputs.append((what, text))
        return text

    def assert_clean(self) -> None:
        """No secret in any output collected so far."""
        assert self.outputs
        leaks = [
            (what, needle, text[max(0, text.find(needle) - 300) : text.find(needle) + 100])
            for what, text in self.outputs
            for needle in self.needles()
            if needle in text
        ]
        assert not leaks, f"secrets printed: {leaks}"


def with_password(url: str, user: str, password: str, *, port: int | None = None) -> str:
    """``url`` with ``user:password@`` and, if given, another port on 127.0.0.1."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def secrets(pg_admin_url: str) -> AsyncIterator[Secrets]:
    """Fresh secrets; drops this test's application role afterwards."""
    found = Secrets()
    yield found
    conn = await asyncpg.connect(asyncpg_dsn(with_database(pg_admin_url, "postgres")))
    try:
        databases = await conn.fetch(
            "SELECT datname FROM pg_database d JOIN pg_shdepend s ON s.dbid = d.oid "
            "JOIN pg_roles r ON r.oid = s.refobjid WHERE r.rolname = $1",
            found.role,
        )
        for (name,) in databases:  # privileges granted there (by migration 005)
            other = await asyncpg.connect(asyncpg_dsn(with_database(pg_admin_url, name)))
            try:
                await other.execute(f'DROP OWNED BY "{found.role}"')
            finally:
                await other.close()
        await conn.execute(f'DROP ROLE IF EXISTS "{found.role}"')
    finally:
        await conn.close()


def secret_env(secrets: Secrets, **extra: str) -> dict[str, str]:
    """Environment overrides every command gets: the token, the role and its password."""
    return {
        "TASKLEDGER_API_TOKEN": secrets.token,
        "TASKLEDGER_APP_ROLE": secrets.role,
        "TASKLEDGER_APP_ROLE_PASSWORD": secrets.app,
        "TASKLEDGER_RETRY_DELAYS_MS": "[200, 1000]",  # as the topology fixture declared them
        "COLUMNS": "200",
        "NO_COLOR": "1",
        **extra,
    }


async def cli(
    secrets: Secrets, settings: Settings, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``taskledger ARGS`` with the secret environment; returns (exit code, output)."""
    code, out, err = await run_cli(
        settings, *args, timeout=90, **secret_env(secrets, **(env or {}))
    )
    return code, secrets.keep(f"taskledger {' '.join(args)}", out, err)


# --- the happy path, as the least-privilege application role ---------------------------


async def test_migrate_and_run_as_the_app_role_print_no_password(
    secrets: Secrets,
    settings: Settings,
    empty_db_url: str,
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    owner_url = with_password(empty_db_url, "postgres", secrets.owner)
    app_url = with_password(empty_db_url, secrets.role, secrets.app)
    as_app = settings.model_copy(
        update={"database_url": SecretStr(app_url), "migration_database_url": SecretStr(owner_url)}
    )
    env = {"TASKLEDGER_MIGRATION_DATABASE_URL": owner_url}

    code, out = await cli(secrets, as_app, "migrate", env=env)
    assert code == 0, out
    code, out = await cli(secrets, as_app, "migrate", "--sql", env=env)
    assert code == 0 and "CREATE TABLE" in out

    # traffic that makes the service log: valid events, poison, an event the database
    # refuses (retried, then dead-lettered), a dispatch request and a capacity report
    refused = make_event(EventType.TASK_REQUESTED, {"request_text": "kuma\u0000"},
                         source="orchestrator", subject=uuid.uuid4())  # fmt: skip
    report = make_event(EventType.CAPACITY_REPORTED, {
        "agent_id": "infra-01", "agent_type": "infra", "load_pct": 10.0, "accepting": True,
        "free": {"gpu_vram_mb": 0, "cpu_cores": 4.0, "memory_mb": 4096}}, source="agents/infra-01")  # fmt: skip
    request = make_event(EventType.DISPATCH_REQUESTED, {
        "work_plan": {"x": 1}, "agent_type": "infra",
        "required": {"gpu_vram_mb": 0, "cpu_cores": 1.0, "memory_mb": 256}},
        source="orchestrator", subject=uuid.uuid4())  # fmt: skip
    first = [*lifecycle(steps=2), ("task.requested", refused), ("task.approved", b"{nope"),
             ("capacity.reported", report), ("dispatch.requested", request)]  # fmt: skip
    second = lifecycle(steps=1, terminal="failed")
    for batch, log_flag in ((first, "--log-text"), (second, "--log-json")):
        await publish(amqp, settings, batch)
        code, out = await cli(secrets, as_app, "run", "--burst", log_flag,
                              env={"TASKLEDGER_LOG_LEVEL": "DEBUG"})  # fmt: skip
        assert code == 0, out
        assert "dead-lettered" in out or log_flag == "--log-json"
    assert '"level":' in out, "JSON log lines"

    # it really ran as the application role and recorded the traffic
    pool = await db.create_pool(empty_db_url, min_size=1, max_size=1)
    try:
        valid = {
            orjson.loads(b)["id"] for _, b in [*first, *second] if b not in (refused, b"{nope")
        }
        recorded = {str(r[0]) for r in await pool.fetch("SELECT event_id FROM event_ledger")}
        assert recorded >= valid
        assert await pool.fetchval(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", secrets.role
        )
    finally:
        await pool.close()
    secrets.assert_clean()


# --- errors: unreachable hosts, refused logins, bad settings --------------------------


async def test_errors_print_no_password(secrets: Secrets, settings: Settings) -> None:
    nowhere_pg = with_password(settings.dsn, "postgres", secrets.owner, port=closed_port())
    nowhere_mq = with_password(settings.amqp, "guest", secrets.amqp, port=closed_port())
    refused_mq = with_password(settings.amqp, "guest", secrets.amqp)  # wrong password
    down = settings.model_copy(
        update={"database_url": SecretStr(nowhere_pg), "amqp_url": SecretStr(nowhere_mq)}
    )
    refused = settings.model_copy(update={"amqp_url": SecretStr(refused_mq)})
    runs = [
        (down, ("migrate",), {"TASKLEDGER_MIGRATION_DATABASE_URL": nowhere_pg}),
        (down, ("audit", "tasks"), {}),
        (down, ("verify",), {}),
        (down, ("paused",), {}),
        (down, ("dlq", "summary"), {}),
        (refused, ("dlq", "summary"), {}),
        (refused, ("pause", "--reason", "maintenance"), {}),
        (down, ("run",), {"TASKLEDGER_PREFETCH": "not-a-number"}),  # invalid setting
    ]
    results = await asyncio.gather(*(cli(secrets, s, *args, env=env) for s, args, env in runs))
    for (_, args, _), (code, out) in zip(runs, results, strict=True):
        assert code != 0, f"{args}: {out}"
        assert "Traceback" not in out, f"{args}: {out}"
        assert out.strip(), f"{args} said nothing"
    secrets.assert_clean()


async def test_reconnecting_service_logs_no_password(
    secrets: Secrets, settings: Settings, amqp: aio_pika.abc.AbstractConnection
) -> None:
    nowhere_pg = with_password(settings.dsn, "postgres", secrets.owner, port=closed_port())
    nowhere_mq = with_password(settings.amqp, "guest", secrets.amqp, port=closed_port())
    refused_mq = with_password(settings.amqp, "guest", secrets.amqp)
    services = [
        Service(settings.model_copy(update={"amqp_url": SecretStr(nowhere_mq)}), ("--log-text",)),
        Service(settings.model_copy(update={"amqp_url": SecretStr(nowhere_mq)}), ("--log-json",)),
        Service(settings.model_copy(update={"amqp_url": SecretStr(refused_mq)}), ("--log-text",)),
        # PostgreSQL away: the service consumes and holds its batches
        Service(
            settings.model_copy(update={"database_url": SecretStr(nowhere_pg)}),
            ("--only", "audit", "--log-json"),
        ),
    ]
    for service in services:
        service.env.update(secret_env(secrets, TASKLEDGER_DB_RETRY_MAX_BACKOFF_S="0.5"))
        await service.start()
    try:
        await publish(amqp, settings, lifecycle(steps=1))  # for the one without a database
        expected = ["reconnect", "reconnect", "reconnect", "db_retry"]

        async def warned() -> bool:
            return all(word in s.log() for s, word in zip(services, expected, strict=True))

        try:
            await wait_until(warned, timeout=30, what="every service warned about its outage")
        except AssertionError:
            raise AssertionError("\n\n".join(s.log()[-1500:] for s in services)) from None
        # the one holding a batch for an absent PostgreSQL ignores SIGTERM (reported; see
        # tests/chaos/test_shutdown.py): it is killed, the others stop cleanly
        *stoppable, holding = services
        holding.kill()
        for service in stoppable:
            service.terminate()
        for service in stoppable:
            assert await service.wait(30) == 0, service.log()[-3000:]
        await holding.wait(30)
        for service in services:
            secrets.keep(f"run {' '.join(service.args)}", service.log())
    finally:
        for service in services:
            await service.close()
    secrets.assert_clean()


# --- help ------------------------------------------------------------------------------

HELP_ALL = """
import sys
import typer.main
from typer.testing import CliRunner
from consumer.cli import app

def paths(command, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from paths(sub, (*prefix, name))

runner = CliRunner()
count = 0
for path in paths(typer.main.get_command(app)):
    result = runner.invoke(app, [*path, "--help"], prog_name="taskledger")
    sys.stdout.write(f"=== taskledger {' '.join(path)} --help (exit {result.exit_code})\\n")
    sys.stdout.write(result.output)
    count += result.exit_code == 0
sys.stdout.write(f"=== {count} help pages\\n")
"""


async def test_help_of_every_command_prints_no_secret(secrets: Secrets, settings: Settings) -> None:
    url = with_password(settings.dsn, "postgres", secrets.owner)
    mq = with_password(settings.amqp, "guest", secrets.amqp)
    secret_settings = settings.model_copy(
        update={"database_url": SecretStr(url), "amqp_url": SecretStr(mq)}
    )
    env = cli_env(secret_settings, **secret_env(secrets, TASKLEDGER_MIGRATION_DATABASE_URL=url))
    code, out = await cli(secrets, secret_settings, "--help")  # the real entry point
    assert code == 0 and "dlq" in out and "audit" in out
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HELP_ALL, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    text = secrets.keep("every --help", stdout.decode(), stderr.decode())
    assert proc.returncode == 0, text[-3000:]
    pages = int(text.rsplit("=== ", 1)[1].split()[0])
    assert pages >= 20, f"only {pages} help pages:\n{text[-2000:]}"
    assert "(exit 0)" in text and "(exit 2)" not in text
    secrets.assert_clean()


# --- every way a password can be written, and the messages around it ---------------------


async def test_every_form_of_database_password_is_redacted(
    secrets: Secrets, settings: Settings
) -> None:
    port = closed_port()
    base = f"postgresql://postgres@127.0.0.1:{port}/nowhere"
    url_forms = [
        f"{base}?password={secrets.owner}",
        f"{base}?sslmode=disable&password={secrets.owner}",
        f"postgresql://postgres:pa ss {secrets.owner}@127.0.0.1:{port}/nowhere",
    ]
    libpq_forms = [
        f"host=127.0.0.1 port={port} user=postgres password={secrets.owner} dbname=x",
        f"host=127.0.0.1 password='pa ss {secrets.owner}' dbname=x",
    ]
    runs = [(url_forms[0], ("audit", "tasks")), (url_forms[0], ("audit", "summary"))]
    runs += [(dsn, ("paused",)) for dsn in url_forms + libpq_forms]
    results = await asyncio.gather(
        *(cli(secrets, settings, *args, env={"TASKLEDGER_DATABASE_URL": dsn}) for dsn, args in runs)
    )
    for (_, args), (code, out) in zip(runs, results, strict=True):
        assert code == 3, f"{args}: {out}"
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{args}: {out}"
        assert "***" in out, f"{args}: {out}"
    secrets.assert_clean()


PLAIN_HELP_ALL = """
import contextlib, io, sys
import typer.main
from consumer.cli import app
from consumer.cli.common import plain_help

def paths(command, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from paths(sub, (*prefix, name))

command = typer.main.get_command(app)
plain_help(command)
for path in paths(command):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        command.main([*path, "--help"], prog_name="taskledger", standalone_mode=False)
    sys.stdout.write(f"=== taskledger {' '.join(path)} --help\\n{out.getvalue()}")
"""


async def test_usage_errors_are_one_line_and_help_has_no_type_labels(
    secrets: Secrets, settings: Settings
) -> None:
    cases = [
        (("audit", "tasks", "--bogus"), "No such option: --bogus"),
        (("dlq", "list", "--limit", "abc"), "Invalid value for '--limit'"),
        (("nosuch",), "No such command 'nosuch'"),
        (("dlq", "show"), "Missing argument"),
    ]
    results = await asyncio.gather(*(run_cli(settings, *args) for args, _ in cases))
    for (args, says), (code, out, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and out == "", (args, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PLAIN_HELP_ALL, env=cli_env(settings, COLUMNS="100"), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert text.count("=== taskledger") >= 20 and "Options:" in text
    for label in ("<bool>", "<str>", "<int>", "╭", "│"):
        assert label not in text, label


async def test_pause_with_the_broker_down_prints_one_line(
    secrets: Secrets, settings: Settings
) -> None:
    nowhere = with_password(settings.amqp, "guest", secrets.amqp, port=closed_port())
    code, out = await cli(secrets, settings, "pause", env={"TASKLEDGER_AMQP_URL": nowhere})
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, out
    assert lines[0].startswith("error: cannot reach RabbitMQ"), out
    secrets.assert_clean()
