-- ensure_ledger_partitions --
-- Create the partitions of event_ledger and execution_logs for this UTC month and $1 more (013; as the owner): one row per partition created, with the rows it took over from the DEFAULT partition.
SELECT partition_name, moved_rows FROM ensure_ledger_partitions($1::int)

-- partitions_lock_timeout --
-- Wait at most this long for the locks of creating a partition (writers queue behind it).
SELECT set_config('lock_timeout', $1, true)

-- ledger_partitions --
-- The partitions of event_ledger and execution_logs with their bounds, rows (estimate) and total size on disk (013), oldest first.
SELECT p.relname AS parent, c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
       greatest(c.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(c.oid) AS total_bytes
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_class AS p ON p.oid = i.inhparent
WHERE i.inhparent IN (to_regclass('event_ledger'), to_regclass('execution_logs'))
ORDER BY p.relname, c.relname
