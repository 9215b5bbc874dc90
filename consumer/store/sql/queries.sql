-- Audit queries of the HTTP API and the CLI (consumer/queries/reads.py), and the
-- stale-work query they share with consumer/admission/stale.py. Reads run in a read-only
-- transaction with plan_cache_mode = force_custom_plan, so the "$n IS NULL OR ..." guards
-- of the shared filter fold away for the values actually given and the planner sees
-- plain predicates.

-- read_custom_plans --
-- Plan each statement of this read transaction for its actual parameters (see above).
SET LOCAL plan_cache_mode = force_custom_plan

-- task_filter --
-- Shared WHERE clause of every task filter ($1..$8); spliced into the statements below at /*task_filter*/.
    ($1::text[] IS NULL OR t.status = ANY($1::text[]))
    AND ($2::timestamptz IS NULL OR t.created_at >= $2::timestamptz)
    AND ($3::timestamptz IS NULL OR t.created_at < $3::timestamptz)
    AND ($4::text[] IS NULL OR t.services_touched && $4::text[])
    AND ($5::text[] IS NULL OR t.services_touched @> $5::text[])
    AND ($6::text IS NULL OR t.agent_type = $6::text)
    AND ($7::text IS NULL OR t.error_cause = $7::text)
    AND ($8::text IS NULL
         OR t.request_text ~* $8::text
         OR (jsonb_typeof(t.plan -> 'steps') = 'array'
             AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(t.plan -> 'steps') AS s(step)
                         WHERE s.step ~* $8::text))
         -- a correlated aggregate, not EXISTS: EXISTS inside OR may be planned as a hashed
         -- subplan that runs the regex over every step of every task
         OR (SELECT bool_or(e.action ~* $8::text) FROM execution_logs e
             WHERE e.task_id = t.task_id))

-- audit_tasks --
-- One page of tasks matching the filter, newest first; keyset cursor ($9, $10), page size + 1 ($11).
SELECT t.task_id, t.status, t.request_text, t.created_by, t.project_id, t.agent_id,
       t.agent_type, t.services_requested, t.services_touched, t.error_cause, t.error_type,
       t.error_message, t.cost_usd, t.created_at, t.approved_at, t.started_at,
       t.completed_at, t.updated_at
FROM tasks t
WHERE /*task_filter*/
  AND ($9::timestamptz IS NULL OR (t.created_at, t.task_id) < ($9::timestamptz, $10::uuid))
ORDER BY t.created_at DESC, t.task_id DESC
LIMIT $11

-- audit_failure_counts --
-- Failed tasks matching the filter, counted by (error cause, error type); one GROUP BY streams off an index.
SELECT t.error_cause, t.error_type, count(*) AS n
FROM tasks t
WHERE /*task_filter*/
GROUP BY t.error_cause, t.error_type

-- audit_status_counts --
-- Tasks matching the filter counted by status and error cause, with their cost.
SELECT t.status, t.error_cause, count(*) AS n, sum(t.cost_usd) AS cost_usd
FROM tasks t
WHERE /*task_filter*/
GROUP BY t.status, t.error_cause

-- audit_busiest_services --
-- Services touched most often by the tasks matching the filter ($9 = how many).
SELECT s.service, count(*) AS n
FROM tasks t
CROSS JOIN LATERAL unnest(t.services_touched) AS s(service)
WHERE /*task_filter*/
GROUP BY s.service
ORDER BY n DESC, s.service
LIMIT $9

-- audit_task --
-- The whole row of one task.
SELECT t.*
FROM tasks t
WHERE t.task_id = $1

-- audit_task_events --
-- Ledger events of one task, in arrival order.
SELECT l.seq, l.event_id, l.event_type, l.source, l.event_time, l.received_at, l.conflict_with
FROM event_ledger l
WHERE l.task_id = $1
ORDER BY l.seq

-- audit_task_steps --
-- Steps (execution_logs) of one task, in the order they happened.
SELECT e.id, e.event_id, e.step_number, e.agent_type, e.action, e.status, e.output_summary,
       e.output_full, e.duration_ms, e.created_at, e.recorded_at
FROM execution_logs e
WHERE e.task_id = $1
ORDER BY e.created_at, e.step_number, e.id

-- audit_task_pause_history --
-- Pause-queue transitions of one task, oldest first.
SELECT h.id, h.action, h.reason, h.trigger, h.agent_id, h.event_id, h.at, h.details
FROM pause_history h
WHERE h.task_id = $1
ORDER BY h.at, h.id

