-- A run's decisions by outcome and reason (the quality gate and the report).
SELECT outcome, reason, COUNT(*) AS documents
FROM migration_decisions
WHERE run_id = :run_id
GROUP BY outcome, reason
ORDER BY outcome, reason
