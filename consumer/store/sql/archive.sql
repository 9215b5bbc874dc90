-- archive_owns_ledger --
-- Whether the current role has the privileges of event_ledger's owner (needed to detach a partition); NULL when there is no event_ledger.
SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owner, c.relkind = 'p' AS partitioned
FROM pg_class AS c
WHERE c.oid = to_regclass('event_ledger')

-- archive_partitions --
-- The partitions of a partitioned table ($1: its name), with their schema and bound expression.
SELECT c.relname AS name, n.nspname AS schema, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.inhparent = to_regclass($1)
ORDER BY c.relname

-- archive_done_months --
-- Months archived already, oldest first.
SELECT month, file_name, sha256, row_count, first_seq, last_seq, archived_at
FROM ledger_archives
ORDER BY month

-- archive_month_facts --
-- One month partition {ledger} (received_at in [$1, $2)): rows, seq range, rows the sealer has yet to seal, rows and steps of the month in the default partitions {default} / {steps_default} (when there are), open tasks.
SELECT (SELECT count(*) FROM {ledger}) AS rows,
       (SELECT min(seq) FROM {ledger}) AS first_seq,
       (SELECT max(seq) FROM {ledger}) AS last_seq,
       (SELECT count(*) FROM ledger_unsealed AS u JOIN {ledger} AS l ON l.seq = u.seq) AS pending,
       (SELECT count(*) FROM {default} AS d
        WHERE d.received_at >= $1 AND d.received_at < $2) AS in_default,
       (SELECT count(*) FROM {steps_default} AS d
        WHERE d.recorded_at >= $1 AND d.recorded_at < $2) AS steps_in_default,
       (SELECT count(*) FROM tasks AS t
        WHERE t.task_id IN (SELECT l.task_id FROM {ledger} AS l WHERE l.task_id IS NOT NULL)
          AND t.status NOT IN ('completed', 'failed', 'rejected')) AS open_tasks

-- archive_month_links --
-- The chain links that seal rows of month partition {ledger} (a link never spans two months: its first seq decides), each with its predecessor in the chain, its successor, and whether the predecessor's hash is its prev_hash; oldest first.
WITH month_links AS (
    SELECT c.link, c.prev_hash, c.hash, c.created_at, c.trigger, cardinality(c.seqs) AS size
    FROM ledger_chain AS c
    WHERE c.seqs[1] BETWEEN $1 AND $2
      AND EXISTS (SELECT 1 FROM {ledger} AS l WHERE l.seq = c.seqs[1])
)
SELECT m.link, m.prev_hash, m.hash, m.created_at, m.trigger, m.size,
       p.link AS pred_link, p.hash AS pred_hash,
       (SELECT s.link FROM ledger_chain AS s WHERE s.link > m.link ORDER BY s.link LIMIT 1)
           AS succ_link
FROM month_links AS m
LEFT JOIN LATERAL (SELECT c2.link, c2.hash FROM ledger_chain AS c2 WHERE c2.link < m.link
                   ORDER BY c2.link DESC LIMIT 1) AS p ON true
ORDER BY m.link

-- archive_month_events --
-- Every row sealed by the links $1 (in link order, then in each link's order) beside its row in month partition {ledger}, with the columns of its digest rendered as verify renders them (NULL row columns: the sealed row is not in this month).
SELECT c.link, u.seq AS sealed_seq, u.digest,
       l.seq, l.event_id::text AS event_id, l.event_type, l.source, l.task_id::text AS task_id,
       to_char(l.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS event_time,
       to_char(l.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS received_at,
       l.schema_version, l.envelope::text AS envelope_text, l.conflict_with::text AS conflict_with
FROM ledger_chain AS c
CROSS JOIN LATERAL unnest(c.seqs, c.row_digests) WITH ORDINALITY AS u(seq, digest, n)
LEFT JOIN {ledger} AS l ON l.seq = u.seq
WHERE c.link = ANY($1::bigint[])
ORDER BY c.link, u.n

-- archive_month_tasks --
-- The tasks rows of the tasks with events in month partition {ledger}, as JSON text.
SELECT to_jsonb(t)::text AS row
FROM tasks AS t
WHERE t.task_id IN (SELECT l.task_id FROM {ledger} AS l WHERE l.task_id IS NOT NULL)
ORDER BY t.task_id

-- archive_month_steps --
-- The execution_logs rows of month partition {steps}, as JSON text.
SELECT to_jsonb(e)::text AS row
FROM {steps} AS e
ORDER BY e.recorded_at, e.log_id

-- archive_lock_timeout --
-- Wait at most this long for the locks of DETACH PARTITION (writers queue behind it).
SELECT set_config('lock_timeout', $1, true)

-- archive_detach --
-- Detach partition {partition} from {parent} (ACCESS EXCLUSIVE on both until commit; catalog only).
ALTER TABLE {parent} DETACH PARTITION {partition}

-- archive_move --
-- Move a detached partition {table} to the archive schema (catalog only).
ALTER TABLE {table} SET SCHEMA ledger_archive

-- archive_count_detached --
-- Rows and highest seq of a detached month {table} (checked against the export under the lock).
SELECT count(*) AS rows, max(seq) AS last_seq FROM {table}

-- archive_count_rows --
-- Rows of a table {table}.
SELECT count(*) FROM {table}

-- archive_record_month --
-- Record an archived month (same transaction as the detach).
INSERT INTO ledger_archives
    (month, file_name, sha256, row_count, step_count, task_count, first_seq, last_seq,
     link_ids, boundary_links, boundary_hashes, partitions, archived_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)

-- archive_record_tasks --
-- Remember the tasks of an archived month {table} (their projections can no longer be recomputed).
INSERT INTO ledger_archived_tasks (task_id, month)
SELECT DISTINCT l.task_id, $1::date FROM {table} AS l WHERE l.task_id IS NOT NULL
ON CONFLICT (task_id) DO NOTHING

-- archived_months --
-- What verify needs to know of archived months: each month, its links and boundary links with their hashes.
SELECT month, row_count, link_ids, boundary_links, boundary_hashes
FROM ledger_archives
ORDER BY month

-- archived_table_exists --
-- Whether ledger_archives exists (migration 014): verify also runs on older schemas.
SELECT to_regclass('ledger_archives') IS NOT NULL
