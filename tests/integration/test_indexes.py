"""The operators' questions are answered from the indexes, not by scanning every task.

20,000 tasks are generated in one statement (deterministically: hashes, not random()),
analysed, and the plans of the two typical post-mortem queries are checked for the
index the seeds named.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg

TASKS = 20_000
SERVICES = (
    "kuma", "portainer", "dns", "auth", "traefik", "grafana", "nextcloud", "prometheus",
    "loki", "postgres", "redis", "minio", "jellyfin", "homeassistant", "vaultwarden",
    "gitea", "syncthing", "immich", "paperless", "adguard",
)  # fmt: skip

# Deterministic pseudo-random data (hashes of the task number, not random()):
# - the n-th service of the catalogue is touched by ~n% of the tasks (kuma, first, ~1%),
#   so the catalogue has common and rare services, as a real fleet does;
# - ~8% of the tasks failed, the rest spread over the other statuses;
# - created_at is spread over 100 days independently of the insertion order;
# - rows carry a request text and an outcome of realistic size.
GENERATE = """
INSERT INTO tasks (task_id, status, request_text, created_at, updated_at, services_touched,
                   agent_type, outcome)
SELECT
    md5('task' || g)::uuid,
    CASE WHEN h % 100 < 8 THEN 'failed'
         WHEN h % 100 < 12 THEN 'rejected'
         WHEN h % 100 < 16 THEN 'executing'
         WHEN h % 100 < 20 THEN 'pending'
         WHEN h % 100 < 24 THEN 'approved'
         ELSE 'completed' END,
    'generated task ' || g || ': ' || repeat(md5(g::text), 3),
    now() - make_interval(secs => abs(hashtext('t' || g)) % (100 * 86400)),
    now(),
    ARRAY(
        SELECT s FROM unnest($1::text[]) WITH ORDINALITY AS c(s, n)
        WHERE abs(hashtext(s || ':' || g)) % 1000 < 10 * n
    ),
    (ARRAY['infra', 'desktop', 'code', 'research'])[1 + g % 4],
    jsonb_build_object('success', h % 100 >= 8, 'output_summary', 'done ' || md5(g::text),
                       'last_lines', jsonb_build_array(md5('a' || g), md5('b' || g)))
FROM generate_series(1, $2) AS g, abs(hashtext('status' || g)) AS h
"""


def plan_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every plan node of an EXPLAIN (FORMAT JSON) result, depth first."""
    if isinstance(node, list):
        for item in node:
            yield from plan_nodes(item)
    elif isinstance(node, dict):
        if "Node Type" in node:
            yield node
        for value in node.values():
            if isinstance(value, list | dict):
                yield from plan_nodes(value)


async def explain(pool: asyncpg.Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    plan = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    nodes = list(plan_nodes(plan))
    assert nodes, plan
    return nodes


async def check_services_touched_uses_gin_index(pool: asyncpg.Pool) -> None:
    query = "SELECT task_id, status FROM tasks WHERE services_touched @> ARRAY['kuma']"
    nodes = await explain(pool, query)
    used = [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert ("Bitmap Index Scan", "idx_tasks_services_touched") in used, used

    found = await pool.fetch(query)
    assert 0 < len(found) < TASKS // 20


async def check_failures_in_a_window_use_status_created_at_index(pool: asyncpg.Pool) -> None:
    query = """
        SELECT task_id, created_at FROM tasks
        WHERE status = 'failed'
          AND created_at BETWEEN now() - interval '8 days' AND now() - interval '7 days'
        ORDER BY created_at DESC
    """
    nodes = await explain(pool, query)
    used = [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert "idx_tasks_status_created_at" in {name for _, name in used}, used
    assert not any(node_type == "Seq Scan" for node_type, _ in used), used

    found = await pool.fetch(query)
    assert found


async def test_post_mortem_queries_use_the_indexes(pool: asyncpg.Pool) -> None:
    # One data set for both checks: generating it is most of this test's time.
    await pool.execute(GENERATE, list(SERVICES), TASKS)
    # VACUUM also merges the GIN index's pending list, as autovacuum would by then.
    await pool.execute("VACUUM ANALYZE tasks")

    await check_services_touched_uses_gin_index(pool)
    await check_failures_in_a_window_use_status_created_at_index(pool)
