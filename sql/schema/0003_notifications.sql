-- Notifications: what sending, printing and delivery feedback need beyond the foundation.

-- The send date a message states (its deadline) is fixed at its first claim, so that a message
-- re-sent after a crash says the same as the first; claimed_at dates the last claim (stuck rows).
ALTER TABLE notifications ADD COLUMN send_date {DATE};
ALTER TABLE notifications ADD COLUMN claimed_at {TS};
CREATE INDEX ix_notifications_pending ON notifications (channel, status, shard, notification_id);
CREATE INDEX ix_notifications_replaces ON notifications (replaces_notification_id);
CREATE INDEX ix_notifications_recipient ON notifications (recipient_nir, wave_id);

-- One row per attempt that ended: sent (250), or failed with the relay's SMTP code. Every claim
-- counts in notifications.attempts, committed before the hand-over: an attempt number with no row
-- here is one a crash cut short (claimed, perhaps handed over, never recorded).
CREATE TABLE sending_attempts (
    notification_id TEXT NOT NULL REFERENCES notifications (notification_id),
    attempt {BIGINT} NOT NULL,
    run_id TEXT NOT NULL,
    claimed_at {TS} NOT NULL,
    finished_at {TS} NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code {BIGINT},
    PRIMARY KEY (notification_id, attempt)
);

-- One print file (PDF) and its manifest for the print provider, at most 5 000 letters each.
CREATE TABLE print_batches (
    batch_id TEXT PRIMARY KEY,
    print_date {DATE} NOT NULL,
    sequence {BIGINT} NOT NULL,
    letters {BIGINT} NOT NULL,
    pages {BIGINT} NOT NULL,
    pdf_path TEXT NOT NULL,
    pdf_sha256 TEXT NOT NULL,
    manifest_path TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT NOT NULL,
    posted_on {DATE},
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX ux_print_batches_date_sequence ON print_batches (print_date, sequence);

-- Every feedback line applied, keyed by a hash of (notification_id, status, occurred_at): the same
-- line read twice, in one file or in two, changes nothing the second time.
CREATE TABLE feedback_events (
    event_key TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL,
    status TEXT NOT NULL,
    occurred_at {TS} NOT NULL,
    detail TEXT,
    outcome TEXT NOT NULL,
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id),
    line_no {BIGINT} NOT NULL,
    recorded_at {TS} NOT NULL
);
CREATE INDEX ix_feedback_events_notification ON feedback_events (notification_id);
