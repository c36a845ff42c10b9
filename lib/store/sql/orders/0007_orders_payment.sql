-- An order paid by card carries its payment as the payment events (payments.events) left it:
-- {"status","amount","currency","decline_code"?}, NULL for an order paid another way or not yet.
-- Readers get it with the order's status, so the cache and a rebuild from the database agree.
ALTER TABLE orders ADD COLUMN payment jsonb CHECK (payment IS NULL OR payment->>'status' IN
	('AUTHORIZED','DECLINED','CAPTURED','VOIDED','REFUNDED'));
