-- Reconciliation: the bills as WeChat sent them (raw bytes + sha256), their rows loaded with
-- COPY, the runs (every run is kept), the discrepancies each run found, and the cross-day
-- items held until a neighbouring day's bill can settle them. Money is bigint fen; fees are
-- bigint thousandths of a fen ("millifen"), because bills state fees with five decimals.

-- One downloaded (or hand-supplied) bill. The same bytes fetched twice are one file.
CREATE TABLE recon_bill_files (
    id          bigserial PRIMARY KEY,
    mch_id      text NOT NULL,
    bill_date   date NOT NULL,
    bill_type   text NOT NULL CHECK (bill_type IN ('trade_all', 'fundflow_basic')),
    source      text NOT NULL CHECK (source IN ('download', 'file', 'generated')),
    gzip        boolean NOT NULL,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    -- NULL until the rows are loaded; a 'No Bill Exist' day has no file at all
    row_count   bigint,
    summary     jsonb,
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mch_id, bill_date, bill_type, sha256)
);
CREATE TRIGGER recon_bill_files_touch BEFORE UPDATE ON recon_bill_files FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- The raw bytes, exactly as received (gzip stays gzip), in chunks so neither writer nor reader
-- ever needs the whole bill in memory. Evidence: never changed.
CREATE TABLE recon_bill_chunks (
    file_id     bigint NOT NULL REFERENCES recon_bill_files(id),
    seq         integer NOT NULL CHECK (seq >= 0),
    bytes       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, seq)
);
-- Gzip bodies do not compress again; plain ones would, but pglz on hundreds of megabytes
-- costs more CPU than the disk it saves.
ALTER TABLE recon_bill_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE TRIGGER recon_bill_chunks_append_only BEFORE UPDATE OR DELETE ON recon_bill_chunks
    FOR EACH ROW EXECUTE FUNCTION minipay_append_only();

