-- Refunds that support staff ask for (ordertrack.Payment/Refund), one row per request: the
-- request is taken here with its event in the outbox, and the Payment Service makes it with the
-- processor when the event comes back to it (through the saga, never around it). request_id is
-- the caller's idempotency key: the same request twice is one refund.
CREATE TABLE refund_requests (
	request_id text PRIMARY KEY,
	order_id   uuid NOT NULL REFERENCES payments (order_id),
	amount     bigint NOT NULL CHECK (amount > 0),
	reason     text NOT NULL,
	status     text NOT NULL DEFAULT 'REQUESTED' CHECK (status IN ('REQUESTED', 'REFUNDED', 'FAILED')),
	detail     text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_requests_order ON refund_requests (order_id, created_at);
