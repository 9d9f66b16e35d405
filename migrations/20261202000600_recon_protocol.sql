-- Which protocol fetched a run's bills: 'v2' (downloadbill / downloadfundflow), 'v3'
-- (/v3/bill/tradebill + fundflowbill, download_url checked by SHA1) or 'file' (bills given
-- by hand or by the benchmark). Runs from before this column stay NULL.
ALTER TABLE recon_runs ADD COLUMN protocol text CHECK (protocol IN ('v2', 'v3', 'file'));
