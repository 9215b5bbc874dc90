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
-- Chain the rows this transaction recorded to the newest link.
INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash)
SELECT array_agg(r.seq ORDER BY r.seq),
       array_agg(r.digest ORDER BY r.seq),
       head.hash,
       sha256(coalesce(head.hash, ''::bytea) || string_agg(r.digest, ''::bytea ORDER BY r.seq))
FROM (SELECT l.seq, ledger_row_digest(l) AS digest
      FROM event_ledger AS l WHERE l.seq = ANY($1::bigint[])) AS r
LEFT JOIN LATERAL (SELECT c.hash FROM ledger_chain AS c ORDER BY c.link DESC LIMIT 1) AS head
       ON true
GROUP BY head.hash
