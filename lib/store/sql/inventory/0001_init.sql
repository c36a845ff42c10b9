-- Inventory database: stock per SKU, reservations per order, the outbox and processed events.
CREATE TABLE stock (
	sku        text PRIMARY KEY,
	available  int NOT NULL CHECK (available >= 0),
	reserved   int NOT NULL DEFAULT 0 CHECK (reserved >= 0),
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
	order_id   uuid NOT NULL,
	sku        text NOT NULL REFERENCES stock (sku),
	qty        int NOT NULL CHECK (qty > 0),
	status     text NOT NULL DEFAULT 'RESERVED' CHECK (status IN ('RESERVED','RELEASED')),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (order_id, sku)
);

CREATE TABLE outbox (
	id         bigserial PRIMARY KEY,
	topic      text NOT NULL,
	key        text NOT NULL,
	event_id   uuid NOT NULL UNIQUE,
	type       text NOT NULL,
	traceparent text,
	payload    text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

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
