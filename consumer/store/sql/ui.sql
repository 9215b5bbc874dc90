-- Reads of the ops console (consumer/ui): the overview's live figures, failures by
-- service and the operator-actions log page by page. The task lists, failure counts,
-- timelines and pause queue come from queries.sql, shared with the API and the CLI.

-- ui_ledger_rate --
-- Ledger rows received in the last $2 seconds, for the event types $1 (one index range per type).
SELECT count(*) AS n
FROM event_ledger l
WHERE l.event_type = ANY($1::text[])
  AND l.received_at >= now() - make_interval(secs => $2::float8)

-- ui_ledger_newest --
-- The newest ledger row's receive time, and the database's clock to measure its age by.
SELECT l.seq, l.received_at, now() AS db_now
FROM event_ledger l
ORDER BY l.seq DESC
LIMIT 1

-- ui_pause_counts --
-- Requests waiting in the pause queue, and operator holds in force now.
SELECT (SELECT count(*) FROM pause_queue) AS waiting,
       (SELECT count(*) FROM dispatch_holds h
        WHERE h.resume_after IS NULL OR h.resume_after > now()) AS holds

-- ui_last_verify --
-- The newest recorded verify run (an operator action named verify...), if any.
SELECT a.id, a.action, a.actor, a.at, a.result
FROM operator_actions a
WHERE a.action LIKE 'verify%'
ORDER BY a.at DESC, a.id DESC
LIMIT 1

-- ui_failure_services --
-- Tasks matching the filter (the caller sets status failed) by service touched and error cause; at most $13 rows.
SELECT s.service, t.error_cause, count(*) AS n
FROM tasks t
CROSS JOIN LATERAL unnest(t.services_touched) AS s(service)
WHERE /*task_filter*/
GROUP BY s.service, t.error_cause
ORDER BY n DESC, s.service, t.error_cause
LIMIT $13

-- ui_operator_actions_page --
-- Operator actions, newest first, after the keyset position ($1 at, $2 id; NULL: from the newest); at most $3.
SELECT a.id, a.action, a.actor, a.at, a.params, a.result, a.event_id
FROM operator_actions a
WHERE ($1::timestamptz IS NULL OR (a.at, a.id) < ($1::timestamptz, $2::bigint))
ORDER BY a.at DESC, a.id DESC
LIMIT $3
