-- Foundation: the register, input files and their quarantine, the audit trail, and the core
-- tables of waves, enrolments, notifications, decisions, spaces and the DMP carry-over.
-- Type names in braces ({ID}, {TS}, {DATE}, {BOOL}, {BIGINT}, {JSON}) are filled per database by
-- mes_rollout.db. A later change adds a new numbered file; an applied file is never edited.

-- One row per input file the pipeline read (register, decisions, feedback, DMP extract).
CREATE TABLE input_files (
    id {ID},
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    run_id TEXT NOT NULL,
    rows_read {BIGINT} NOT NULL DEFAULT 0,
    rows_accepted {BIGINT} NOT NULL DEFAULT 0,
    rows_quarantined {BIGINT} NOT NULL DEFAULT 0,
    warnings {BIGINT} NOT NULL DEFAULT 0,
    loaded_at {TS} NOT NULL
);
CREATE INDEX ix_input_files_sha ON input_files (kind, sha256);

-- Every input row that broke a rule, with where it came from and why. NIRs here are whole:
-- compliance reads them through reports, which mask them.
CREATE TABLE quarantine (
    id {ID},
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id),
    file_kind TEXT NOT NULL,
    line_no {BIGINT} NOT NULL,
    reason_code TEXT NOT NULL,
    detail TEXT,
    record_key TEXT
);
CREATE INDEX ix_quarantine_file ON quarantine (input_file_id);
CREATE INDEX ix_quarantine_kind ON quarantine (file_kind, reason_code);

-- A problem that kept the row but dropped or flagged a field (an invalid email, an unprintable address).
CREATE TABLE input_warnings (
    id {ID},
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id),
    line_no {BIGINT} NOT NULL,
    warning_code TEXT NOT NULL,
    detail TEXT,
    record_key TEXT
);
CREATE INDEX ix_input_warnings_file ON input_warnings (input_file_id);

-- The insured-person register (upserted by NIR from register extracts).
CREATE TABLE persons (
    nir TEXT PRIMARY KEY,
    nom_naissance TEXT NOT NULL,
    nom_usage TEXT,
    prenom TEXT NOT NULL,
    prenoms TEXT NOT NULL,
    date_naissance {DATE} NOT NULL,
    sexe TEXT NOT NULL,
    lieu_naissance TEXT,
    email TEXT,
    email_bounced {BOOL} NOT NULL DEFAULT FALSE,
    adresse_ligne2 TEXT,
    adresse_ligne3 TEXT,
    adresse_ligne4 TEXT,
    adresse_ligne5 TEXT,
    code_postal TEXT,
    commune TEXT,
    address_problem TEXT,
    address_returned {BOOL} NOT NULL DEFAULT FALSE,
    departement TEXT NOT NULL,
    nir_representant TEXT,
    date_deces {DATE},
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id),
    updated_at {TS} NOT NULL
);
CREATE INDEX ix_persons_departement ON persons (departement);
CREATE INDEX ix_persons_representant ON persons (nir_representant);

-- Append-only: every change of state, with what, when, why and what caused it.
CREATE TABLE audit_trail (
    id {ID},
    occurred_at {TS} NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT,
    run_id TEXT,
    input_file_id {BIGINT} REFERENCES input_files (id),
    details {JSON}
);
CREATE INDEX ix_audit_entity ON audit_trail (entity, entity_id);

CREATE TABLE waves (
    wave_id TEXT PRIMARY KEY,
    departements TEXT NOT NULL,
    send_date {DATE} NOT NULL,
    recipient_cap {BIGINT},
    dry_run {BOOL} NOT NULL DEFAULT FALSE,
    state TEXT NOT NULL,
    run_id TEXT,
    counts {JSON},
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);

