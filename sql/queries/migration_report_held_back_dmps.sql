-- The DMPs of a run with held-back documents, by reason (the report masks the NIR).
SELECT x.dmp_id, m.nir, x.reason, COUNT(*) AS documents
FROM migration_decisions x
JOIN migration_run_dmps m ON m.run_id = x.run_id AND m.dmp_id = x.dmp_id
WHERE x.run_id = :run_id AND x.outcome = :outcome_held_back
GROUP BY x.dmp_id, m.nir, x.reason
ORDER BY x.dmp_id, x.reason
