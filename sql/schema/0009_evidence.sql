-- Evidence that cannot be overwritten or disowned: the rollout's own identity, and every file the
-- pipeline hands to compliance or the printer (reports, Data Docs, print batches) with its SHA-256.

-- One row, made once per database: its rollout id names the folders of its reports and print
-- batches, so that two databases sharing one var/ never write into each other's files.
CREATE TABLE rollout_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    rollout_id TEXT NOT NULL UNIQUE,
    created_at {TS} NOT NULL
);

-- Every evidence file written (once: never overwritten), what it is, its SHA-256 and size, the
-- run that wrote it and where it came from (database URL without password, code version, the
-- inputs' SHA-256). `mes-rollout verify` checks each file on disk against this row.
CREATE TABLE evidence_files (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size {BIGINT} NOT NULL,
    run_id TEXT,
    created_at {TS} NOT NULL,
    provenance {JSON} NOT NULL
);
CREATE INDEX ix_evidence_files_run ON evidence_files (run_id, kind)
