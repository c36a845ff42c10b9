-- An idempotency key belongs to the client that sent it (scope: a hash of its API key, '' for
-- ot-place) and to the request it first came with (fingerprint: SHA-256 of the canonical body),
-- so another client's key never answers with this order and a changed body is refused.
-- Rows from before have no fingerprint: they match any body.
ALTER TABLE idempotency_keys ADD COLUMN scope text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN fingerprint text;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (scope, request_id);
