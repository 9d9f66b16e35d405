-- Payouts to a user's WeChat balance (promotion/transfers), cash red packets (normal, group,
-- mini-program), CSV batches of payouts, every call we make to WeChat for them, and the daily
-- limit counters.
--
-- Exactly-once rules the schema carries:
-- * the merchant number (partner_trade_no / mch_billno) and every business field sent to
--   WeChat are fixed when the request is created: a trigger refuses to change them, so a
--   retry can only ever repeat the same number with the same parameters;
-- * `sending` is committed before WeChat is called, with a lease; a row found in `sending`
--   after its lease ran out (crashed worker) is resolved by querying WeChat first;
-- * daily limits are counters updated with a conditional upsert in the request's
--   transaction (`… ON CONFLICT DO UPDATE … WHERE amount + new <= limit`): the row lock taken
--   by the upsert serialises concurrent requests, so no interleaving can exceed a limit.

CREATE SEQUENCE payout_number_seq;
CREATE SEQUENCE redpack_number_seq;

-- A CSV upload of payouts, approved (or rejected) as one.
CREATE TABLE payout_batches (
    id              bigserial PRIMARY KEY,
    mch_id          text NOT NULL,
    appid           text NOT NULL REFERENCES apps(appid),
    created_by      uuid NOT NULL REFERENCES api_clients(id),
    status          text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected')),
    row_count       integer NOT NULL CHECK (row_count > 0),
    total_amount    bigint NOT NULL CHECK (total_amount > 0),
    approved_by     uuid REFERENCES api_clients(id),
    approved_at     timestamptz,
    rejected_by     uuid REFERENCES api_clients(id),
    rejected_at     timestamptz,
    reject_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- maker-checker, also in the database
    CHECK (approved_by IS NULL OR approved_by <> created_by),
    CHECK (rejected_by IS NULL OR rejected_by <> created_by),
    CHECK (status <> 'approved' OR approved_by IS NOT NULL)
);
CREATE TRIGGER payout_batches_touch BEFORE UPDATE ON payout_batches FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- One payout to one user's balance.
--   pending_approval → approved | rejected
--   approved → sending (attempt row committed, then WeChat is called)
--   sending → succeeded | failed | unknown | sending (lease expired: re-claimed, query first)
--   unknown → sending | succeeded | failed | unknown
CREATE TABLE payouts (
    id                bigserial PRIMARY KEY,
    partner_trade_no  text NOT NULL UNIQUE CHECK (partner_trade_no ~ '^[0-9A-Za-z_]{1,32}$'),
    mch_id            text NOT NULL,
    appid             text NOT NULL REFERENCES apps(appid),
    openid            text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    description       text NOT NULL CHECK (length(description) BETWEEN 1 AND 100),
    check_name        text NOT NULL CHECK (check_name IN ('NO_CHECK', 'FORCE_CHECK')),
    re_user_name      text,
    batch_id          bigint REFERENCES payout_batches(id),
    batch_row         integer,
    status            text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected', 'sending', 'unknown', 'succeeded', 'failed')),
    -- the Asia/Shanghai day whose limit counters hold this payout's amount (moved at approval)
    limit_day         date NOT NULL,
    created_by        uuid NOT NULL REFERENCES api_clients(id),
    approved_by       uuid REFERENCES api_clients(id),
    approved_at       timestamptz,
    rejected_by       uuid REFERENCES api_clients(id),
    rejected_at       timestamptz,
    reject_reason     text,
    send_attempts     integer NOT NULL DEFAULT 0,
    lease_until       timestamptz,
    next_attempt_at   timestamptz,
    last_error        text,
    payment_no        text UNIQUE,
    payment_time      timestamptz,
    failure_code      text,
    failure_message   text,
    finished_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (check_name = 'NO_CHECK' OR (re_user_name IS NOT NULL AND length(re_user_name) > 0)),
    CHECK (approved_by IS NULL OR approved_by <> created_by),
    CHECK (rejected_by IS NULL OR rejected_by <> created_by),
    -- payment_no may be missing when a query (gettransferinfo) proved success without a detail_id
    CHECK (status <> 'succeeded' OR payment_time IS NOT NULL),
    CHECK (status <> 'failed' OR failure_code IS NOT NULL),
    CHECK (status <> 'sending' OR lease_until IS NOT NULL),
    CHECK ((batch_id IS NULL) = (batch_row IS NULL))
);
CREATE INDEX payouts_due ON payouts (next_attempt_at) WHERE status IN ('approved', 'unknown');
CREATE INDEX payouts_sending ON payouts (lease_until) WHERE status = 'sending';
CREATE INDEX payouts_openid ON payouts (openid);
CREATE INDEX payouts_created ON payouts (created_at);
CREATE INDEX payouts_batch ON payouts (batch_id) WHERE batch_id IS NOT NULL;
CREATE TRIGGER payouts_touch BEFORE UPDATE ON payouts FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE FUNCTION minipay_payout_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.partner_trade_no, NEW.mch_id, NEW.appid, NEW.openid, NEW.amount, NEW.description,
        NEW.check_name, NEW.re_user_name, NEW.created_by)
       IS DISTINCT FROM
       (OLD.partner_trade_no, OLD.mch_id, OLD.appid, OLD.openid, OLD.amount, OLD.description,
        OLD.check_name, OLD.re_user_name, OLD.created_by) THEN
        RAISE EXCEPTION 'payout %: the merchant number and the parameters sent to WeChat never change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payouts_fixed BEFORE UPDATE ON payouts FOR EACH ROW EXECUTE FUNCTION minipay_payout_fixed();

