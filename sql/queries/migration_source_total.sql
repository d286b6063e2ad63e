-- The source documents of a run's scope and its DMPs, counted straight from the staged extract.
SELECT COUNT(DISTINCT m.dmp_id) AS dmps, COUNT(d.entry_uuid) AS documents
FROM migration_run_dmps m
LEFT JOIN dmp_documents d ON d.dmp_id = m.dmp_id
WHERE m.run_id = :run_id
