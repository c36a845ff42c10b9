-- The outbox is a queue: every row is deleted soon after it is inserted. Vacuum it after a
-- thousand dead rows, whatever its size, and without the cost delay, so scans of it never walk
-- a long tail of rows already relayed.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0);
