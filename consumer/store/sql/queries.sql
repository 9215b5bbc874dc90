-- Audit queries of the HTTP API and the CLI (consumer/queries/reads.py), and the
-- stale-work query they share with consumer/admission/stale.py. Reads run in a read-only
-- transaction with plan_cache_mode = force_custom_plan, so the "$n IS NULL OR ..." guards
-- of the shared filter fold away for the values actually given and the planner sees
-- plain predicates.

-- read_custom_plans --
-- Plan each statement of this read transaction for its actual parameters (see above).
SET LOCAL plan_cache_mode = force_custom_plan

-- task_filter --
-- Shared WHERE clause of every task filter ($1..$12); spliced into the statements below at /*task_filter*/.
-- $9: project; $10/$11: an intent's service and its word pattern. A finished task matches the
-- service by services_touched; an unfinished one (nothing touched yet) by services_requested
-- or a plan step naming the service. $12: has suggestions (true) or none (false).
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
         -- a correlated scalar, not EXISTS: EXISTS inside OR may be planned as a hashed
         -- subplan that runs the regex over every row of the table. 017: the task's step
         -- actions joined by newlines, one primary-key row (execution_logs has no partition
         -- key here: a probe of every month); the pattern never spans a newline
         OR coalesce((SELECT a.actions ~* $8::text FROM task_step_actions a
                      WHERE a.task_id = t.task_id), false))
    AND ($9::uuid IS NULL OR t.project_id = $9::uuid)
    AND ($10::text IS NULL
         OR t.services_touched @> ARRAY[$10::text]
         OR (t.status NOT IN ('completed', 'failed', 'rejected')
             AND ($10::text = ANY(t.services_requested)
                  OR (jsonb_typeof(t.plan -> 'steps') = 'array'
                      AND EXISTS (SELECT 1
                                  FROM jsonb_array_elements_text(t.plan -> 'steps') AS s(step)
                                  WHERE s.step ~* $11::text)))))
    AND ($12::bool IS NULL
         OR EXISTS (SELECT 1 FROM task_suggestions g WHERE g.task_id = t.task_id) = $12::bool)

-- audit_tasks --
-- One page of tasks matching the filter, newest first; keyset cursor ($13, $14), page size + 1 ($15).
SELECT t.task_id, t.status, t.request_text, t.created_by, t.project_id, t.agent_id,
       t.agent_type, t.services_requested, t.services_touched, t.error_cause, t.error_type,
       t.error_message, t.cost_usd, t.created_at, t.approved_at, t.started_at,
       t.completed_at, t.updated_at
FROM tasks t
WHERE /*task_filter*/
  AND ($13::timestamptz IS NULL OR (t.created_at, t.task_id) < ($13::timestamptz, $14::uuid))
ORDER BY t.created_at DESC, t.task_id DESC
LIMIT $15

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
-- Services touched most often by the tasks matching the filter ($13 = how many).
SELECT s.service, count(*) AS n
FROM tasks t
CROSS JOIN LATERAL unnest(t.services_touched) AS s(service)
WHERE /*task_filter*/
GROUP BY s.service
ORDER BY n DESC, s.service
LIMIT $13

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
SELECT e.log_id, e.event_id, e.step_number, e.agent_type, e.action, e.status,
       e.output_summary, e.output_full, e.duration_ms, e.timestamp, e.recorded_at
FROM execution_logs e
WHERE e.task_id = $1
ORDER BY e.timestamp, e.step_number, e.recorded_at, e.log_id

-- audit_task_suggestions --
-- Suggestions of one task, oldest first, each with its latest resolution and how many there were.
SELECT s.suggestion_id, s.event_id, s.position, s.suggestion, s.reason, s.created_at, s.source,
       r.resolution, r.resolved_by, r.resolved_at, r.note, r.event_id AS resolution_event_id,
       (SELECT count(*) FROM suggestion_resolutions r2
        WHERE r2.suggestion_id = s.suggestion_id) AS resolutions
FROM task_suggestions s
LEFT JOIN LATERAL (SELECT * FROM suggestion_resolutions r1
                   WHERE r1.suggestion_id = s.suggestion_id
                   ORDER BY r1.resolved_at DESC, r1.event_id DESC LIMIT 1) AS r ON true
WHERE s.task_id = $1
ORDER BY s.created_at, s.position, s.suggestion_id

-- audit_task_pause_history --
-- Pause-queue transitions of one task, oldest first.
SELECT h.id, h.action, h.reason, h.trigger, h.agent_id, h.event_id, h.at, h.details
FROM pause_history h
WHERE h.task_id = $1
ORDER BY h.at, h.id