-- Trade-bill rows, partitioned by month of bill_date (partitions are created on demand by
-- recon_ensure_month before a load). Only the rows of the newest file of a (merchant, date)
-- are kept: they are derived data, the chunks above are the evidence. No foreign key to
-- recon_bill_files on purpose: a million-row COPY would pay one key check per row, and rows
-- are only ever written by the loader, in the transaction that creates their file.
CREATE TABLE recon_trade_rows (
    file_id         bigint NOT NULL,
    mch_id          text NOT NULL,
    bill_date       date NOT NULL,
    line            integer NOT NULL,
    is_refund       boolean NOT NULL,
    trade_time      timestamptz NOT NULL,
    transaction_id  text NOT NULL,
    out_trade_no    text NOT NULL,
    trade_state     text NOT NULL,
    settlement      bigint NOT NULL,
    order_amount    bigint,
    refund_id       text,
    out_refund_no   text,
    refund_amount   bigint NOT NULL,
    requested_refund bigint,
    refund_status   text,
    fee_millifen    bigint NOT NULL,
    rate            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (bill_date);
CREATE INDEX recon_trade_rows_trade ON recon_trade_rows (mch_id, bill_date, out_trade_no);
CREATE INDEX recon_trade_rows_refund ON recon_trade_rows (mch_id, out_refund_no) WHERE is_refund;

CREATE FUNCTION recon_ensure_month(d date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', d)::date;
    part text := 'recon_trade_rows_' || to_char(d, 'YYYYMM');
BEGIN
    -- Two workers loading the same month at once must not both try to create it.
    PERFORM pg_advisory_xact_lock(hashtext('recon_trade_rows partitions'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF recon_trade_rows FOR VALUES FROM (%L) TO (%L)',
                       part, first, (first + interval '1 month')::date);
    END IF;
END $$;

-- Fund-flow rows (Basic account): payouts and red packets are matched against these.
CREATE TABLE recon_fund_rows (
    file_id         bigint NOT NULL REFERENCES recon_bill_files(id),
    mch_id          text NOT NULL,
    bill_date       date NOT NULL,
    line            integer NOT NULL,
    booked_at       timestamptz NOT NULL,
    business_no     text NOT NULL,
    flow_no         text NOT NULL,
    business_name   text NOT NULL,
    business_type   text NOT NULL,
    income          boolean NOT NULL,
    amount          bigint NOT NULL,
    remark          text NOT NULL,
    voucher_no      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recon_fund_rows_day ON recon_fund_rows (mch_id, bill_date);
CREATE INDEX recon_fund_rows_voucher ON recon_fund_rows (mch_id, voucher_no);

-- Every run is a row (history is kept). At most one run per (merchant, date) is active at a
-- time: the partial unique index refuses a second 'running' row, and a run whose lease ran
-- out (its worker died) is marked 'abandoned' by the next one to start.
CREATE TABLE recon_runs (
    id              bigserial PRIMARY KEY,
    mch_id          text NOT NULL,
    bill_date       date NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'waiting', 'abandoned')),
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'cli', 'api', 'bench', 'test')),
    worker          text NOT NULL,
    lease_until     timestamptz NOT NULL,
    trade_file_id   bigint REFERENCES recon_bill_files(id),
    fund_file_id    bigint REFERENCES recon_bill_files(id),
    empty_day       boolean NOT NULL DEFAULT false,
    report          jsonb,
    summary_text    text,
    error           text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX recon_runs_one_active ON recon_runs (mch_id, bill_date) WHERE status = 'running';
CREATE INDEX recon_runs_by_date ON recon_runs (bill_date, mch_id, id DESC);
CREATE TRIGGER recon_runs_touch BEFORE UPDATE ON recon_runs FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- What a run found. `reference` is the merchant number of the thing (out_trade_no,
-- out_refund_no, partner_trade_no, mch_billno, or "fee:<mch>:<date>").
CREATE TABLE recon_discrepancies (
    id              bigserial PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES recon_runs(id),
    mch_id          text NOT NULL,
    bill_date       date NOT NULL,
    category        text NOT NULL CHECK (category IN ('missing_local', 'missing_remote', 'amount_mismatch',
                                                      'status_mismatch', 'fee_mismatch', 'cross_day')),
    kind            text NOT NULL CHECK (kind IN ('payment', 'refund', 'payout', 'redpack_sent', 'redpack_refund')),
    reference       text NOT NULL,
    transaction_id  text,
    our_amount      bigint,
    their_amount    bigint,
    our_status      text,
    their_status    text,
    -- fee_mismatch only: the fees in thousandths of a fen (bills state fees with 5 decimals)
    our_fee_millifen   bigint,
    their_fee_millifen bigint,
    detail          text NOT NULL DEFAULT '',
    -- open: for a person; repaired: fixed by the job (audited); held: cross-day, waiting for a
    -- neighbouring bill; resolved: a held item found in a neighbouring bill
    status          text NOT NULL CHECK (status IN ('open', 'repaired', 'held', 'resolved')),
    repaired_at     timestamptz,
    resolved_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, category, kind, reference)
);
CREATE INDEX recon_discrepancies_open ON recon_discrepancies (mch_id, bill_date) WHERE status IN ('open', 'held');
CREATE TRIGGER recon_discrepancies_touch BEFORE UPDATE ON recon_discrepancies FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();

-- Our near-midnight items that were not in their own day's bill: held until a bill of the
-- following days (up to hold_until) shows them, then matched or expired (missing_remote).
CREATE TABLE recon_held_items (
    mch_id          text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('payment', 'refund')),
    reference       text NOT NULL,
    our_date        date NOT NULL,
    our_amount      bigint NOT NULL,
    hold_until      date NOT NULL,
    status          text NOT NULL CHECK (status IN ('held', 'matched', 'expired')),
    matched_date    date,
    run_id          bigint NOT NULL REFERENCES recon_runs(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mch_id, kind, reference)
);
CREATE TRIGGER recon_held_items_touch BEFORE UPDATE ON recon_held_items FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();