-- One cash red packet. States follow gethbinfo once sent:
--   pending_approval → approved | rejected;  approved → sending
--   sending | unknown → sent | received | refunded | failed | unknown | sending
--   sent → received | refunded   (REFUND: unclaimed for 24 h, money back to the merchant)
CREATE TABLE redpacks (
    id                bigserial PRIMARY KEY,
    mch_billno        text NOT NULL UNIQUE CHECK (mch_billno ~ '^[0-9A-Za-z]{1,28}$'),
    mch_id            text NOT NULL,
    appid             text NOT NULL REFERENCES apps(appid),
    kind              text NOT NULL CHECK (kind IN ('normal', 'group', 'mini_program')),
    re_openid         text NOT NULL,
    total_amount      bigint NOT NULL CHECK (total_amount > 0),
    total_num         integer NOT NULL CHECK (total_num >= 1),
    send_name         text NOT NULL CHECK (length(send_name) BETWEEN 1 AND 32),
    wishing           text NOT NULL CHECK (length(wishing) BETWEEN 1 AND 128),
    act_name          text NOT NULL CHECK (length(act_name) BETWEEN 1 AND 32),
    remark            text NOT NULL CHECK (length(remark) BETWEEN 1 AND 256),
    scene_id          text CHECK (scene_id ~ '^PRODUCT_[1-8]$'),
    client_ip         text,
    status            text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected', 'sending', 'unknown', 'sent', 'received', 'refunded', 'failed')),
    limit_day         date NOT NULL,
    created_by        uuid NOT NULL REFERENCES api_clients(id),
    approved_by       uuid REFERENCES api_clients(id),
    approved_at       timestamptz,
    rejected_by       uuid REFERENCES api_clients(id),
    rejected_at       timestamptz,
    reject_reason     text,
    send_attempts     integer NOT NULL DEFAULT 0,
    lease_until       timestamptz,
    next_attempt_at   timestamptz,
    last_error        text,
    send_listid       text UNIQUE,
    sent_at           timestamptz,
    -- mini-program packets: sendminiprogramhb's package, turned into wx.sendBizRedPacket
    -- parameters on request (not a secret: it only opens this packet for its receiver)
    package           text,
    received_at       timestamptz,
    refunded_at       timestamptz,
    refund_amount     bigint CHECK (refund_amount > 0),
    wechat_status     text,
    failure_code      text,
    failure_message   text,
    finished_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'group') = (total_num >= 3)),
    CHECK (kind = 'group' OR total_num = 1),
    CHECK (kind <> 'normal' OR client_ip IS NOT NULL),
    CHECK (approved_by IS NULL OR approved_by <> created_by),
    CHECK (rejected_by IS NULL OR rejected_by <> created_by),
    CHECK (status NOT IN ('sent', 'received', 'refunded') OR sent_at IS NOT NULL),
    CHECK (status <> 'failed' OR failure_code IS NOT NULL),
    CHECK (status <> 'sending' OR lease_until IS NOT NULL),
    CHECK (refund_amount IS NULL OR refund_amount <= total_amount)
);
CREATE INDEX redpacks_due ON redpacks (next_attempt_at) WHERE status IN ('approved', 'unknown', 'sent');
CREATE INDEX redpacks_sending ON redpacks (lease_until) WHERE status = 'sending';
CREATE INDEX redpacks_openid ON redpacks (re_openid);
CREATE INDEX redpacks_created ON redpacks (created_at);
CREATE TRIGGER redpacks_touch BEFORE UPDATE ON redpacks FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE FUNCTION minipay_redpack_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.mch_billno, NEW.mch_id, NEW.appid, NEW.kind, NEW.re_openid, NEW.total_amount, NEW.total_num,
        NEW.send_name, NEW.wishing, NEW.act_name, NEW.remark, NEW.scene_id, NEW.client_ip, NEW.created_by)
       IS DISTINCT FROM
       (OLD.mch_billno, OLD.mch_id, OLD.appid, OLD.kind, OLD.re_openid, OLD.total_amount, OLD.total_num,
        OLD.send_name, OLD.wishing, OLD.act_name, OLD.remark, OLD.scene_id, OLD.client_ip, OLD.created_by) THEN
        RAISE EXCEPTION 'red packet %: the merchant number and the parameters sent to WeChat never change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER redpacks_fixed BEFORE UPDATE ON redpacks FOR EACH ROW EXECUTE FUNCTION minipay_redpack_fixed();

