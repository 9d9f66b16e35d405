-- Issue 18: the platform services of a mini-program backend — the access token held
-- centrally, UnionID lookups, phone numbers, customer-service messages — and the
-- `internal` role that may read the access token.

-- The `internal` role: services of ours that call WeChat APIs themselves and need the one
-- shared access token (GET /v1/wechat/access-token).
ALTER TABLE api_clients DROP CONSTRAINT api_clients_role_check;
ALTER TABLE api_clients ADD CONSTRAINT api_clients_role_check
    CHECK (role IN ('client', 'finance', 'approver', 'viewer', 'admin', 'internal'));

-- One stable access token per app, shared by every replica. Written only under the app's
-- advisory lock (see minipay_store::tokens). The token is a 2-hour credential; the row is
-- as sensitive as the database itself.
CREATE TABLE wechat_access_tokens (
    appid       text PRIMARY KEY REFERENCES apps(appid),
    token       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    fetched_at  timestamptz NOT NULL,
    -- how many times WeChat was asked for this app (normal mode), for the curious operator
    fetches     bigint NOT NULL DEFAULT 1 CHECK (fetches > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER wechat_access_tokens_touch BEFORE UPDATE ON wechat_access_tokens
    FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- session_key, encrypted at rest (AES-256-GCM: nonce ‖ ciphertext ‖ tag) with the key in
-- [platform] session_key_encryption_key; never returned by the API. The phone number is
-- cached per user once WeChat gave it.
ALTER TABLE users
    ADD COLUMN session_key_enc     bytea,
    ADD COLUMN session_key_at      timestamptz,
    ADD COLUMN phone_number        text,
    ADD COLUMN phone_pure_number   text,
    ADD COLUMN phone_country_code  text,
    ADD COLUMN phone_at            timestamptz;

-- getPhoneNumber codes: single use. A code is recorded before WeChat is asked; once WeChat
-- gave a definite answer (success or an errcode) the code is never sent again. `unknown`
-- (timeout, busy) may be retried. Successes are what WeChat bills.
CREATE TABLE phone_number_requests (
    id          bigserial PRIMARY KEY,
    appid       text NOT NULL REFERENCES apps(appid),
    code_hash   text NOT NULL,
    openid      text,
    status      text NOT NULL CHECK (status IN ('pending', 'success', 'failed', 'unknown')),
    errcode     bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (appid, code_hash)
);
CREATE INDEX phone_number_requests_billing ON phone_number_requests (appid, created_at) WHERE status = 'success';
CREATE TRIGGER phone_number_requests_touch BEFORE UPDATE ON phone_number_requests
    FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- Customer-service messages both ways. Received ones are deduplicated by WeChat's key
-- (MsgId, or FromUserName + CreateTime for events): WeChat pushes again when we are slow.
CREATE TABLE cs_messages (
    id           bigserial PRIMARY KEY,
    appid        text NOT NULL REFERENCES apps(appid),
    direction    text NOT NULL CHECK (direction IN ('in', 'out')),
    openid       text NOT NULL,
    dedupe_key   text,
    msg_type     text NOT NULL,
    event        text,
    -- CreateTime of a received message (WeChat's clock)
    wechat_time  timestamptz,
    safe_mode    boolean,
    body         jsonb NOT NULL,
    -- in: received; out: sent | failed
    status       text NOT NULL CHECK (status IN ('received', 'sent', 'failed')),
    errcode      bigint,
    errmsg       text,
    sent_by      uuid REFERENCES api_clients(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((direction = 'in') = (dedupe_key IS NOT NULL))
);
CREATE UNIQUE INDEX cs_messages_dedupe ON cs_messages (appid, dedupe_key) WHERE direction = 'in';
CREATE INDEX cs_messages_user ON cs_messages (appid, openid, created_at);
CREATE TRIGGER cs_messages_touch BEFORE UPDATE ON cs_messages
    FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();
