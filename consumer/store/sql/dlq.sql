-- The dead-letter tools (consumer/dlq).

-- dlq_last_replay --
-- The newest recorded dead-letter replay: a re-run after an interruption skips what it bounced.
SELECT result FROM operator_actions WHERE action = 'dlq.replay' ORDER BY id DESC LIMIT 1