-- audit_orphans --
-- task.* ledger events still unapplied after $1 seconds (no task row, or a terminal event waiting); at most $2.
SELECT l.seq, l.event_id, l.event_type, l.source, l.task_id, l.event_time, l.received_at,
       t.status AS task_status,
       CASE WHEN t.task_id IS NULL THEN 'no_task' ELSE 'terminal_waiting' END AS kind,
       CASE WHEN t.task_id IS NULL THEN ARRAY['task.requested']::text[]
            ELSE ARRAY(SELECT x.event_type
                       FROM unnest(ARRAY['task.requested', 'task.approved',
                                         'task.started']::text[]) AS x(event_type)
                       WHERE NOT EXISTS (SELECT 1 FROM event_ledger l2
                                         WHERE l2.task_id = l.task_id
                                           AND l2.event_type = x.event_type))
       END AS missing
FROM event_ledger l
LEFT JOIN tasks t ON t.task_id = l.task_id
WHERE l.event_type LIKE 'task.%'
  AND l.task_id IS NOT NULL
  AND l.received_at < now() - make_interval(secs => $1::float8)
  AND (t.task_id IS NULL
       OR (l.event_type IN ('task.completed', 'task.failed', 'task.rejected')
           AND l.conflict_with IS NULL
           AND t.status NOT IN ('completed', 'failed', 'rejected')))
ORDER BY l.received_at, l.seq
LIMIT $2

-- stale_executing --
-- Executing tasks whose newest ledger event (or, without one, last update) is older than $1 seconds, most silent first; at most $2.
SELECT t.task_id, t.agent_id, t.agent_type, t.request_text, t.started_at, t.created_at,
       last.event_time AS last_event_at,
       COALESCE(last.event_time, t.updated_at) AS silent_since,
       extract(epoch FROM now() - COALESCE(last.event_time, t.updated_at))::float8 AS stale_seconds
FROM tasks t
LEFT JOIN LATERAL (SELECT max(l.event_time) AS event_time
                   FROM event_ledger l WHERE l.task_id = t.task_id) AS last ON true
WHERE t.status = 'executing'
  AND COALESCE(last.event_time, t.updated_at) < now() - make_interval(secs => $1::float8)
ORDER BY silent_since, t.task_id
LIMIT $2

-- audit_pause_queue --
-- Waiting dispatch requests, most urgent then oldest first, with what they need and whether a hold applies.
SELECT p.id, p.task_id, p.reason, p.priority, p.agent_type, p.required_gpu_vram_mb,
       p.required_cpu_cores, p.required_memory_mb, p.paused_at, p.resume_after, p.not_before,
       p.request_event_id, p.work_plan_json, t.request_text, t.status AS task_status,
       EXISTS (SELECT 1 FROM dispatch_holds h
               WHERE h.hold_key IN ('all', 'task:' || p.task_id::text)
                 AND (h.resume_after IS NULL OR h.resume_after > now())) AS held
FROM pause_queue p
LEFT JOIN tasks t ON t.task_id = p.task_id
ORDER BY p.priority, p.paused_at, p.id
LIMIT $1

-- audit_pause_entry --
-- The pause-queue entry of one task, if it waits.
SELECT p.id, p.task_id, p.reason, p.priority, p.agent_type, p.required_gpu_vram_mb,
       p.required_cpu_cores, p.required_memory_mb, p.paused_at, p.resume_after, p.not_before,
       p.request_event_id, p.work_plan_json, t.request_text, t.status AS task_status,
       EXISTS (SELECT 1 FROM dispatch_holds h
               WHERE h.hold_key IN ('all', 'task:' || p.task_id::text)
                 AND (h.resume_after IS NULL OR h.resume_after > now())) AS held
FROM pause_queue p
LEFT JOIN tasks t ON t.task_id = p.task_id
WHERE p.task_id = $1

-- audit_holds --
-- Operator holds on dispatch in force (all dispatch, or one task).
SELECT h.hold_key, h.scope, h.task_id, h.reason, h.resume_after, h.created_at, h.event_id
FROM dispatch_holds h
ORDER BY h.created_at, h.hold_key

-- audit_operator_actions --
-- What operators did since $1 (NULL: ever), newest first; at most $2.
SELECT a.id, a.action, a.actor, a.at, a.params, a.result, a.event_id
FROM operator_actions a
WHERE ($1::timestamptz IS NULL OR a.at >= $1::timestamptz)
ORDER BY a.at DESC, a.id DESC
LIMIT $2
