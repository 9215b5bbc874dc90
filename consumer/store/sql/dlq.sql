-- dlq_record_action --
-- Record one dead-letter operation (replay, export, purge, import): who, filters, counts.
INSERT INTO operator_actions (action, actor, params, result)
VALUES ($1, $2, $3, $4)
RETURNING id, at
