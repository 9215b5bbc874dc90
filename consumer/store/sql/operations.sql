-- operator_record_action --
-- Record one operator action (pause, resume, force, dlq.*): who, parameters, outcome, event.
INSERT INTO operator_actions (action, actor, params, result, event_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, at
