-- Post-mortem queries over the taskledger record.
--
-- Run them all:  psql "$TASKLEDGER_DATABASE_URL" -f scripts/query_examples.sql
-- or copy one. Each query is preceded by "-- name: <name>" and a one-line description;
-- tests/integration/test_query_examples.py runs every one against the sample data of
-- scripts/seed_sample_data.py. They only read, and need no psql variables: where a task or
-- a service has to be chosen, a literal or a subquery picks one; replace it with yours.
--
-- The first six are the phase-1 plan's post-mortem queries, verbatim (only the "-- name:"
-- headers are added). Query 2 keeps the plan's placeholder 'XXX': put a task_id there (the
-- test puts the most recent failed task's). The plan's names hold: execution_logs.log_id and
-- .timestamp; tasks.external_ai_used ->> 'model' / ->> 'cost_usd' (a summary of the calls;
-- the calls themselves are in external_ai_used -> 'calls'); resources in whole seconds and
-- megabytes, so the ::int casts hold. Ours follow.

-- name: plan_failed_tasks_last_7_days
-- Plan query 1: all failed tasks in last 7 days.
SELECT task_id, request_text, status, error_message, created_at
FROM tasks
WHERE status = 'failed' AND created_at > NOW() - INTERVAL '7 days'
ORDER BY created_at DESC;

-- name: plan_task_timeline
-- Plan query 2: execution timeline for a specific task (replace 'XXX' with a task_id).
SELECT task_id, step_number, agent_type, action, status, duration_ms, timestamp
FROM execution_logs
WHERE task_id = 'XXX'
ORDER BY step_number;

-- name: plan_resources_by_task
-- Plan query 3: total resources used by task.
SELECT task_id, request_text,
  (actual_resources->>'duration_seconds')::int as duration_sec,
  (actual_resources->>'gpu_vram_mb_used')::int as gpu_mb
FROM tasks
WHERE created_at > NOW() - INTERVAL '30 days'
ORDER BY created_at DESC;

-- name: plan_external_ai
-- Plan query 4: tasks using external AI.
SELECT task_id, request_text,
  external_ai_used->>'model' as model,
  (external_ai_used->>'cost_usd')::numeric as cost
FROM tasks
WHERE external_ai_used IS NOT NULL
ORDER BY created_at DESC;

-- name: plan_avg_duration_by_agent_type
-- Plan query 5: average duration by agent type.
SELECT agent_type, AVG(duration_ms) as avg_duration_ms, COUNT(*) as execution_count
FROM execution_logs
GROUP BY agent_type;

-- name: plan_failed_steps
-- Plan query 6: failed steps (errors during execution).
SELECT task_id, step_number, action, status, output_summary
FROM execution_logs
WHERE status = 'failed'
ORDER BY timestamp DESC;

-- name: failed_tasks_last_7_days
-- Failed tasks of the last 7 days, newest first, with the cause, the failing step and the message.
SELECT task_id,
       created_at,
       completed_at,
       agent_type,
       agent_id,
       request_text,
       error_cause,
       error_type,
       failed_step,
       error_message,
       services_touched
FROM tasks
WHERE status = 'failed'
  AND created_at >= now() - interval '7 days'
ORDER BY created_at DESC;

-- name: task_timeline
-- Lifecycle and steps of one task in time order (the most recent failed task; put your task_id in `target`).
WITH target AS (
    SELECT task_id FROM tasks WHERE status = 'failed' ORDER BY created_at DESC LIMIT 1
),
timeline AS (
    SELECT t.created_at AS at, 0 AS step, 'requested' AS what,
           coalesce(t.created_by, '?') || ': ' || t.request_text AS detail
    FROM tasks t JOIN target USING (task_id)
    UNION ALL
    SELECT t.approved_at, 0, 'approved', t.approved_by
    FROM tasks t JOIN target USING (task_id)
    UNION ALL
    SELECT t.started_at, 0, 'started', t.agent_type || ' agent ' || t.agent_id
    FROM tasks t JOIN target USING (task_id)
    UNION ALL
    SELECT l.timestamp, l.step_number, 'step ' || l.step_number || ' ' || l.status,
           l.action || coalesce(' -> ' || l.output_summary, '')
           || coalesce(' (' || l.duration_ms || ' ms)', '')
    FROM execution_logs l JOIN target USING (task_id)
    UNION ALL
    SELECT t.completed_at, 999, t.status,
           coalesce(t.error_cause || '/' || t.error_type || ': ' || t.error_message,
                    t.outcome ->> 'output_summary')
    FROM tasks t JOIN target USING (task_id)
)
SELECT at, what, detail
FROM timeline
WHERE at IS NOT NULL
ORDER BY at, step;