-- Every call to WeChat for a payout or a red packet, written (outcome 'pending') and
-- committed before the call, finished after it. A 'pending' row that stays pending is the
-- trace of a call whose answer never reached the database (crash, kill).
CREATE TABLE payout_attempts (
    id              bigserial PRIMARY KEY,
    subject_type    text NOT NULL CHECK (subject_type IN ('payout', 'redpack')),
    subject_id      bigint NOT NULL,
    merchant_no     text NOT NULL,
    action          text NOT NULL CHECK (action IN ('send', 'query')),
    endpoint        text NOT NULL,
    -- the business parameters sent (no nonce, no sign); identical on every send of a subject
    request_params  jsonb NOT NULL,
    actor           text NOT NULL,
    outcome         text NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'success', 'failed', 'unknown')),
    code            text,
    message         text,
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payout_attempts_subject ON payout_attempts (subject_type, subject_id);
CREATE TRIGGER payout_attempts_touch BEFORE UPDATE ON payout_attempts FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- Daily limit counters per product ('payout' or 'redpack'), day (Asia/Shanghai, as WeChat
-- counts) and merchant, and per user. A request holds its amount here from creation; a
-- rejection or a final failure gives it back.
CREATE TABLE payout_merchant_daily (
    product     text NOT NULL CHECK (product IN ('payout', 'redpack')),
    mch_id      text NOT NULL,
    day         date NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    count       integer NOT NULL CHECK (count >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, mch_id, day)
);
CREATE TRIGGER payout_merchant_daily_touch BEFORE UPDATE ON payout_merchant_daily FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

CREATE TABLE payout_openid_daily (
    product     text NOT NULL CHECK (product IN ('payout', 'redpack')),
    mch_id      text NOT NULL,
    day         date NOT NULL,
    openid      text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    count       integer NOT NULL CHECK (count >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, mch_id, day, openid)
);
CREATE TRIGGER payout_openid_daily_touch BEFORE UPDATE ON payout_openid_daily FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();
