-- Rollout summary: the figures of the Rollout and Wave pages in Airflow's UI and of
-- `mes-rollout report`. Refreshed set-based (mes_rollout/rollout_summary.py) at the end of the
-- enrolment_wave, notification_sending, delivery_feedback, decisions_intake, space_creation and
-- dmp_migration runs; a page reads these tables and never counts the live ones.

-- One row per wave: the wave as recorded, and its funnel from selection to spaces.
CREATE TABLE rollout_summary_waves (
    wave_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    departements TEXT NOT NULL,
    send_date {DATE} NOT NULL,
    recipient_cap {BIGINT},
    dry_run {BOOL} NOT NULL,
    run_id TEXT,
    counts {JSON},
    decided_by TEXT,
    decided_at {TS},
    decision_comment TEXT,
    created_at {TS} NOT NULL,
    selected {BIGINT} NOT NULL,
    routed_email {BIGINT} NOT NULL,
    routed_letter {BIGINT} NOT NULL,
    unreachable_at_selection {BIGINT} NOT NULL,
    excluded {BIGINT} NOT NULL,
    emails {BIGINT} NOT NULL,
    emails_sent {BIGINT} NOT NULL,
    emails_delivered {BIGINT} NOT NULL,
    emails_bounced {BIGINT} NOT NULL,
    emails_waiting {BIGINT} NOT NULL,
    emails_cancelled {BIGINT} NOT NULL,
    letters {BIGINT} NOT NULL,
    letters_posted {BIGINT} NOT NULL,
    letters_returned {BIGINT} NOT NULL,
    letters_fallback {BIGINT} NOT NULL,
    letters_cancelled {BIGINT} NOT NULL,
    people_planned {BIGINT} NOT NULL,
    people_notified {BIGINT} NOT NULL,
    people_unreachable {BIGINT} NOT NULL,
    people_opposed {BIGINT} NOT NULL,
    people_late_opposed {BIGINT} NOT NULL,
    people_created {BIGINT} NOT NULL,
    people_closed {BIGINT} NOT NULL,
    people_deceased {BIGINT} NOT NULL,
    spaces_activated {BIGINT} NOT NULL,
    spaces_automatic {BIGINT} NOT NULL,
    refreshed_at {TS} NOT NULL
);

-- One row per wave and département of its cohort: who was selected, how they were routed, what they decided.
CREATE TABLE rollout_summary_departements (
    wave_id TEXT NOT NULL,
    departement TEXT NOT NULL,
    selected {BIGINT} NOT NULL,
    routed_email {BIGINT} NOT NULL,
    routed_letter {BIGINT} NOT NULL,
    unreachable_at_selection {BIGINT} NOT NULL,
    excluded {BIGINT} NOT NULL,
    opposed {BIGINT} NOT NULL,
    spaces_activated {BIGINT} NOT NULL,
    spaces_automatic {BIGINT} NOT NULL,
    PRIMARY KEY (wave_id, departement)
);

-- Messages by the day they went out (notifications.send_date), wave and channel.
CREATE TABLE rollout_summary_days (
    day {DATE} NOT NULL,
    wave_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    messages {BIGINT} NOT NULL,
    PRIMARY KEY (day, wave_id, channel)
);

-- People by reason: 'exclusion' (wave_cohort.reason of those not told at selection) and
-- 'unreachable' (enrolments.state_reason of those left unreachable after a failure).
CREATE TABLE rollout_summary_reasons (
    wave_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    people {BIGINT} NOT NULL,
    PRIMARY KEY (wave_id, kind, reason)
);

-- The whole pipeline's counts, the same as `mes-rollout status` computes them (section, label, value).
CREATE TABLE rollout_summary_totals (
    section TEXT NOT NULL,
    label TEXT NOT NULL,
    value {BIGINT} NOT NULL,
    PRIMARY KEY (section, label)
);

-- When the figures were last refreshed, and by which run (one row).
CREATE TABLE rollout_summary_refresh (
    singleton {BIGINT} PRIMARY KEY,
    refreshed_at {TS} NOT NULL,
    run_id TEXT,
    source TEXT NOT NULL
)
