-- Orders database: orders, their lines, the outbox, processed events and idempotency keys.
CREATE TABLE orders (
	id          uuid PRIMARY KEY,
	customer_id text NOT NULL,
	address     text NOT NULL,
	status      text NOT NULL DEFAULT 'PENDING' CHECK (status IN
	            ('PENDING','CONFIRMED','REJECTED','PREPARING','IN_TRANSIT','DELIVERED','CANCELLED')),
	version     bigint NOT NULL DEFAULT 1,
	lat         double precision,
	lon         double precision,
	eta         text,
	reason      text,
	created_at  timestamptz NOT NULL DEFAULT now(),
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_active ON orders (status)
	WHERE status NOT IN ('DELIVERED','REJECTED','CANCELLED');

CREATE TABLE order_items (
	order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
	line     int NOT NULL,
	sku      text NOT NULL,
	qty      int NOT NULL CHECK (qty > 0),
	PRIMARY KEY (order_id, line)
);

CREATE TABLE idempotency_keys (
	request_id text PRIMARY KEY,
	order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
	created_at timestamptz NOT NULL DEFAULT now()
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
