-- Core schema: apps, users, API clients, idempotency, orders, refunds, the ledger,
-- webhook outbox and the audit log. Later migrations add notifications, payouts, red
-- packets and reconciliation. Money is bigint fen; every table has created_at/updated_at.

CREATE FUNCTION minipay_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- Rows that are evidence (ledger entries, audit lines) are never changed or removed.
CREATE FUNCTION minipay_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- Apps and merchants as configured (the config file is the source of truth; rows are
-- upserted at start-up so foreign keys and reports can name them).
CREATE TABLE apps (
    appid       text PRIMARY KEY,
    mch_id      text NOT NULL,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER apps_touch BEFORE UPDATE ON apps FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    appid       text NOT NULL REFERENCES apps(appid),
    openid      text NOT NULL,
    unionid     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (appid, openid)
);
CREATE INDEX users_unionid ON users (unionid) WHERE unionid IS NOT NULL;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- API clients: keys are stored as sha256 hex, never in clear.
CREATE TABLE api_clients (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('client', 'finance', 'approver', 'viewer', 'admin')),
    key_hash        text NOT NULL UNIQUE,
    key_prefix      text NOT NULL,
    webhook_url     text,
    webhook_secret  text,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER api_clients_touch BEFORE UPDATE ON api_clients FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- Idempotency-Key: the first response is stored and replayed; a different body is refused.
CREATE TABLE idempotency_keys (
    client_id       uuid NOT NULL REFERENCES api_clients(id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);
CREATE TRIGGER idempotency_keys_touch BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE TABLE orders (
    id              bigserial PRIMARY KEY,
    out_trade_no    text NOT NULL UNIQUE CHECK (out_trade_no ~ '^[0-9A-Za-z_|*-]{1,32}$'),
    appid           text NOT NULL REFERENCES apps(appid),
    mch_id          text NOT NULL,
    client_id       uuid REFERENCES api_clients(id),
    openid          text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    description     text NOT NULL,
    attach          text,
    status          text NOT NULL CHECK (status IN ('created', 'prepaid', 'paid', 'closed', 'failed')),
    sign_type       text NOT NULL DEFAULT 'MD5' CHECK (sign_type IN ('MD5', 'HMAC-SHA256')),
    prepay_id       text,
    prepay_at       timestamptz,
    expires_at      timestamptz NOT NULL,
    transaction_id  text UNIQUE,
    paid_at         timestamptz,
    bank_type       text,
    cash_fee        bigint CHECK (cash_fee >= 0),
    closed_at       timestamptz,
    -- a payment that arrived after we closed the order locally: paid wins, an operator looks
    paid_after_close boolean NOT NULL DEFAULT false,
    refunded_amount bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    last_error      text,
    queried_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'paid' OR (transaction_id IS NOT NULL AND paid_at IS NOT NULL))
);
CREATE INDEX orders_open_by_expiry ON orders (expires_at) WHERE status IN ('created', 'prepaid');
CREATE INDEX orders_paid_at ON orders (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX orders_openid ON orders (openid);
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE TABLE refunds (
    id              bigserial PRIMARY KEY,
    out_refund_no   text NOT NULL UNIQUE CHECK (out_refund_no ~ '^[0-9A-Za-z_|*@-]{1,64}$'),
    order_id        bigint NOT NULL REFERENCES orders(id),
    client_id       uuid REFERENCES api_clients(id),
    amount          bigint NOT NULL CHECK (amount > 0),
    reason          text,
    -- pending: committed, WeChat not yet asked; processing: accepted by WeChat;
    -- unknown: the call may have happened (retry with the same out_refund_no or query)
    status          text NOT NULL CHECK (status IN ('pending', 'processing', 'unknown', 'succeeded', 'failed', 'closed', 'abnormal')),
    refund_id       text,
    failure_code    text,
    failure_message text,
    succeeded_at    timestamptz,
    refund_recv_account text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order ON refunds (order_id);
CREATE INDEX refunds_open ON refunds (updated_at) WHERE status IN ('pending', 'processing', 'unknown');
CREATE TRIGGER refunds_touch BEFORE UPDATE ON refunds FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- The double-entry ledger. A transaction groups entries whose amounts sum to zero; it is
-- identified by (kind, reference), which makes every posting idempotent: posting the same
-- movement twice is refused by the unique key.
CREATE TABLE ledger_transactions (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    reference   text NOT NULL,
    mch_id      text NOT NULL,
    occurred_at timestamptz NOT NULL,
    memo        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, reference)
);
CREATE INDEX ledger_transactions_occurred ON ledger_transactions (mch_id, occurred_at);

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  bigint NOT NULL REFERENCES ledger_transactions(id),
    account         text NOT NULL,
    amount          bigint NOT NULL CHECK (amount <> 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_txn ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account);

CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION minipay_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION minipay_append_only();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION minipay_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION minipay_append_only();

-- Balanced at commit: a deferred check per transaction, so entries can be inserted one by
-- one inside the database transaction but an unbalanced posting can never commit.
CREATE FUNCTION minipay_ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    n integer;
BEGIN
    SELECT coalesce(sum(amount), 0), count(*) INTO total, n
      FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 OR n < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % entries)', NEW.transaction_id, total, n
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION minipay_ledger_balanced();

-- Webhooks to client backends: written in the same transaction as the state change,
-- delivered by the worker.
CREATE TABLE webhook_outbox (
    id              bigserial PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES api_clients(id),
    event_id        uuid NOT NULL UNIQUE,
    event_type      text NOT NULL,
    -- one event per (type, subject): re-applying a state change queues nothing new
    subject         text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_type, subject)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE TRIGGER webhook_outbox_touch BEFORE UPDATE ON webhook_outbox FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES webhook_outbox(id),
    http_status  integer,
    error        text,
    duration_ms  integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id);

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    actor         text NOT NULL,
    action        text NOT NULL,
    subject_type  text NOT NULL,
    subject_id    text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_subject ON audit_log (subject_type, subject_id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION minipay_append_only();
