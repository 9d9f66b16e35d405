-- Reconciliation runs asked for over the API (`POST /v1/reconciliations`). The api only
-- records the request; a worker claims it (`FOR UPDATE SKIP LOCKED`, with a lease so a worker
-- that dies or is stopped mid-run hands it on) and runs it like `minipay reconcile`, so the
-- api never downloads bills itself and any number of workers can serve the queue.
CREATE TABLE recon_requests (
    id              bigserial PRIMARY KEY,
    mch_id          text NOT NULL,
    bill_date       date NOT NULL,
    requested_by    uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    worker          text,
    lease_until     timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    run_id          bigint REFERENCES recon_runs(id),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recon_requests_open ON recon_requests (id) WHERE status IN ('pending', 'running');
CREATE TRIGGER recon_requests_touch BEFORE UPDATE ON recon_requests FOR EACH ROW EXECUTE FUNCTION minipay_touch_updated_at();
