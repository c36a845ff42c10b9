-- The catalogue's price of each SKU, in the currency's minor unit (cents): an order's amount is
-- the sum of its lines' prices, taken when its stock is reserved.
ALTER TABLE stock ADD COLUMN price bigint NOT NULL DEFAULT 0 CHECK (price >= 0);
