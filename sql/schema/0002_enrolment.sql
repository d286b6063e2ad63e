-- Enrolment lifecycle: what waves, decisions and space creation need beyond the foundation.

-- Who approved or rejected a wave, when, and the comment they gave (Airflow human-in-the-loop answer).
ALTER TABLE waves ADD COLUMN decided_by TEXT;
ALTER TABLE waves ADD COLUMN decided_at {TS};
ALTER TABLE waves ADD COLUMN decision_comment TEXT;

-- The message of the wave that tells the person (for a minor: their representative's message),
-- and when the decision that set the current state was received.
ALTER TABLE enrolments ADD COLUMN notification_id TEXT;
ALTER TABLE enrolments ADD COLUMN decided_at {TS};
CREATE INDEX ix_enrolments_notification ON enrolments (notification_id);

-- The départements of a wave, one row each (waves.departements keeps the list as text for reading).
CREATE TABLE wave_departements (
    wave_id TEXT NOT NULL REFERENCES waves (wave_id),
    departement TEXT NOT NULL,
    PRIMARY KEY (wave_id, departement)
);

-- Every person a wave selected, routed once at selection (set-based): told ('notify', by email or
-- letter, directly or through their representative), 'unreachable', or 'excluded' with a reason.
-- shard is the chunk of about MES_SHARD_SIZE people planned by one task (-1: no message to plan).
-- It stays after planning: it answers "who was in the wave, and why was someone not told".
CREATE TABLE wave_cohort (
    wave_id TEXT NOT NULL,
    nir TEXT NOT NULL,
    recipient_nir TEXT,
    departement TEXT NOT NULL,
    outcome TEXT NOT NULL,
    channel TEXT,
    reason TEXT,
    shard {BIGINT} NOT NULL,
    PRIMARY KEY (wave_id, nir)
);
CREATE INDEX ix_wave_cohort_shard ON wave_cohort (wave_id, shard);

-- One row per planned shard, written in the shard's own transaction: a re-run skips it.
CREATE TABLE wave_shards (
    wave_id TEXT NOT NULL REFERENCES waves (wave_id),
    shard {BIGINT} NOT NULL,
    people {BIGINT} NOT NULL,
    email {BIGINT} NOT NULL,
    letter {BIGINT} NOT NULL,
    run_id TEXT NOT NULL,
    planned_at {TS} NOT NULL,
    PRIMARY KEY (wave_id, shard)
);

-- `mes-rollout advance`: which daily DAG ran (or had nothing due) for which logical date.
CREATE TABLE daily_runs (
    dag_id TEXT NOT NULL,
    logical_date {DATE} NOT NULL,
    outcome TEXT NOT NULL,
    run_id TEXT,
    finished_at {TS} NOT NULL,
    PRIMARY KEY (dag_id, logical_date)
);

-- Deaths are few among tens of millions of people: space creation finds them through this index.
CREATE INDEX ix_persons_deceased ON persons (date_deces) WHERE date_deces IS NOT NULL;
