-- lock_tasks --
-- Serialise writers per task for the rest of the transaction (sorted: no deadlocks).
SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS s

-- insert_ledger_events --
-- Record a batch of events once each (the inbox); returns the ids that were new. 013: an id is
-- claimed in ledger_event_ids first (global across partitions and archived months), with the
-- seq and received_at of its ledger row. With $10 (the hash chain on) each new row is also
-- listed in ledger_unsealed (012) with its write batch (the batch's first seq), its digest
-- (the canonical text of ledger_row_digest() in migration 006, written inline: ~3x faster)
-- and $9 the batch's flush trigger, in the same transaction and without a lock: the sealer
-- (consumer/ledger/sealer.py) chains the digests after commit. 016: a trigger on
-- event_ledger keeps ledger_task_dispatches and ledger_taskless_events for every writer.
WITH numbered AS (  -- the first copy of each id, numbered in batch order: one nextval per row
    SELECT f.event_id, f.n, nextval('event_ledger_seq_seq') AS seq, now() AS received_at
    FROM (SELECT DISTINCT ON (i.event_id) i.event_id, i.n
          FROM unnest($1::uuid[]) WITH ORDINALITY AS i(event_id, n)
          ORDER BY i.event_id, i.n) AS f
    ORDER BY f.n
), keys AS (  -- claim the ids (in id order: concurrent batches wait, never deadlock)
    INSERT INTO ledger_event_ids (event_id, seq, received_at)
    SELECT event_id, seq, received_at FROM numbered ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), ins AS (
    INSERT INTO event_ledger
        (seq, event_id, event_type, source, task_id, event_time, received_at, schema_version,
         envelope, conflict_with)
    SELECT r.seq, e.event_id, e.event_type, e.source, e.task_id, e.event_time, r.received_at,
           e.schema_version, e.body::jsonb, e.conflict_with
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[],
                $6::smallint[], $7::text[], $8::uuid[])
         WITH ORDINALITY AS e(event_id, event_type, source, task_id, event_time, schema_version,
                              body, conflict_with, n)
    JOIN numbered AS r ON r.n = e.n
    JOIN keys AS k ON k.event_id = r.event_id
    RETURNING event_id, seq, received_at, event_type, task_id, conflict_with,
              CASE WHEN $10::boolean THEN sha256(convert_to(
        seq::text || '|' || event_id::text || '|' || event_type || '|' || source
        || '|' || coalesce(task_id::text, '')
        || '|' || to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || schema_version::text || '|' || envelope::text
        || '|' || coalesce(conflict_with::text, ''), 'UTF8')) END AS digest
), marked AS (
    INSERT INTO ledger_unsealed (batch, seq, received_at, digest, trigger)
    SELECT min(seq) OVER (), seq, received_at, digest, $9 FROM ins WHERE $10::boolean
), terminals AS (  -- 015: a task's first terminal event (record_events marks later ones)
    INSERT INTO ledger_task_terminals (task_id, event_id, seq)
    SELECT task_id, event_id, seq FROM ins
    WHERE task_id IS NOT NULL AND conflict_with IS NULL
      AND event_type IN ('task.completed', 'task.failed', 'task.rejected')
    ON CONFLICT (task_id) DO NOTHING
)
SELECT event_id, seq FROM ins

-- existing_terminal_events --
-- The terminal event already recorded (not itself a conflict) for each of these tasks: one
-- key lookup per task in ledger_task_terminals (015), not a probe of every month partition.
SELECT task_id, event_id
FROM ledger_task_terminals
WHERE task_id = ANY($1::uuid[])

-- seal_try_lock --
-- Take the ledger chain's lock if free (012: only sealers take it; links are never forked).
SELECT pg_try_advisory_xact_lock(8243149463017541731)

-- seal_take --
-- The oldest listed write batches, whole (about $1 rows), with the digests their writers
-- took and each row's UTC month, in sealing order: batch, month, seq.
SELECT u.batch, u.seq, u.trigger, u.digest,
       to_char(u.received_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month
FROM ledger_unsealed AS u
WHERE u.batch <= (SELECT max(s.batch)
                  FROM (SELECT batch FROM ledger_unsealed ORDER BY batch, seq LIMIT $1) AS s)
ORDER BY u.batch, month, u.seq

-- seal_append_link --
-- One link: rows (seqs, digests in seq order) of one write batch and month, chained by the sealer.
INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash, trigger)
VALUES ($1::bigint[], $2::bytea[], $3::bytea, $4::bytea, $5::text)

-- seal_forget --
-- Remove the markers of the rows just sealed.
DELETE FROM ledger_unsealed AS u
USING unnest($1::bigint[], $2::bigint[]) AS d(batch, seq)
WHERE u.batch = d.batch AND u.seq = d.seq

-- seal_backlog --
-- The rows listed for the sealer: how many, the highest seq, the oldest received_at.
SELECT count(*) AS rows, max(seq) AS max_seq, min(received_at) AS oldest FROM ledger_unsealed

