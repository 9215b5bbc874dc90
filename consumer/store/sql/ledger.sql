-- lock_tasks --
-- Serialise writers per task for the rest of the transaction (sorted: no deadlocks).
SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS s

-- insert_ledger_events --
-- Record a batch of events once each (the inbox); returns the ids that were new.
INSERT INTO event_ledger
    (event_id, event_type, source, task_id, event_time, schema_version, envelope, conflict_with)
SELECT e.event_id, e.event_type, e.source, e.task_id, e.event_time, e.schema_version,
       e.body::jsonb, e.conflict_with
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::smallint[],
            $7::text[], $8::uuid[])
     AS e(event_id, event_type, source, task_id, event_time, schema_version, body, conflict_with)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, seq

-- insert_ledger_events_sealed --
-- As insert_ledger_events, also returning each new row's digest for the hash chain
-- (the canonical text of ledger_row_digest() in migration 006, written inline: ~3x faster).
INSERT INTO event_ledger
    (event_id, event_type, source, task_id, event_time, schema_version, envelope, conflict_with)
SELECT e.event_id, e.event_type, e.source, e.task_id, e.event_time, e.schema_version,
       e.body::jsonb, e.conflict_with
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::smallint[],
            $7::text[], $8::uuid[])
     AS e(event_id, event_type, source, task_id, event_time, schema_version, body, conflict_with)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, seq, sha256(convert_to(
    seq::text || '|' || event_id::text || '|' || event_type || '|' || source
    || '|' || coalesce(task_id::text, '')
    || '|' || to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    || '|' || to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    || '|' || schema_version::text || '|' || envelope::text
    || '|' || coalesce(conflict_with::text, ''), 'UTF8')) AS digest

-- existing_terminal_events --
-- The terminal event already recorded (not itself a conflict) for each of these tasks.
SELECT task_id, event_id
FROM event_ledger
WHERE task_id = ANY($1::uuid[])
  AND event_type IN ('task.completed', 'task.failed', 'task.rejected')
  AND conflict_with IS NULL

-- lock_chain --
-- Take the ledger chain's lock: links are appended in commit order, never forked.
SELECT pg_advisory_xact_lock(8243149463017541731)

-- append_chain_link --
-- Chain the rows this transaction recorded (seqs and digests, in seq order) to the newest link.
INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash, trigger)
SELECT $1::bigint[], $2::bytea[], head.hash,
       sha256(coalesce(head.hash, ''::bytea)
              || (SELECT string_agg(d, ''::bytea ORDER BY i)
                  FROM unnest($2::bytea[]) WITH ORDINALITY AS u(d, i))),
       $3::text  -- why the batch was flushed (011; not hashed)
FROM (SELECT (SELECT c.hash FROM ledger_chain AS c ORDER BY c.link DESC LIMIT 1) AS hash) AS head

-- ledger_row_count --
-- How many rows the ledger holds (the progress bar of `taskledger verify`).
SELECT count(*) FROM event_ledger

-- verify_chain_links --
-- Every link of the ledger chain, oldest first (consumer/ledger/verify.py).
SELECT link, seqs, row_digests, prev_hash, hash FROM ledger_chain ORDER BY link

-- verify_ledger_rows --
-- Every ledger row with the columns of its digest, in seq order (consumer/ledger/verify.py).
SELECT seq, event_id, event_type, source, task_id, event_time, received_at,
       schema_version, envelope::text AS envelope_text, conflict_with
FROM event_ledger
ORDER BY seq

-- ledger_same_event --
-- For events whose id was already recorded: the recorded row, and whether this body is the same event (same source, same content: jsonb equality ignores key order and spacing), in the given order.
SELECT l.event_id, l.seq, l.source, l.event_type, l.envelope = d.body::jsonb AS same_event
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS d(event_id, body, n)
JOIN event_ledger AS l ON l.event_id = d.event_id
ORDER BY d.n

