-- Relays running side by side take only the oldest row of each key (see ot_outbox_relay).
CREATE INDEX outbox_key_id ON outbox (key, id);
