-- Notifications from WeChat and what they left behind: the raw genuine notifications, the
-- forensic record of rejected bodies, and settlement anomalies (genuine facts that disagree
-- with our records) for operators and reconciliation.

-- Every genuine (signature-verified or decrypted-with-our-key) notification, kept as
-- received, written in the same transaction as its effect. Identical redeliveries share one
-- row (keyed by the body's SHA-256) and only bump `deliveries`, so WeChat's 15 retries or a
-- duplicate storm cannot grow the table.
CREATE TABLE wxpay_notifications (
    id                bigserial PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('payment', 'refund')),
    mch_id            text NOT NULL,
    appid             text,
    -- out_trade_no for payments, out_refund_no for refunds (empty when WeChat sent none)
    reference         text NOT NULL,
    body_sha256       text NOT NULL,
    -- the body as received (UTF-8 checked before this point; capped at the 64 KiB body limit)
    body              text NOT NULL,
    -- the fields we acted on: the payment fields, or the decrypted req_info of a refund
    fields            jsonb NOT NULL,
    -- what the settlement did the first time: applied, already_applied, mismatch,
    -- unknown_order, unknown_refund, not_paid
    outcome           text NOT NULL,
    deliveries        integer NOT NULL DEFAULT 1,
    last_delivered_at timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, body_sha256)
);
CREATE INDEX wxpay_notifications_reference ON wxpay_notifications (kind, reference);
CREATE INDEX wxpay_notifications_created ON wxpay_notifications (created_at);
CREATE TRIGGER wxpay_notifications_touch BEFORE UPDATE ON wxpay_notifications
    FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- Bodies we refused (bad signature, unknown merchant, unparsable, DOCTYPE, non-UTF-8,
-- oversize). Anyone on the internet can write here, so the table is bounded twice: each row
-- keeps at most the first 4 KiB of the body (as bytes: it may not be UTF-8), and the notify
-- service prunes it to its newest N rows (`notifications::prune_rejected`, N configurable,
-- default 10,000, i.e. at most about 40 MiB).
CREATE TABLE wxpay_rejected_notifications (
    id           bigserial PRIMARY KEY,
    endpoint     text NOT NULL CHECK (endpoint IN ('pay', 'refund')),
    -- stable code: too_large, not_utf8, doctype, malformed, unknown_merchant, bad_signature, ...
    reason       text NOT NULL,
    detail       text NOT NULL DEFAULT '' CHECK (length(detail) <= 512),
    remote_addr  text,
    body_size    bigint NOT NULL CHECK (body_size >= 0),
    body_sha256  text NOT NULL,
    body_head    bytea NOT NULL CHECK (octet_length(body_head) <= 4096),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wxpay_rejected_notifications_created ON wxpay_rejected_notifications (created_at);

-- A genuine fact from WeChat (notification, query, bill) that we could not apply because it
-- disagrees with our records, or that we applied but an operator must look at (a payment
-- after we closed the order, a refund WeChat could not deliver). One row per distinct
-- problem (`dedupe_key`); repeats bump `occurrences`.
CREATE TABLE settlement_anomalies (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN (
                        'unknown_order', 'order_mismatch', 'duplicate_payment', 'paid_after_close',
                        'unknown_refund', 'refund_mismatch', 'refund_conflict', 'refund_abnormal')),
    -- out_trade_no or out_refund_no as WeChat reported it
    reference       text NOT NULL,
    mch_id          text NOT NULL,
    -- notification, orderquery, refundquery, reconciliation, operator
    source          text NOT NULL,
    notification_id bigint REFERENCES wxpay_notifications(id),
    reason          text NOT NULL,
    -- what WeChat said and what we hold (openids masked)
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key      text NOT NULL UNIQUE,
    occurrences     integer NOT NULL DEFAULT 1,
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_at     timestamptz,
    resolved_by     text,
    resolution      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'resolved' OR (resolved_at IS NOT NULL AND resolved_by IS NOT NULL))
);
CREATE INDEX settlement_anomalies_open ON settlement_anomalies (created_at) WHERE status = 'open';
CREATE INDEX settlement_anomalies_reference ON settlement_anomalies (reference);
CREATE TRIGGER settlement_anomalies_touch BEFORE UPDATE ON settlement_anomalies
    FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();
