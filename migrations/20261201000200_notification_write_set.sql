-- Fewer index entries per payment (docs/PERFORMANCE.md, "2026-12-01 (later)"). Every
-- payment writes one ledger transaction with two entries and one notification row; the
-- indexes below cost an index insertion each per row and served no query well.

-- ledger_entries: the primary key leads with the transaction, so it also serves every
-- lookup by transaction (the balance trigger, reconciliation's joins, the ledger tests) and
-- the separate index on transaction_id goes. `id` stays unique: it comes from its sequence
-- and no row is ever updated. Nothing references ledger_entries(id).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey;
ALTER TABLE ledger_entries ADD PRIMARY KEY (transaction_id, id);
DROP INDEX ledger_entries_txn;

-- ledger_entries_account indexed a column with a handful of distinct values (a few
-- accounts per merchant): an account's balance sums a large share of the table, which the
-- planner reads sequentially anyway (`ledger::balance`), so the index was pure write cost.
DROP INDEX ledger_entries_account;

-- wxpay_notifications arrive in time order, so a BRIN index answers "notifications between
-- t1 and t2" (operators, retention) at a fraction of a B-tree's upkeep: it summarises
-- block ranges instead of holding an entry per row.
DROP INDEX wxpay_notifications_created;
CREATE INDEX wxpay_notifications_created ON wxpay_notifications USING brin (created_at) WITH (autosummarize = on);

-- A payment notification's fields are exactly its body's (minus `sign`), so they are no
-- longer stored twice: `fields` is NULL for payments and holds the decrypted req_info for
-- refunds, the one thing the body does not show in clear.
ALTER TABLE wxpay_notifications ALTER COLUMN fields DROP NOT NULL;
ALTER TABLE wxpay_notifications ADD CONSTRAINT wxpay_notifications_refund_fields
    CHECK (kind = 'payment' OR fields IS NOT NULL) NOT VALID;
ALTER TABLE wxpay_notifications VALIDATE CONSTRAINT wxpay_notifications_refund_fields;
