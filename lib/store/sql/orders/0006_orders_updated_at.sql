-- ot-cache verify --since reads the orders changed in the last minutes, as often as every minute:
-- an index on the time of the last change keeps that a range scan whatever the table's size.
CREATE INDEX orders_updated_at ON orders (updated_at);