-- One enrolment per person: "not yet enrolled in any wave" is the absence of a row.
CREATE TABLE enrolments (
    nir TEXT PRIMARY KEY REFERENCES persons (nir),
    wave_id TEXT NOT NULL REFERENCES waves (wave_id),
    state TEXT NOT NULL,
    recipient_nir TEXT,
    code_hash TEXT,
    notified_at {TS},
    opt_out_deadline {TS},
    state_reason TEXT,
    updated_at {TS} NOT NULL
);
CREATE INDEX ix_enrolments_wave_state ON enrolments (wave_id, state);
CREATE INDEX ix_enrolments_state_deadline ON enrolments (state, opt_out_deadline);

-- One message to one recipient (a person or their representative) in one wave.
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    wave_id TEXT NOT NULL REFERENCES waves (wave_id),
    recipient_nir TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    shard {BIGINT} NOT NULL DEFAULT 0,
    email TEXT,
    print_batch TEXT,
    replaces_notification_id TEXT,
    attempts {BIGINT} NOT NULL DEFAULT 0,
    status_detail TEXT,
    created_at {TS} NOT NULL,
    sent_at {TS},
    updated_at {TS} NOT NULL
);
CREATE INDEX ix_notifications_wave ON notifications (wave_id, channel, status);
CREATE INDEX ix_notifications_status ON notifications (status, channel);

-- Who each message tells: a representative's message lists every person it is for.
CREATE TABLE notification_members (
    notification_id TEXT NOT NULL REFERENCES notifications (notification_id),
    nir TEXT NOT NULL,
    PRIMARY KEY (notification_id, nir)
);
CREATE INDEX ix_notification_members_nir ON notification_members (nir);

CREATE TABLE decisions (
    reference TEXT PRIMARY KEY,
    nir TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at {TS} NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id)
);
CREATE INDEX ix_decisions_nir ON decisions (nir);

CREATE TABLE spaces (
    nir TEXT PRIMARY KEY REFERENCES persons (nir),
    state TEXT NOT NULL,
    created_on {DATE} NOT NULL,
    creation_cause TEXT NOT NULL,
    closed_at {TS},
    archive_until {DATE},
    purge_by {DATE},
    run_id TEXT,
    updated_at {TS} NOT NULL
);
CREATE INDEX ix_spaces_state ON spaces (state);

-- The legacy DMP extract, staged as read.
CREATE TABLE dmp_records (
    dmp_id TEXT PRIMARY KEY,
    nir TEXT NOT NULL,
    date_naissance {DATE},
    sexe TEXT,
    created_at {TS} NOT NULL,
    status TEXT NOT NULL,
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id)
);
CREATE INDEX ix_dmp_records_nir ON dmp_records (nir);

CREATE TABLE dmp_documents (
    entry_uuid TEXT PRIMARY KEY,
    unique_id TEXT NOT NULL,
    dmp_id TEXT NOT NULL,
    type_code TEXT NOT NULL,
    class_code TEXT NOT NULL,
    confidentiality TEXT NOT NULL,
    creation_time {TS},
    service_start_time {TS},
    author_role TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size {BIGINT} NOT NULL,
    hash TEXT NOT NULL,
    status TEXT NOT NULL,
    replaces TEXT,
    content_path TEXT NOT NULL,
    title TEXT,
    extract_dir TEXT NOT NULL,
    input_file_id {BIGINT} NOT NULL REFERENCES input_files (id)
);
CREATE INDEX ix_dmp_documents_dmp ON dmp_documents (dmp_id);

-- What became of each source document: migrated, held_back (with a reason) or skipped.
CREATE TABLE dmp_document_outcomes (
    entry_uuid TEXT PRIMARY KEY,
    dmp_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    version_role TEXT,
    store_key TEXT,
    migration_run_id TEXT NOT NULL,
    decided_at {TS} NOT NULL
);
CREATE INDEX ix_dmp_outcomes_dmp ON dmp_document_outcomes (dmp_id);
CREATE INDEX ix_dmp_outcomes_run ON dmp_document_outcomes (migration_run_id, outcome);
