-- Compensation: a reservation is released when its order is cancelled or it expires unconfirmed.
ALTER TABLE reservations
	ADD COLUMN confirmed boolean NOT NULL DEFAULT false,
	ADD COLUMN released_at timestamptz,
	ADD COLUMN release_reason text;
CREATE INDEX reservations_open ON reservations (created_at)
	WHERE status = 'RESERVED' AND NOT confirmed;
