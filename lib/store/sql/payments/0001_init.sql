-- Payments database: one payment per order with the processor, every change of it, the outbox
-- and processed events. Amounts are in the currency's minor unit (cents), as the processor's.
CREATE TABLE payments (
	order_id     uuid PRIMARY KEY,
	status       text NOT NULL CHECK (status IN ('PENDING','AUTHORIZED','DECLINED','UNKNOWN',
	                                             'CAPTURED','VOIDED','REFUNDED')),
	amount       bigint NOT NULL CHECK (amount >= 0),
	currency     text NOT NULL,
	source       text NOT NULL,          -- the payment source the order named (a processor token)
	charge_id    text,                   -- the processor's charge, once it made one
	decline_code text,                   -- the processor's, for DECLINED
	captured     bigint NOT NULL DEFAULT 0 CHECK (captured >= 0),
	refunded     bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
	created_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now()
);
-- What a reconciliation walks: payments whose outcome the processor has not told yet.
CREATE INDEX payments_unknown ON payments (updated_at) WHERE status = 'UNKNOWN';

-- Every change of a payment, in order: what support staff and the reconciliation read.
CREATE TABLE payment_changes (
	id         bigserial PRIMARY KEY,
	order_id   uuid NOT NULL REFERENCES payments (order_id),
	status     text NOT NULL,
	amount     bigint NOT NULL DEFAULT 0,
	detail     text,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_changes_order ON payment_changes (order_id, id);

CREATE TABLE outbox (
	id          bigserial PRIMARY KEY,
	topic       text NOT NULL,
	key         text NOT NULL,
	event_id    uuid NOT NULL UNIQUE,
	type        text NOT NULL,
	traceparent text,
	payload     text NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
-- Relays running side by side take only the oldest row of each key (see ot_outbox_relay).
CREATE INDEX outbox_key_id ON outbox (key, id);
-- A queue: vacuumed after a thousand dead rows, whatever its size (see the orders database's).
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0);

CREATE TABLE processed_events (
	consumer     text NOT NULL,
	event_id     uuid NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, event_id)
);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('ot_outbox', TG_TABLE_NAME);
	RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
	FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The publication a relay in --mode cdc streams the outbox through (see the orders database's).
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'ot_outbox') THEN
		CREATE PUBLICATION ot_outbox FOR TABLE outbox WITH (publish = 'insert');
	END IF;
END $$;
