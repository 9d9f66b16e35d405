-- Marking an order prepaid (created → prepaid, right after unifiedorder) changes no indexed
-- column, so Postgres can do it as a HOT update: the new row version goes on the same page
-- and none of the order's six indexes gets a new entry. Two things prevented that:
--   * the expiry index's predicate named `status`, and a column in a predicate counts as
--     indexed even when the row stays inside the predicate;
--   * pages were filled to 100% by inserts, leaving no room on the page for the new version.
-- `open` is derived from `status` (it cannot disagree with it) and does not change between
-- created and prepaid; Postgres compares values, so that update leaves the index alone.
ALTER TABLE orders ADD COLUMN open boolean GENERATED ALWAYS AS (status IN ('created', 'prepaid')) STORED;
DROP INDEX orders_open_by_expiry;
CREATE INDEX orders_open_by_expiry ON orders (expires_at) WHERE open;
-- Room for one more version of each row on its page (applies to pages written from now on).
ALTER TABLE orders SET (fillfactor = 80);
-- The same for the idempotency key of each request: claimed by an INSERT, then its stored
-- response written by an UPDATE of columns no index covers, which stays on the page (HOT)
-- when the page has room for the second version.
ALTER TABLE idempotency_keys SET (fillfactor = 40);
