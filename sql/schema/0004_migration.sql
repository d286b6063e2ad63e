-- DMP migration: the runs, their scope in batches, the decisions taken before anything is
-- committed, the documents carried into the spaces, and one row per DMP once it is done.

-- Where a staged row came from in its file (duplicates: the first line wins).
ALTER TABLE dmp_records ADD COLUMN line_no {BIGINT};
ALTER TABLE dmp_documents ADD COLUMN line_no {BIGINT};

-- One migration run: its logical date, its state (MigrationRunState), its counts and report.
CREATE TABLE migration_runs (
    run_id TEXT PRIMARY KEY,
    logical_date {DATE} NOT NULL,
    state TEXT NOT NULL,
    dag_run_id TEXT,
    holdback_threshold DOUBLE PRECISION NOT NULL,
    dmps {BIGINT} NOT NULL DEFAULT 0,
    documents {BIGINT} NOT NULL DEFAULT 0,
    migrated {BIGINT} NOT NULL DEFAULT 0,
    held_back {BIGINT} NOT NULL DEFAULT 0,
    skipped {BIGINT} NOT NULL DEFAULT 0,
    holdback_rate DOUBLE PRECISION,
    stop_reason TEXT,
    report_path TEXT,
    validation {JSON},
    started_at {TS} NOT NULL,
    updated_at {TS} NOT NULL,
    finished_at {TS}
);
CREATE INDEX ix_migration_runs_state ON migration_runs (state, logical_date);

-- The DMPs a run took on, in batches: a batch holds whole persons (duplicates are found per
-- space) and is the unit of classification and of commit.
CREATE TABLE migration_run_dmps (
    run_id TEXT NOT NULL REFERENCES migration_runs (run_id),
    dmp_id TEXT NOT NULL,
    nir TEXT NOT NULL,
    batch_no {BIGINT} NOT NULL,
    PRIMARY KEY (run_id, dmp_id)
);
CREATE INDEX ix_migration_run_dmps_batch ON migration_run_dmps (run_id, batch_no);
CREATE INDEX ix_migration_run_dmps_dmp ON migration_run_dmps (dmp_id);

CREATE TABLE migration_batches (
    run_id TEXT NOT NULL REFERENCES migration_runs (run_id),
    batch_no {BIGINT} NOT NULL,
    state TEXT NOT NULL,
    documents {BIGINT} NOT NULL DEFAULT 0,
    updated_at {TS} NOT NULL,
    PRIMARY KEY (run_id, batch_no)
);

-- What the run decided for each source document, before the quality gate lets it be committed.
-- Content of the documents to migrate is already in the store (unreferenced until committed).
CREATE TABLE migration_decisions (
    run_id TEXT NOT NULL REFERENCES migration_runs (run_id),
    entry_uuid TEXT NOT NULL,
    dmp_id TEXT NOT NULL,
    batch_no {BIGINT} NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    version_role TEXT,
    chain_head TEXT,
    store_key TEXT,
    PRIMARY KEY (run_id, entry_uuid)
);
CREATE INDEX ix_migration_decisions_batch ON migration_decisions (run_id, batch_no);

-- The documents carried into a space's document store, with their metadata exactly as in the
-- DMP (confidentiality as the source wrote it) and the content address of their content.
CREATE TABLE migrated_documents (
    entry_uuid TEXT PRIMARY KEY,
    nir TEXT NOT NULL REFERENCES spaces (nir),
    dmp_id TEXT NOT NULL,
    unique_id TEXT NOT NULL,
    type_code TEXT NOT NULL,
    class_code TEXT NOT NULL,
    confidentiality TEXT NOT NULL,
    creation_time {TS},
    service_start_time {TS},
    author_role TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size {BIGINT} NOT NULL,
    sha1 TEXT NOT NULL,
    store_key TEXT NOT NULL,
    version_role TEXT NOT NULL,
    replaces TEXT,
    chain_head TEXT NOT NULL,
    title TEXT,
    migration_run_id TEXT NOT NULL,
    migrated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX ux_migrated_documents_space_unique_id ON migrated_documents (nir, unique_id);
CREATE INDEX ix_migrated_documents_dmp ON migrated_documents (dmp_id);
CREATE INDEX ix_migrated_documents_run ON migrated_documents (migration_run_id);

-- A DMP whose documents were all decided and committed: it is never taken on again.
CREATE TABLE dmp_migrations (
    dmp_id TEXT PRIMARY KEY,
    nir TEXT NOT NULL,
    migration_run_id TEXT NOT NULL,
    documents {BIGINT} NOT NULL,
    migrated {BIGINT} NOT NULL,
    held_back {BIGINT} NOT NULL,
    skipped {BIGINT} NOT NULL,
    decided_at {TS} NOT NULL
);
CREATE INDEX ix_dmp_migrations_run ON dmp_migrations (migration_run_id);