-- verify_rows_against_seals --
-- Every ledger row beside what the chain sealed for its seq (seq order; times as text, rendered as the digest renders them).
WITH sealed AS (
    SELECT c.link, u.seq, u.digest
    FROM ledger_chain AS c
    CROSS JOIN LATERAL unnest(c.seqs, c.row_digests) AS u(seq, digest)
)
SELECT coalesce(l.seq, s.seq) AS at_seq, s.link, s.digest, l.seq, l.event_id::text AS event_id,
       l.event_type, l.source, l.task_id::text AS task_id,
       to_char(l.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS event_time,
       to_char(l.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS received_at,
       l.schema_version, l.envelope::text AS envelope_text,
       l.conflict_with::text AS conflict_with
FROM sealed AS s
FULL JOIN event_ledger AS l ON l.seq = s.seq
ORDER BY coalesce(l.seq, s.seq), s.link

-- chain_head --
-- The newest link of the ledger chain and the highest seq it seals (the anchor to keep).
SELECT c.link, c.hash, (SELECT max(u.s) FROM unnest(c.seqs) AS u(s)) AS seq
FROM ledger_chain AS c
ORDER BY c.link DESC
LIMIT 1

-- verify_search_path --
-- Set this transaction's search_path (verify puts its scratch tables first or last).
SELECT set_config('search_path', $1, true)

-- verify_scratch_tables --
-- Scratch copies of tasks and execution_logs (no triggers, no foreign keys) for the handler's own statements; dropped at commit.
CREATE TEMP TABLE tasks (LIKE tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)
    ON COMMIT DROP;
CREATE TEMP TABLE execution_logs
    (LIKE execution_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)
    ON COMMIT DROP

-- verify_scratch_clear --
-- Empty the scratch tables between pages.
TRUNCATE pg_temp.tasks, pg_temp.execution_logs

-- verify_task_page --
-- The next page of stored task ids (keyset), with the search_path on the real tables.
SELECT task_id FROM tasks WHERE task_id > $1 ORDER BY task_id LIMIT $2

-- verify_tasks_compare --
-- Each stored task of the page beside the row recomputed from the ledger, as JSON.
SELECT coalesce(r.task_id, e.task_id) AS task_id, to_jsonb(r) AS stored, to_jsonb(e) AS expected
FROM (SELECT * FROM tasks WHERE task_id = ANY($1::uuid[])) AS r
FULL JOIN (SELECT * FROM pg_temp.tasks WHERE task_id = ANY($1::uuid[])) AS e
    ON e.task_id = r.task_id

-- verify_scratch_drop_tasks --
-- Forget recomputed task rows (to write the other replay of the same tasks).
DELETE FROM pg_temp.tasks WHERE task_id = ANY($1::uuid[])

-- verify_steps_compare --
-- Stored execution_logs of the page's tasks that differ from the re-projection, as JSON.
SELECT coalesce(r.event_id, e.event_id) AS event_id, coalesce(r.task_id, e.task_id) AS task_id,
       to_jsonb(r) - 'recorded_at' - 'id' AS stored, to_jsonb(e) - 'recorded_at' - 'id' AS expected
FROM (SELECT * FROM execution_logs WHERE task_id = ANY($1::uuid[])) AS r
FULL JOIN (SELECT * FROM pg_temp.execution_logs WHERE task_id = ANY($1::uuid[])) AS e
    ON e.event_id = r.event_id
WHERE (to_jsonb(r) - 'recorded_at' - 'id') IS DISTINCT FROM (to_jsonb(e) - 'recorded_at' - 'id')

-- verify_tasks_missing --
-- Tasks whose task.requested is recorded but that have no stored row.
SELECT DISTINCT l.task_id
FROM event_ledger AS l
WHERE l.event_type = 'task.requested' AND l.conflict_with IS NULL AND l.task_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.task_id = l.task_id)
ORDER BY l.task_id

-- verify_steps_without_task --
-- Stored execution_logs whose task has no stored row (a foreign key bypassed).
SELECT e.event_id, e.task_id
FROM execution_logs AS e
WHERE NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.task_id = e.task_id)
ORDER BY e.event_id

-- verify_pause_history_orphans --
-- pause_history rows naming an event the ledger does not hold.
SELECT h.id, h.task_id, h.event_id
FROM pause_history AS h
WHERE h.event_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM event_ledger AS l WHERE l.event_id = h.event_id)
ORDER BY h.id

-- verify_current_search_path --
-- The session's search_path, to put verify's scratch tables first or last in it.
SELECT current_setting('search_path')

-- verify_scratch_copy_tasks --
-- Stand-ins for tasks whose events do not fold: their stored rows, so their steps still project.
INSERT INTO pg_temp.tasks SELECT * FROM tasks WHERE task_id = ANY($1::uuid[])
