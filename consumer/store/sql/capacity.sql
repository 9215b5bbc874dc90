-- Capacity handler (consumer/capacity.py), outbox (consumer/outbox.py) and stale work
-- (consumer/stale.py). An agent is "usable" when its last report is fresh, it accepts
-- work and its load is under the pause threshold; what it has left is free - reserved.
-- A hold applies while it has no resume_after or its resume_after is still ahead.

-- capacity_lock_agents --
-- Lock the stored rows of the agents a batch reports on, in agent_id order (no deadlocks between processes).
SELECT agent_id FROM agent_capacity WHERE agent_id = ANY($1::text[]) ORDER BY agent_id FOR UPDATE

-- capacity_upsert_report --
-- Store a report unless a newer one is stored (a new report clears the reservations); returns the agent with what it has left when this report won.
INSERT INTO agent_capacity AS a (
    agent_id, agent_type, free_gpu_vram_mb, free_cpu_cores, free_memory_mb, load_pct,
    accepting, reported_at, report_event_id, received_at,
    reserved_gpu_vram_mb, reserved_cpu_cores, reserved_memory_mb)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), 0, 0, 0)
ON CONFLICT (agent_id) DO UPDATE SET
    agent_type = EXCLUDED.agent_type,
    free_gpu_vram_mb = EXCLUDED.free_gpu_vram_mb,
    free_cpu_cores = EXCLUDED.free_cpu_cores,
    free_memory_mb = EXCLUDED.free_memory_mb,
    load_pct = EXCLUDED.load_pct,
    accepting = EXCLUDED.accepting,
    reported_at = EXCLUDED.reported_at,
    report_event_id = EXCLUDED.report_event_id,
    received_at = EXCLUDED.received_at,
    reserved_gpu_vram_mb = 0,
    reserved_cpu_cores = 0,
    reserved_memory_mb = 0
WHERE (a.reported_at, a.report_event_id) < (EXCLUDED.reported_at, EXCLUDED.report_event_id)
RETURNING a.agent_id, a.agent_type,
          a.free_gpu_vram_mb - a.reserved_gpu_vram_mb AS rem_gpu_vram_mb,
          a.free_cpu_cores - a.reserved_cpu_cores AS rem_cpu_cores,
          a.free_memory_mb - a.reserved_memory_mb AS rem_memory_mb,
          (a.accepting AND a.load_pct < $10::float8
           AND a.reported_at > now() - make_interval(secs => $11::float8)) AS usable

-- capacity_usable_agents --
-- Usable agents of these types ($1, NULL: all) with room for the smallest need (per resource) of an entry that may go now (among tasks $4 if given), roomiest first, with what they have left; locked, skipping agents another transaction holds.
WITH need AS (
    SELECT agent_type, min(required_gpu_vram_mb) AS gpu, min(required_cpu_cores) AS cpu,
           min(required_memory_mb) AS mem
    FROM pause_queue
    WHERE reason = 'insufficient_capacity'
      AND (not_before IS NULL OR not_before <= now())
      AND ($1::text[] IS NULL OR agent_type = ANY($1::text[]))
      AND ($4::uuid[] IS NULL OR task_id = ANY($4::uuid[]))
    GROUP BY agent_type
)
SELECT a.agent_id, a.agent_type,
       a.free_gpu_vram_mb - a.reserved_gpu_vram_mb AS rem_gpu_vram_mb,
       a.free_cpu_cores - a.reserved_cpu_cores AS rem_cpu_cores,
       a.free_memory_mb - a.reserved_memory_mb AS rem_memory_mb
FROM agent_capacity a
JOIN need n ON n.agent_type = a.agent_type
WHERE a.accepting
  AND a.load_pct < $2::float8
  AND a.reported_at > now() - make_interval(secs => $3::float8)
  AND a.free_gpu_vram_mb - a.reserved_gpu_vram_mb >= n.gpu
  AND a.free_cpu_cores - a.reserved_cpu_cores >= n.cpu - 1e-9
  AND a.free_memory_mb - a.reserved_memory_mb >= n.mem
ORDER BY a.agent_type, a.free_memory_mb - a.reserved_memory_mb DESC, a.agent_id
FOR UPDATE OF a SKIP LOCKED

