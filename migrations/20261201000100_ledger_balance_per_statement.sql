-- The balance check runs once per INSERT statement instead of once per entry at commit.
--
-- Before: a deferred constraint trigger FOR EACH ROW summed the whole transaction once per
-- entry, at commit (two identical sums per two-entry posting, one plpgsql call each). Under
-- group commit one statement posts dozens of transactions, and those calls were ~7 % of the
-- database's CPU on the notification path.
--
-- Now: an AFTER INSERT … FOR EACH STATEMENT trigger sees the statement's new entries as a
-- transition table and checks every ledger transaction they touch, in one query: the sum of
-- all its entries (old and new) is zero and it has at least two. This is stricter than
-- before, not weaker: a posting is balanced at the end of the statement that writes it,
-- so an unbalanced transaction is refused at once instead of at commit. Every writer
-- inserts a transaction's entries in one statement (`ledger::post`, the settle paths).
CREATE OR REPLACE FUNCTION minipay_ledger_balanced_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- Per touched transaction, index lookups only (a transition table has no statistics,
    -- so nothing here may depend on a join order the planner would have to guess).
    SELECT t.transaction_id, s.total, s.n, s.known INTO bad
      FROM (SELECT DISTINCT transaction_id FROM new_entries) t
      CROSS JOIN LATERAL (
          SELECT coalesce(sum(e.amount), 0) AS total, count(*) AS n,
                 EXISTS (SELECT 1 FROM ledger_transactions lt WHERE lt.id = t.transaction_id) AS known
            FROM ledger_entries e WHERE e.transaction_id = t.transaction_id
      ) s
     WHERE NOT s.known OR s.total <> 0 OR s.n < 2
     LIMIT 1;
    IF FOUND AND NOT bad.known THEN
        RAISE EXCEPTION 'ledger entries name transaction %, which does not exist', bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % entries)', bad.transaction_id, bad.total, bad.n
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- The same statement also checks that each named ledger transaction exists, which is what
-- the foreign key `ledger_entries.transaction_id → ledger_transactions` did with one
-- lookup and one row lock per entry; both tables refuse UPDATE, DELETE and TRUNCATE, so a
-- transaction that existed when its entries were written exists for good.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transaction_id_fkey;

DROP TRIGGER ledger_entries_balanced ON ledger_entries;
DROP FUNCTION minipay_ledger_balanced();
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION minipay_ledger_balanced_statement();


