-- lifecycle_events --
-- Every non-conflicting lifecycle event of these tasks, the input of the projection fold.
SELECT task_id, event_id, event_type, source, event_time, envelope -> 'data' AS data
FROM event_ledger
WHERE task_id = ANY($1::uuid[])
  AND event_type IN ('task.requested', 'task.approved', 'task.started',
                     'task.completed', 'task.failed', 'task.rejected')
  AND conflict_with IS NULL
ORDER BY task_id, seq

-- lifecycle_events_by_key --
-- The same rows as lifecycle_events, found through their keys in ledger_task_lifecycle (018): only the months between the oldest and the newest key are read (pruned when the plan starts), each by its primary key, not a probe of every month by task_id (the re-fold of every touched task, each batch).
WITH k AS MATERIALIZED (
    SELECT x.seq, x.received_at FROM ledger_task_lifecycle AS x WHERE x.task_id = ANY($1::uuid[])
)
SELECT l.task_id, l.event_id, l.event_type, l.source, l.event_time, l.envelope -> 'data' AS data
FROM event_ledger AS l
WHERE l.seq = ANY(ARRAY(SELECT k.seq FROM k))
  AND l.received_at >= (SELECT min(k.received_at) FROM k)
  AND l.received_at <= (SELECT max(k.received_at) FROM k)
  AND l.task_id = ANY($1::uuid[])
  AND l.event_type IN ('task.requested', 'task.approved', 'task.started',
                       'task.completed', 'task.failed', 'task.rejected')
  AND l.conflict_with IS NULL
ORDER BY l.task_id, l.seq

