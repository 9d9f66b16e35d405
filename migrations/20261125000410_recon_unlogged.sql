-- Trade-bill rows are derived data: the raw bytes in recon_bill_chunks (logged) are the
-- evidence, and a run reloads rows it does not find. Their month partitions are therefore
-- UNLOGGED: a million-row COPY then writes no WAL (measured: about a third of the load time).
-- After a crash Postgres empties unlogged tables; the next run of a day reloads its bill (the
-- loader checks that the rows of the day are present before reusing a stored file). Standbys
-- do not have these rows; reports are served from the stored run reports, which are logged.

CREATE OR REPLACE FUNCTION recon_ensure_month(d date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', d)::date;
    part text := 'recon_trade_rows_' || to_char(d, 'YYYYMM');
BEGIN
    -- Two workers loading the same month at once must not both try to create it.
    PERFORM pg_advisory_xact_lock(hashtext('recon_trade_rows partitions'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE UNLOGGED TABLE %I PARTITION OF recon_trade_rows FOR VALUES FROM (%L) TO (%L)',
                       part, first, (first + interval '1 month')::date);
    END IF;
END $$;

DO $$
DECLARE
    p regclass;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'recon_trade_rows'::regclass LOOP
        EXECUTE format('ALTER TABLE %s SET UNLOGGED', p);
    END LOOP;
END $$;