-- capacity_pick_agent --
-- The usable agent of type $1 with room for ($4 gpu, $5 cpu, $6 memory): most memory left, then agent_id; locked, skipping busy ones.
SELECT agent_id, agent_type
FROM agent_capacity
WHERE agent_type = $1
  AND accepting
  AND load_pct < $2::float8
  AND reported_at > now() - make_interval(secs => $3::float8)
  AND free_gpu_vram_mb - reserved_gpu_vram_mb >= $4::int
  AND free_cpu_cores - reserved_cpu_cores >= $5::float8 - 1e-9
  AND free_memory_mb - reserved_memory_mb >= $6::int
ORDER BY free_memory_mb - reserved_memory_mb DESC, agent_id
LIMIT 1
FOR UPDATE SKIP LOCKED

-- capacity_reserve --
-- Reserve resources on an agent until its next report.
UPDATE agent_capacity
SET reserved_gpu_vram_mb = reserved_gpu_vram_mb + $2::int,
    reserved_cpu_cores = reserved_cpu_cores + $3::float8,
    reserved_memory_mb = reserved_memory_mb + $4::int
WHERE agent_id = $1

-- capacity_release_candidates --
-- Waiting entries of type $1 that fit ($2 gpu, $3 cpu, $4 memory) and may go now (no hold, not_before passed; among tasks $6 if given; not ids $7), most urgent then oldest; at most $5, locked, skipping entries another transaction holds.
SELECT pq.id, pq.task_id, pq.work_plan_json, pq.reason, pq.priority, pq.paused_at,
       pq.agent_type, pq.required_gpu_vram_mb, pq.required_cpu_cores, pq.required_memory_mb,
       pq.not_before
FROM pause_queue pq
WHERE pq.agent_type = $1
  AND pq.reason = 'insufficient_capacity'
  AND (pq.not_before IS NULL OR pq.not_before <= now())
  AND pq.required_gpu_vram_mb <= $2::int
  AND pq.required_cpu_cores <= $3::float8 + 1e-9
  AND pq.required_memory_mb <= $4::int
  AND ($6::uuid[] IS NULL OR pq.task_id = ANY($6::uuid[]))
  AND NOT (pq.id = ANY($7::bigint[]))
  AND NOT EXISTS (SELECT 1 FROM dispatch_holds h
                  WHERE h.hold_key = 'all'
                    AND (h.resume_after IS NULL OR h.resume_after > now()))
  AND pq.task_id NOT IN (SELECT h.task_id FROM dispatch_holds h
                         WHERE h.scope = 'task' AND h.task_id IS NOT NULL
                           AND (h.resume_after IS NULL OR h.resume_after > now()))
ORDER BY pq.priority, pq.paused_at, pq.id
LIMIT $5
FOR UPDATE OF pq SKIP LOCKED

-- capacity_delete_entries --
-- Take released entries out of the pause queue.
DELETE FROM pause_queue WHERE id = ANY($1::bigint[])

-- capacity_take_entry --
-- Take one task's waiting entry out of the pause queue (force); returns it, or nothing if it does not wait.
DELETE FROM pause_queue
WHERE task_id = $1
RETURNING id, task_id, work_plan_json, reason, priority, paused_at, agent_type,
          required_gpu_vram_mb, required_cpu_cores, required_memory_mb, not_before

-- capacity_request_state --
-- Whether task $1 already waits, whether its dispatch $2 is already in the outbox, and the holds that apply to it now.
SELECT EXISTS (SELECT 1 FROM pause_queue WHERE task_id = $1) AS waiting,
       EXISTS (SELECT 1 FROM outbox WHERE message_id = $2) AS dispatched,
       (SELECT count(*) FROM dispatch_holds h
        WHERE h.hold_key IN ('all', 'task:' || $1::text)
          AND (h.resume_after IS NULL OR h.resume_after > now())) AS holds,
       (SELECT bool_or(h.resume_after IS NULL) FROM dispatch_holds h
        WHERE h.hold_key IN ('all', 'task:' || $1::text)
          AND (h.resume_after IS NULL OR h.resume_after > now())) AS open_ended,
       (SELECT max(h.resume_after) FROM dispatch_holds h
        WHERE h.hold_key IN ('all', 'task:' || $1::text)
          AND (h.resume_after IS NULL OR h.resume_after > now())) AS hold_until

