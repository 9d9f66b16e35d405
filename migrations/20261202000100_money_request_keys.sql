-- Issue 22: the paths that could pay a user twice.
--
-- 1. The Idempotency-Key of a request that creates a money movement names that movement
--    forever. Before, a keyed request whose response was never stored (a crash, a 5xx) was
--    run again after the takeover window and took a *new* number from the sequence: a
--    second payout. Now the key is stored on the row it created, unique per creating API
--    key, in the same transaction as the row; a retry finds the row and returns it.
ALTER TABLE payouts ADD COLUMN request_key text CHECK (length(request_key) BETWEEN 1 AND 255);
ALTER TABLE redpacks ADD COLUMN request_key text CHECK (length(request_key) BETWEEN 1 AND 255);
ALTER TABLE payout_batches ADD COLUMN request_key text CHECK (length(request_key) BETWEEN 1 AND 255);
CREATE UNIQUE INDEX payouts_request_key ON payouts (created_by, request_key) WHERE request_key IS NOT NULL;
CREATE UNIQUE INDEX redpacks_request_key ON redpacks (created_by, request_key) WHERE request_key IS NOT NULL;
CREATE UNIQUE INDEX payout_batches_request_key ON payout_batches (created_by, request_key)
    WHERE request_key IS NOT NULL;

-- 2. The per-maker daily ceiling of auto-approved requests sums a maker's requests of one
--    Asia/Shanghai day: index it.
CREATE INDEX payouts_maker_day ON payouts (created_by, limit_day);
CREATE INDEX redpacks_maker_day ON redpacks (created_by, limit_day);

-- 3. A payout or red packet we held `failed` that WeChat later reports paid (a late answer
--    of a call whose lease ran out, a query after a refused re-send) is recorded as paid,
--    never dropped, and raised for an operator under this kind.
ALTER TABLE settlement_anomalies DROP CONSTRAINT settlement_anomalies_kind_check;
ALTER TABLE settlement_anomalies ADD CONSTRAINT settlement_anomalies_kind_check CHECK (kind IN (
    'unknown_order', 'order_mismatch', 'duplicate_payment', 'paid_after_close',
    'unknown_refund', 'refund_mismatch', 'refund_conflict', 'refund_abnormal',
    'paid_after_failed'));