-- seal_left_upto --
-- Whether a row at or below seq $1 is still listed for the sealer (a row's batch is its
-- batch's first seq, so batch <= seq: the condition on batch lets the primary key answer).
SELECT EXISTS (SELECT 1 FROM ledger_unsealed WHERE batch <= $1 AND seq <= $1)

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
-- For events whose id was already recorded: the recorded row, and whether this body is the same event (same source, same content: jsonb equality ignores key order and spacing), in the given order; 013: same_event NULL when the row left with an archived month (its id stays in ledger_event_ids).
SELECT d.event_id, k.seq, k.received_at, l.source, l.event_type,
       l.envelope = d.body::jsonb AS same_event
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS d(event_id, body, n)
JOIN ledger_event_ids AS k ON k.event_id = d.event_id
LEFT JOIN event_ledger AS l ON l.seq = k.seq AND l.received_at = k.received_at
ORDER BY d.n

-- verify_rows_against_seals --
-- Every ledger row beside what the chain sealed for its seq (seq order; times as text, rendered as the digest renders them); listed: in ledger_unsealed (012) with the digest its writer took, recent: received less than $1 seconds ago.
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
       l.conflict_with::text AS conflict_with, p.seq IS NOT NULL AS listed, p.digest AS listed_digest,
       l.received_at > statement_timestamp() - make_interval(secs => $1) AS recent
FROM sealed AS s
FULL JOIN event_ledger AS l ON l.seq = s.seq
LEFT JOIN ledger_unsealed AS p ON p.seq = l.seq
ORDER BY coalesce(l.seq, s.seq), s.link

-- verify_orphan_markers --
-- Rows listed for sealing whose ledger row is gone (012: listed and recorded in one transaction).
SELECT u.seq FROM ledger_unsealed AS u
WHERE NOT EXISTS (SELECT 1 FROM event_ledger AS l
                  WHERE l.seq = u.seq AND l.received_at = u.received_at)
ORDER BY u.seq

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
-- The next page of stored task ids (keyset), with the search_path on the real tables; tasks with events in an archived month (014) are left out: their events left the ledger.
SELECT t.task_id FROM tasks AS t
WHERE t.task_id > $1
  AND NOT EXISTS (SELECT 1 FROM ledger_archived_tasks AS a WHERE a.task_id = t.task_id)
ORDER BY t.task_id LIMIT $2

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
-- pause_history rows naming an event the ledger does not hold (events and tasks of archived months, 014, left out); 019: the event is found by its key (verify_unkeyed_rows checks that every row has its key).
SELECT h.id, h.task_id, h.event_id
FROM pause_history AS h
WHERE h.event_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ledger_event_ids AS k
                  JOIN event_ledger AS l ON l.seq = k.seq AND l.received_at = k.received_at
                  WHERE k.event_id = h.event_id)
  AND NOT EXISTS (SELECT 1 FROM ledger_archived_tasks AS a WHERE a.task_id = h.task_id)
  -- an event recorded in a month since archived (rows of no task, such as a pause of all)
  AND NOT EXISTS (SELECT 1 FROM ledger_event_ids AS k
                  JOIN ledger_archives AS a
                    ON k.received_at >= a.month::timestamp AT TIME ZONE 'UTC'
                   AND k.received_at < (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC'
                  WHERE k.event_id = h.event_id)
ORDER BY h.id

-- verify_unkeyed_rows --
-- Ledger rows whose id has no key in ledger_event_ids, or whose key names another row (019: ids are found and deduplicated only through the keys), in seq order.
SELECT l.seq, l.event_id::text AS event_id, k.seq AS key_seq
FROM event_ledger AS l
LEFT JOIN ledger_event_ids AS k ON k.event_id = l.event_id
WHERE k.event_id IS NULL OR k.seq <> l.seq OR k.received_at <> l.received_at
ORDER BY l.seq

-- verify_dangling_keys --
-- Keys in ledger_event_ids whose ledger row is gone, outside the archived months (014): such a key makes every later event with its id count as a duplicate of an archived event (acknowledged, not recorded); in seq order.
SELECT k.seq, k.event_id::text AS event_id
FROM ledger_event_ids AS k
WHERE NOT EXISTS (SELECT 1 FROM event_ledger AS l
                  WHERE l.seq = k.seq AND l.received_at = k.received_at)
  AND NOT EXISTS (SELECT 1 FROM ledger_archives AS a
                  WHERE k.received_at >= a.month::timestamp AT TIME ZONE 'UTC'
                    AND k.received_at < (a.month + interval '1 month')::timestamp AT TIME ZONE 'UTC')
ORDER BY k.seq

-- verify_current_search_path --
-- The session's search_path, to put verify's scratch tables first or last in it.
SELECT current_setting('search_path')

-- verify_scratch_copy_tasks --
-- Stand-ins for tasks whose events do not fold: their stored rows, so their steps still project.
INSERT INTO pg_temp.tasks SELECT * FROM tasks WHERE task_id = ANY($1::uuid[])
