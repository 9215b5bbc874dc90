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
RETURNING event_id

-- existing_terminal_events --
-- The terminal event already recorded (not itself a conflict) for each of these tasks.
SELECT task_id, event_id
FROM event_ledger
WHERE task_id = ANY($1::uuid[])
  AND event_type IN ('task.completed', 'task.failed', 'task.rejected')
  AND conflict_with IS NULL