-- capacity_pause_request --
-- Put a dispatch request into the pause queue, once per task; returns the new entry's id.
INSERT INTO pause_queue (
    task_id, work_plan_json, reason, resume_after, priority, agent_type,
    required_gpu_vram_mb, required_cpu_cores, required_memory_mb, not_before, request_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (task_id) DO NOTHING
RETURNING id

-- capacity_insert_history --
-- Append pause-queue transitions (details are JSON text).
INSERT INTO pause_history (task_id, action, reason, trigger, agent_id, event_id, details)
SELECT h.task_id, h.action, h.reason, h.trigger, h.agent_id, h.event_id, h.details::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[])
     AS h(task_id, action, reason, trigger, agent_id, event_id, details)

-- capacity_upsert_hold --
-- Put an operator hold in force (or change its reason and resume_after).
INSERT INTO dispatch_holds (hold_key, scope, task_id, reason, resume_after, event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (hold_key) DO UPDATE SET
    reason = EXCLUDED.reason,
    resume_after = EXCLUDED.resume_after,
    event_id = EXCLUDED.event_id

-- capacity_delete_hold --
-- Lift one operator hold; returns it, or nothing if there was none.
DELETE FROM dispatch_holds
WHERE hold_key = $1
RETURNING hold_key, scope, task_id, reason, resume_after

-- capacity_expired_holds --
-- Lift the holds whose resume_after has passed (skipping holds another transaction holds); returns them.
DELETE FROM dispatch_holds d
USING (SELECT hold_key FROM dispatch_holds
       WHERE resume_after <= now()
       FOR UPDATE SKIP LOCKED) AS x
WHERE d.hold_key = x.hold_key
RETURNING d.hold_key, d.scope, d.task_id, d.reason, d.resume_after

-- capacity_apply_holds --
-- Bring waiting entries (all: $1 NULL, or task $1) in line with the holds in force: reason manual_pause and resume_after while held, else insufficient_capacity; returns the entries whose reason changed.
WITH e AS (
    SELECT pq.id, pq.reason AS old_reason,
           CASE WHEN h.n > 0 THEN 'manual_pause' ELSE 'insufficient_capacity' END AS new_reason,
           CASE WHEN h.n > 0 AND NOT h.open_ended THEN h.until END AS new_resume_after
    FROM pause_queue pq
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, coalesce(bool_or(d.resume_after IS NULL), false) AS open_ended,
               max(d.resume_after) AS until
        FROM dispatch_holds d
        WHERE d.hold_key IN ('all', 'task:' || pq.task_id::text)
          AND (d.resume_after IS NULL OR d.resume_after > now())) AS h
    WHERE ($1::uuid IS NULL OR pq.task_id = $1::uuid)
)
UPDATE pause_queue pq
SET reason = e.new_reason, resume_after = e.new_resume_after
FROM e
WHERE pq.id = e.id
  AND (pq.reason IS DISTINCT FROM e.new_reason OR pq.resume_after IS DISTINCT FROM e.new_resume_after)
RETURNING pq.task_id, pq.agent_type, e.old_reason, pq.reason AS new_reason, pq.resume_after

-- capacity_cancel_finished --
-- Take out (at most $1) waiting entries whose task already finished; returns them.
DELETE FROM pause_queue pq
USING (SELECT p.id FROM pause_queue p
       JOIN tasks t ON t.task_id = p.task_id
       WHERE t.status IN ('completed', 'failed', 'rejected')
       ORDER BY p.id
       LIMIT $1
       FOR UPDATE OF p SKIP LOCKED) AS x
WHERE pq.id = x.id
RETURNING pq.task_id, pq.reason, pq.paused_at

-- capacity_waiting_exists --
-- Whether any entry waits for capacity (the timer's sweep has nothing to do otherwise).
SELECT EXISTS (SELECT 1 FROM pause_queue WHERE reason = 'insufficient_capacity')

-- outbox_insert --
-- Queue messages for the relay, once per message id; returns the ids that were new.
INSERT INTO outbox (message_id, exchange, routing_key, event_type, task_id, body)
SELECT m.message_id, m.exchange, m.routing_key, m.event_type, m.task_id, m.body
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::bytea[])
     AS m(message_id, exchange, routing_key, event_type, task_id, body)
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id

-- outbox_notify --
-- Wake the relays listening on channel $1 (delivered when the transaction commits).
SELECT pg_notify($1, '')