-- audit_orphans --
-- task.* ledger events still unapplied after $1 seconds (no task row, or a terminal event waiting); at most $2.
-- 016: read from small indexed state, not a scan of the ledger. no_task: the events listed in
-- ledger_taskless_events (recorded while their task had no row; forgotten when the row is
-- created) whose task still has none. terminal_waiting: the unfinished tasks (by status: the
-- CHECK on tasks.status makes IN (pending, approved, executing) the same as NOT IN the
-- terminal ones, and lets an index answer) with a first terminal event in
-- ledger_task_terminals (015; a later terminal is a conflict, so it is the only one that
-- is not). Each side reads its ledger rows by primary key (month pruned by received_at);
-- rows of archived months are gone from the ledger and left out, as before.
SELECT o.seq, o.event_id, o.event_type, o.source, o.task_id, o.event_time, o.received_at,
       o.task_status, o.kind,
       CASE WHEN o.kind = 'no_task' THEN ARRAY['task.requested']::text[]
            ELSE ARRAY(SELECT x.event_type
                       FROM unnest(ARRAY['task.requested', 'task.approved',
                                         'task.started']::text[]) AS x(event_type)
                       WHERE NOT EXISTS (SELECT 1 FROM event_ledger l2
                                         WHERE l2.task_id = o.task_id
                                           AND l2.event_type = x.event_type))
       END AS missing
FROM ((SELECT l.seq, l.event_id, l.event_type, l.source, l.task_id, l.event_time, l.received_at,
              NULL::text AS task_status, 'no_task'::text AS kind
       -- the candidates first, in order, then their ledger rows by key: joined the other way
       -- round the planner anti-joined the whole ledger against tasks (30 s at 20M rows)
       FROM (SELECT w.task_id, w.seq, w.received_at
             FROM ledger_taskless_events w
             WHERE w.received_at < now() - make_interval(secs => $1::float8)
               -- OFFSET 0 keeps this a probe per candidate, in received_at order: as an
               -- anti-join, with statistics that had not caught up with a burst of 2.8M
               -- taskless events, the planner hashed them all and sorted (1.7 s at 20M rows)
               AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = w.task_id OFFSET 0)
               -- rows of archived months have no ledger row to show (and must not use up
               -- the limit ahead of newer orphans)
               AND NOT EXISTS (SELECT 1 FROM ledger_archives a
                               WHERE w.received_at >= a.month::timestamp AT TIME ZONE 'UTC'
                                 AND w.received_at < (a.month + interval '1 month')::timestamp
                                                     AT TIME ZONE 'UTC')
             ORDER BY w.received_at, w.seq
             LIMIT $2) AS w
       CROSS JOIN LATERAL (SELECT l.seq, l.event_id, l.event_type, l.source, l.task_id,
                                  l.event_time, l.received_at
                           FROM event_ledger l
                           WHERE l.seq = w.seq AND l.received_at = w.received_at
                             AND l.task_id = w.task_id AND l.event_type LIKE 'task.%'
                           LIMIT 1) AS l  -- one row per key; LIMIT keeps it a lookup
       ORDER BY w.received_at, w.seq)
      UNION ALL
      (SELECT l.seq, l.event_id, l.event_type, l.source, l.task_id, l.event_time, l.received_at,
              t.status::text AS task_status, 'terminal_waiting'::text AS kind
       FROM tasks t
       JOIN ledger_task_terminals x ON x.task_id = t.task_id
       JOIN ledger_event_ids k ON k.event_id = x.event_id
       JOIN event_ledger l ON l.seq = k.seq AND l.received_at = k.received_at
       WHERE t.status IN ('pending', 'approved', 'executing')
         AND t.status NOT IN ('completed', 'failed', 'rejected')
         AND k.received_at < now() - make_interval(secs => $1::float8)
         AND l.task_id = t.task_id
         AND l.event_type IN ('task.completed', 'task.failed', 'task.rejected')
         AND l.conflict_with IS NULL
       ORDER BY l.received_at, l.seq
       LIMIT $2)
      ORDER BY received_at, seq
      LIMIT $2) AS o
ORDER BY o.received_at, o.seq

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

-- audit_flushes --
-- Write batches (ledger chain links) since $1 (NULL: ever) by why they were flushed, with their events and the latest.
SELECT coalesce(c.trigger, '(none)') AS trigger, count(*) AS batches,
       sum(cardinality(c.seqs)) AS events, max(c.created_at) AS latest