-- name: resource_usage_per_task
-- What each finished task actually used (actual_resources), next to what was estimated.
SELECT task_id,
       status,
       agent_type,
       agent_id,
       (actual_resources ->> 'duration_seconds')::numeric    AS duration_s,
       (estimated_resources ->> 'duration_seconds')::numeric AS estimated_duration_s,
       (actual_resources ->> 'cpu_time_ms')::bigint          AS cpu_time_ms,
       (actual_resources ->> 'peak_memory_mb')::int          AS peak_memory_mb,
       (estimated_resources ->> 'memory_mb')::int            AS estimated_memory_mb,
       (actual_resources ->> 'gpu_vram_mb_used')::int        AS gpu_vram_mb_used,
       (actual_resources ->> 'agent_load_pct')::numeric      AS agent_load_pct,
       completed_at
FROM tasks
WHERE actual_resources IS NOT NULL
ORDER BY completed_at DESC;

-- name: resource_usage_by_agent_type
-- Average and peak resource use of finished tasks per agent type.
SELECT agent_type,
       count(*)                                                              AS tasks,
       round(avg((actual_resources ->> 'duration_seconds')::numeric), 1)    AS avg_duration_s,
       round(avg((actual_resources ->> 'cpu_time_ms')::numeric))            AS avg_cpu_time_ms,
       max((actual_resources ->> 'peak_memory_mb')::int)                     AS max_peak_memory_mb,
       max((actual_resources ->> 'gpu_vram_mb_used')::int)                   AS max_gpu_vram_mb,
       round(avg((actual_resources ->> 'agent_load_pct')::numeric), 1)      AS avg_agent_load_pct
FROM tasks
WHERE actual_resources IS NOT NULL
GROUP BY agent_type
ORDER BY avg_duration_s DESC;

-- name: external_ai_cost
-- Tasks that called an external AI, what they used and cost, with the grand total on every row.
SELECT t.task_id,
       t.status,
       t.agent_type,
       t.request_text,
       count(*)                                                      AS calls,
       string_agg(DISTINCT (c ->> 'provider') || '/' || (c ->> 'model'), ', ') AS models,
       sum((c ->> 'token_count')::bigint)                            AS tokens,
       sum((c ->> 'cost_usd')::numeric)                              AS cost_usd,
       sum(sum((c ->> 'cost_usd')::numeric)) OVER ()                 AS total_cost_usd
FROM tasks t
CROSS JOIN LATERAL jsonb_array_elements(t.external_ai_used -> 'calls') AS c
WHERE jsonb_typeof(t.external_ai_used -> 'calls') = 'array'
GROUP BY t.task_id, t.status, t.agent_type, t.request_text
ORDER BY cost_usd DESC;

-- name: avg_step_duration_by_agent_type
-- How long steps take per agent type (finished steps only: running ones have no duration yet).
SELECT agent_type,
       count(*)                                                          AS steps,
       round(avg(duration_ms))                                           AS avg_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms)          AS median_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)         AS p95_ms,
       max(duration_ms)                                                  AS max_ms
FROM execution_logs
WHERE duration_ms IS NOT NULL
GROUP BY agent_type
ORDER BY avg_ms DESC;

-- name: failed_steps
-- Every step that failed, newest first, with its task's cause and request.
SELECT l.timestamp,
       l.task_id,
       l.step_number,
       l.agent_type,
       l.action,
       l.output_summary,
       t.error_cause,
       t.error_type,
       t.request_text
FROM execution_logs l
JOIN tasks t USING (task_id)
WHERE l.status = 'failed'
ORDER BY l.timestamp DESC;

-- name: tasks_touching_service
-- Tasks that touched one service ('kuma' here), newest first: "what changed kuma last week?".
SELECT task_id,
       created_at,
       completed_at,
       status,
       agent_type,
       agent_id,
       request_text,
       services_touched,
       coalesce(outcome ->> 'output_summary', error_message) AS result
FROM tasks
WHERE services_touched @> ARRAY['kuma']
ORDER BY created_at DESC;

-- name: failures_by_error_cause
-- Failed tasks per error cause, with the error types seen and the latest occurrence.
SELECT coalesce(error_cause, 'unknown')                     AS error_cause,
       count(*)                                             AS failures,
       count(*) FILTER (WHERE created_at >= now() - interval '7 days') AS last_7_days,
       string_agg(DISTINCT error_type, ', ')                AS error_types,
       max(created_at)                                      AS latest
FROM tasks
WHERE status = 'failed'
GROUP BY 1
ORDER BY failures DESC;

-- name: waiting_dispatches
-- What waits in the pause queue and why, most urgent first, with what it needs.
SELECT p.task_id,
       p.reason,
       p.priority,
       p.agent_type,
       p.paused_at,
       now() - p.paused_at AS waiting_for,
       p.resume_after,
       p.required_gpu_vram_mb,
       p.required_cpu_cores,
       p.required_memory_mb,
       t.request_text
FROM pause_queue p
LEFT JOIN tasks t USING (task_id)
ORDER BY p.priority, p.paused_at;