-- taskless_keys --
-- The keys of the task events recorded while these tasks had no row (016): what a task created now must catch up on; read before its row is created (the row's trigger forgets them).
SELECT task_id, seq, received_at
FROM ledger_taskless_events
WHERE task_id = ANY($1::uuid[])

-- current_tasks --
-- The projected rows as they stand, to write only what changed.
SELECT task_id, status, approved_at, started_at, completed_at, updated_at, approved_by, agent_id
FROM tasks
WHERE task_id = ANY($1::uuid[])

-- upsert_task --
-- Write one task's projection; a finished task is never touched (the trigger would refuse).
INSERT INTO tasks AS t (
    task_id, status, request_text, created_by, project_id, plan, services_requested,
    estimated_resources, agent_id, agent_type, approved_by, approved_at, started_at,
    completed_at, rejected_reason, error_message, services_touched, outcome,
    actual_resources, external_ai_used, cost_usd, error_type, error_cause, failed_step,
    resource_state, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23, $24, $25, $26, $27)
ON CONFLICT (task_id) DO UPDATE SET
    status = EXCLUDED.status,
    agent_id = EXCLUDED.agent_id,
    agent_type = EXCLUDED.agent_type,
    approved_by = EXCLUDED.approved_by,
    approved_at = EXCLUDED.approved_at,
    started_at = EXCLUDED.started_at,
    completed_at = EXCLUDED.completed_at,
    rejected_reason = EXCLUDED.rejected_reason,
    error_message = EXCLUDED.error_message,
    services_touched = EXCLUDED.services_touched,
    outcome = EXCLUDED.outcome,
    actual_resources = EXCLUDED.actual_resources,
    external_ai_used = EXCLUDED.external_ai_used,
    cost_usd = EXCLUDED.cost_usd,
    error_type = EXCLUDED.error_type,
    error_cause = EXCLUDED.error_cause,
    failed_step = EXCLUDED.failed_step,
    resource_state = EXCLUDED.resource_state,
    updated_at = EXCLUDED.updated_at
WHERE t.status NOT IN ('completed', 'failed', 'rejected')

-- insert_steps --
-- Project recorded task.step events into execution_logs once each, for tasks that exist: those with ids $1 (the handler's batch, keyed through ledger_event_ids), those at keys $2/$3 (seq/received_at: steps that waited for a task created now, from taskless_keys), and every step of tasks $4 (verify's replay; the handler passes none). Each row is read by its key, one month partition per row; recorded_at is the event's received_at (013). 017: the trigger on execution_logs appends the actions of the rows really inserted to task_step_actions (a re-delivered step, skipped here, is not appended again).
INSERT INTO execution_logs
    (log_id, event_id, task_id, step_number, agent_type, action, status, output_summary,
     output_full, duration_ms, timestamp, recorded_at)
SELECT l.event_id, l.event_id, l.task_id,
       (l.envelope -> 'data' ->> 'step_number')::numeric::int,  -- 2.0 is an integer too
       l.envelope -> 'data' ->> 'agent_type',
       l.envelope -> 'data' ->> 'action',
       l.envelope -> 'data' ->> 'status',
       left(l.envelope -> 'data' ->> 'output_summary', 500),
       NULLIF(l.envelope -> 'data' -> 'output_full', 'null'::jsonb),
       (l.envelope -> 'data' ->> 'duration_ms')::numeric::int,
       l.event_time, l.received_at
FROM (SELECT k.seq, k.received_at FROM ledger_event_ids AS k WHERE k.event_id = ANY($1::uuid[])
      UNION
      SELECT w.seq, w.received_at
      FROM unnest($2::bigint[], $3::timestamptz[]) AS w(seq, received_at)
      UNION
      SELECT a.seq, a.received_at FROM event_ledger AS a
      WHERE a.task_id = ANY($4::uuid[]) AND a.event_type = 'task.step') AS w
CROSS JOIN LATERAL (SELECT l.* FROM event_ledger AS l
                    WHERE l.seq = w.seq AND l.received_at = w.received_at
                      AND l.event_type = 'task.step'
                    LIMIT 1) AS l  -- one row per key; the LIMIT keeps this a per-key lookup
JOIN tasks AS t ON t.task_id = l.task_id
ORDER BY l.seq
ON CONFLICT (event_id, recorded_at) DO NOTHING

-- insert_suggestions --
-- Append recorded task.suggested events to task_suggestions once each, for tasks that exist: this batch's ($1, ids) and those that waited for a task created now ($2/$3, keys), each read by its key; the n-th suggestion of event E gets the id md5('E:n')::uuid.
INSERT INTO task_suggestions
    (suggestion_id, task_id, event_id, position, suggestion, reason, created_at, source)
SELECT md5(l.event_id::text || ':' || s.n)::uuid, l.task_id, l.event_id, s.n::int,
       s.item ->> 'suggestion', s.item ->> 'reason', l.event_time, l.source
FROM (SELECT k.seq, k.received_at FROM ledger_event_ids AS k WHERE k.event_id = ANY($1::uuid[])
      UNION
      SELECT w.seq, w.received_at
      FROM unnest($2::bigint[], $3::timestamptz[]) AS w(seq, received_at)) AS w
CROSS JOIN LATERAL (SELECT l.* FROM event_ledger AS l
                    WHERE l.seq = w.seq AND l.received_at = w.received_at
                      AND l.event_type = 'task.suggested'
                    LIMIT 1) AS l  -- one row per key; the LIMIT keeps this a per-key lookup
JOIN tasks AS t ON t.task_id = l.task_id
CROSS JOIN LATERAL jsonb_array_elements(l.envelope -> 'data' -> 'suggestions')
    WITH ORDINALITY AS s(item, n)
ORDER BY l.seq, s.n
ON CONFLICT (suggestion_id) DO NOTHING

-- insert_resolutions --
-- Append recorded suggestion.resolved events once each, for suggestions of the same task that exist (a resolution that came first waits in the ledger): this batch's ($1, ids, read by their keys in ledger_event_ids: 019) and those of tasks $2 (whose suggestions appeared now).
INSERT INTO suggestion_resolutions
    (event_id, suggestion_id, task_id, resolution, resolved_by, note, resolved_at, source)
SELECT l.event_id, s.suggestion_id, l.task_id,
       l.envelope -> 'data' ->> 'resolution',
       l.envelope -> 'data' ->> 'resolved_by',
       l.envelope -> 'data' ->> 'note',
       l.event_time, l.source
FROM (SELECT k.seq, k.received_at FROM ledger_event_ids AS k WHERE k.event_id = ANY($1::uuid[])
      UNION
      SELECT a.seq, a.received_at FROM event_ledger AS a
      WHERE a.task_id = ANY($2::uuid[]) AND a.event_type = 'suggestion.resolved') AS w
CROSS JOIN LATERAL (SELECT l.* FROM event_ledger AS l
                    WHERE l.seq = w.seq AND l.received_at = w.received_at
                      AND l.event_type = 'suggestion.resolved'
                    LIMIT 1) AS l  -- one row per key; the LIMIT keeps this a per-key lookup
JOIN task_suggestions AS s
  ON s.suggestion_id = (l.envelope -> 'data' ->> 'suggestion_id')::uuid
 AND s.task_id = l.task_id
ORDER BY l.seq
ON CONFLICT (event_id) DO NOTHING