FROM ledger_chain c
WHERE ($1::timestamptz IS NULL OR c.created_at >= $1::timestamptz)
GROUP BY 1
ORDER BY batches DESC, trigger

-- audit_dispatches --
-- Dispatch requests (the first dispatch.requested of each task), newest first, each with
-- its state and latest decision from pause_history: waiting (in pause_queue), assigned
-- (released to an agent: immediate, capacity, timeout, manual), cancelled (the task ended
-- while it waited), requested (no decision recorded). $1 state (NULL: any), $2 agent_id
-- (NULL: any), $3 requested since (NULL: ever), $4/$5 keyset (requested_at, task_id) of
-- the previous page's last row (NULL: first page), $6 rows.
-- 016: the requests come from ledger_task_dispatches (the first request of each task,
-- written with the ledger row), walked newest first on its (requested_at, task_id) index;
-- a request whose ledger row left with an archived month is left out, as when the
-- listing read the ledger; the request's data is read by primary key for the page only.
WITH requests AS (
    SELECT r.task_id, r.event_id AS request_event_id, r.requested_at, r.seq, r.received_at
    FROM ledger_task_dispatches r
    WHERE ($3::timestamptz IS NULL OR r.requested_at >= $3::timestamptz)
      AND ($4::timestamptz IS NULL OR (r.requested_at, r.task_id) < ($4::timestamptz, $5::uuid))
      -- waiting: only requests in pause_queue (the same as status = 'waiting' below)
      AND ($1::text IS DISTINCT FROM 'waiting'
           OR EXISTS (SELECT 1 FROM pause_queue w2 WHERE w2.task_id = r.task_id))
      AND EXISTS (SELECT 1 FROM event_ledger l
                  WHERE l.seq = r.seq AND l.received_at = r.received_at)
), decided AS (
    SELECT r.task_id, r.request_event_id, r.requested_at, r.seq, r.received_at,
           CASE WHEN w.id IS NOT NULL THEN 'waiting'
                WHEN d.trigger = 'cancelled' THEN 'cancelled'
                WHEN d.id IS NOT NULL THEN 'assigned'
                ELSE 'requested' END AS status,
           coalesce(w.reason, d.reason, p.reason) AS reason,
           d.trigger, d.agent_id, d.at AS decided_at, p.at AS paused_at,
           d.details ->> 'message_id' AS message_id,
           CASE WHEN jsonb_typeof(d.details -> 'waited_s') = 'number'
                THEN (d.details ->> 'waited_s')::float8 END AS waited_s,
           t.status AS task_status
    FROM requests r
    LEFT JOIN pause_queue w ON w.task_id = r.task_id
    LEFT JOIN LATERAL (
        SELECT h.id, h.reason, h.trigger, h.agent_id, h.at, h.details
        FROM pause_history h
        WHERE h.task_id = r.task_id AND h.action = 'released'
        ORDER BY h.at DESC, h.id DESC
        LIMIT 1
    ) d ON true
    LEFT JOIN LATERAL (
        SELECT h.reason, h.at
        FROM pause_history h
        WHERE h.task_id = r.task_id AND h.action = 'paused'
        ORDER BY h.at DESC, h.id DESC
        LIMIT 1
    ) p ON true
    LEFT JOIN tasks t ON t.task_id = r.task_id
), page AS (
    SELECT *
    FROM decided
    WHERE ($1::text IS NULL OR status = $1::text)
      AND ($2::text IS NULL OR agent_id = $2::text)
    ORDER BY requested_at DESC, task_id DESC
    LIMIT $6
)
SELECT g.task_id, g.request_event_id, g.requested_at,
       e.data ->> 'agent_type' AS agent_type,
       CASE WHEN jsonb_typeof(e.data -> 'priority') = 'number'
            THEN (e.data ->> 'priority')::numeric::int ELSE 3 END AS priority,
       g.status, g.reason, g.trigger, g.agent_id, g.decided_at, g.paused_at, g.message_id,
       g.waited_s, g.task_status
FROM page g
-- LIMIT 1 (the primary key has one row anyway) keeps this a lookup per row of the page:
-- flattened into a join it may be planned as a hash join over every month partition
CROSS JOIN LATERAL (SELECT l.envelope -> 'data' AS data
                    FROM event_ledger l
                    WHERE l.seq = g.seq AND l.received_at = g.received_at
                    LIMIT 1) AS e
ORDER BY g.requested_at DESC, g.task_id DESC
