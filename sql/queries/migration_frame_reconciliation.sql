-- Per DMP of a run (a chunk of its batches): source documents, counted on their own, beside the
-- run's outcome for each document. One aggregate over the facts of the scope (the DMP itself,
-- each source document, each outcome), never aggregates joined back onto the scope: a wrong
-- estimate cannot turn it into a nested loop of DMPs over DMPs.
-- validation/migration_checks.py puts where the comment stands the run's outcomes (dmp_id,
-- outcome): those it committed (dmp_document_outcomes) or, before the commit, those it decided
-- for the chunk (migration_decisions).
WITH scope AS (
    SELECT dmp_id FROM migration_run_dmps
    WHERE run_id = :run_id AND batch_no BETWEEN :first_batch AND :last_batch
)
SELECT facts.dmp_id,
       SUM(facts.source) AS source,
       SUM(facts.migrated) AS migrated,
       SUM(facts.held_back) AS held_back,
       SUM(facts.skipped) AS skipped
FROM (
    SELECT s.dmp_id, 0 AS source, 0 AS migrated, 0 AS held_back, 0 AS skipped
    FROM scope s
    UNION ALL
    SELECT d.dmp_id, 1, 0, 0, 0
    FROM dmp_documents d
    JOIN scope s ON s.dmp_id = d.dmp_id
    UNION ALL
    SELECT o.dmp_id, 0,
           CASE WHEN o.outcome = :outcome_migrated THEN 1 ELSE 0 END,
           CASE WHEN o.outcome = :outcome_held_back THEN 1 ELSE 0 END,
           CASE WHEN o.outcome = :outcome_skipped THEN 1 ELSE 0 END
    FROM (/* the run's outcomes */) AS o
    JOIN scope s ON s.dmp_id = o.dmp_id
) AS facts
GROUP BY facts.dmp_id
