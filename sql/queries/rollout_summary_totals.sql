-- Writes rollout_summary_totals: the whole pipeline's counts as `mes-rollout status` computes
-- them (console/status.py), one (section, label, value) row each: persons and quarantined register
-- rows, enrolments by state, messages by channel and status, spaces by state, DMP documents by outcome.
INSERT INTO rollout_summary_totals (section, label, value)
SELECT CAST('persons' AS TEXT), CAST('total' AS TEXT), COUNT(*) FROM persons
UNION ALL
SELECT 'persons', 'quarantined_rows', COUNT(*) FROM quarantine WHERE file_kind = :register_kind
UNION ALL
SELECT 'enrolments', state, COUNT(*) FROM enrolments GROUP BY state
UNION ALL
SELECT 'notifications.' || channel, status, COUNT(*) FROM notifications GROUP BY channel, status
UNION ALL
SELECT 'spaces', state, COUNT(*) FROM spaces GROUP BY state
UNION ALL
SELECT 'dmp_documents', outcome, COUNT(*) FROM dmp_document_outcomes GROUP BY outcome
