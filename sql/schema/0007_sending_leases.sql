-- Claims with a lease: two live senders never hand over the same message, and two printing runs
-- never write the same print batch. Type names in braces are filled per database (0001).

-- Who holds a message in `sending` (a claim id unique per sender) and until when. A message whose
-- lease has passed was left by a sender that died or gave up: another sender may take it over.
-- Messages claimed before this file carry no lease: they count as expired.
ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
ALTER TABLE notifications ADD COLUMN lease_until {TS};

-- A print batch's number and letters are claimed here, in one transaction, before its files are
-- written; print_batches records it once the files are complete. A claim with no print_batches
-- row and an expired lease was cut short: the next run writes that batch again, same letters,
-- same number.
CREATE TABLE print_batch_claims (
    batch_id TEXT PRIMARY KEY,
    print_date {DATE} NOT NULL,
    sequence {BIGINT} NOT NULL,
    claimed_by TEXT NOT NULL,
    lease_until {TS} NOT NULL,
    claimed_at {TS} NOT NULL
);
CREATE UNIQUE INDEX ux_print_batch_claims_date_sequence ON print_batch_claims (print_date, sequence);
CREATE INDEX ix_notifications_print_batch ON notifications (print_batch);
