-- The publication a relay in --mode cdc streams the outbox through: created here, by the role
-- that owns the table, so the relay needs only REPLICATION (for its slot) and DML, never DDL.
-- A relay of an earlier release may have created it already; publishing costs nothing until a
-- slot reads it.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'ot_outbox') THEN
		CREATE PUBLICATION ot_outbox FOR TABLE outbox WITH (publish = 'insert');
	END IF;
END $$;
