-- Each DMP of the batch is done: its counts, and it is never taken on again.
INSERT INTO dmp_migrations (dmp_id, nir, migration_run_id, documents, migrated, held_back, skipped, decided_at)
SELECT
    m.dmp_id,
    m.nir,
    m.run_id,
    COUNT(x.entry_uuid),
    COALESCE(SUM(CASE WHEN x.outcome = :outcome_migrated THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN x.outcome = :outcome_held_back THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN x.outcome = :outcome_skipped THEN 1 ELSE 0 END), 0),
    :now
FROM migration_run_dmps m
LEFT JOIN migration_decisions x ON x.run_id = m.run_id AND x.dmp_id = m.dmp_id
WHERE m.run_id = :run_id AND m.batch_no = :batch_no
GROUP BY m.dmp_id, m.nir, m.run_id
ON CONFLICT (dmp_id) DO NOTHING
