-- A run's decisions by confidentiality codes (as the source wrote them) and outcome.
SELECT d.confidentiality, x.outcome, COUNT(*) AS documents
FROM migration_decisions x
JOIN dmp_documents d ON d.entry_uuid = x.entry_uuid
WHERE x.run_id = :run_id
GROUP BY d.confidentiality, x.outcome
ORDER BY d.confidentiality, x.outcome
