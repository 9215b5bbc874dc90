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
INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash)
SELECT $1::bigint[], $2::bytea[], head.hash,
       sha256(coalesce(head.hash, ''::bytea)
              || (SELECT string_agg(d, ''::bytea ORDER BY i)
                  FROM unnest($2::bytea[]) WITH ORDINALITY AS u(d, i)))
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