-- outbox_claim --
-- Unsent messages (at most $1), fewest failed attempts first, then oldest: a message the broker keeps returning (no queue bound) never holds back new ones. Locked, skipping rows another relay holds.
SELECT id, message_id, exchange, routing_key, event_type, task_id, body, created_at, attempts
FROM outbox
WHERE sent_at IS NULL
ORDER BY attempts, id
LIMIT $1
FOR UPDATE SKIP LOCKED

-- outbox_mark_sent --
-- Mark messages the broker confirmed.
UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY($1::bigint[])

-- outbox_mark_failed --
-- Record a failed publish attempt; the message stays unsent and is tried again later.
UPDATE outbox SET attempts = attempts + 1, last_error = $2
WHERE id = ANY($1::bigint[])

-- outbox_pending --
-- Messages not yet confirmed by the broker.
SELECT count(*) FROM outbox WHERE sent_at IS NULL

-- outbox_existing_ids --
-- Which of these message ids are already in the outbox.
SELECT message_id FROM outbox WHERE message_id = ANY($1::uuid[])

-- recovery_lock --
-- One recovery pass at a time across processes (transaction-scoped; false: another pass runs).
SELECT pg_try_advisory_xact_lock(hashtext('taskledger.recovery'))

-- recovery_candidates --
-- Executing tasks ($3 NULL: all; else that one) silent past $1 s or in recovery, with their latest recovery step, whether an agent answered since, their last step and work plan; at most $2.
SELECT t.task_id, t.agent_id, t.agent_type, t.request_text, t.plan, t.started_at,
       last.event_time AS last_event_at,
       COALESCE(last.event_time, t.updated_at) AS silent_since,
       extract(epoch FROM now() - COALESCE(last.event_time, t.updated_at))::float8 AS stale_seconds,
       r.attempt, r.action, r.at AS action_at,
       extract(epoch FROM now() - r.at)::float8 AS action_age_s,
       (SELECT count(*) FROM task_recoveries r2
        WHERE r2.task_id = t.task_id AND r2.action = 'requested') AS requests,
       EXISTS (SELECT 1 FROM event_ledger a
               WHERE a.task_id = t.task_id AND a.event_type IN ('task.started', 'task.step')
                 AND a.received_at > r.at) AS answered,
       step.step_number AS last_step_number, step.action AS last_step_action,
       step.status AS last_step_status, step.timestamp AS last_step_at,
       (SELECT d.envelope -> 'data' -> 'work_plan' FROM event_ledger d
        WHERE d.task_id = t.task_id AND d.event_type = 'dispatch.requested'
        ORDER BY d.seq DESC LIMIT 1) AS work_plan
FROM tasks t
LEFT JOIN LATERAL (SELECT max(l.event_time) AS event_time
                   FROM event_ledger l WHERE l.task_id = t.task_id) AS last ON true
LEFT JOIN LATERAL (SELECT r1.attempt, r1.action, r1.at FROM task_recoveries r1
                   WHERE r1.task_id = t.task_id ORDER BY r1.id DESC LIMIT 1) AS r ON true
LEFT JOIN LATERAL (SELECT e.step_number, e.action, e.status, e.timestamp FROM execution_logs e
                   WHERE e.task_id = t.task_id
                   ORDER BY e.timestamp DESC, e.step_number DESC LIMIT 1) AS step ON true
WHERE t.status = 'executing'
  AND ($3::uuid IS NULL OR t.task_id = $3::uuid)
  AND ($3::uuid IS NOT NULL
       OR COALESCE(last.event_time, t.updated_at) < now() - make_interval(secs => $1::float8)
       OR r.action IN ('requested', 'redispatched'))
ORDER BY silent_since, t.task_id
LIMIT $2

-- recovery_record --
-- Append steps of recoveries (details are JSON text).
INSERT INTO task_recoveries (task_id, attempt, action, trigger, message_id, actor, details)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                     $7::text[]::jsonb[])

-- recovery_history --
-- The recovery steps of one task, oldest first.
SELECT r.id, r.attempt, r.action, r.trigger, r.message_id, r.actor, r.at, r.details
FROM task_recoveries r
WHERE r.task_id = $1
ORDER BY r.id

-- recovery_lock_wait --
-- Wait for the recovery lock (an operator's step waits for a running pass).
SELECT pg_advisory_xact_lock(hashtext('taskledger.recovery'))

-- recovery_task_status --
-- The status of one task (None: no such task).
SELECT status FROM tasks WHERE task_id = $1
