-- A run's decisions by document type and outcome (the compliance report).
SELECT d.type_code, x.outcome, COUNT(*) AS documents
FROM migration_decisions x
JOIN dmp_documents d ON d.entry_uuid = x.entry_uuid
WHERE x.run_id = :run_id
GROUP BY d.type_code, x.outcome
ORDER BY d.type_code, x.outcome
