-- Per DMP of a run (a chunk of its batches): source documents, counted on their own, beside the
-- outcomes the run committed for them.
WITH scope AS (
    SELECT dmp_id FROM migration_run_dmps
    WHERE run_id = :run_id AND batch_no BETWEEN :first_batch AND :last_batch
),
source AS (
    SELECT d.dmp_id, COUNT(*) AS documents
    FROM dmp_documents d
    JOIN scope s ON s.dmp_id = d.dmp_id
    GROUP BY d.dmp_id
),
committed AS (
    SELECT o.dmp_id,
           SUM(CASE WHEN o.outcome = 'migrated' THEN 1 ELSE 0 END) AS migrated,
           SUM(CASE WHEN o.outcome = 'held_back' THEN 1 ELSE 0 END) AS held_back,
           SUM(CASE WHEN o.outcome = 'skipped' THEN 1 ELSE 0 END) AS skipped
    FROM dmp_document_outcomes o
    JOIN scope s ON s.dmp_id = o.dmp_id
    WHERE o.migration_run_id = :run_id
    GROUP BY o.dmp_id
)
SELECT s.dmp_id,
       COALESCE(source.documents, 0) AS source,
       COALESCE(committed.migrated, 0) AS migrated,
       COALESCE(committed.held_back, 0) AS held_back,
       COALESCE(committed.skipped, 0) AS skipped
FROM scope s
LEFT JOIN source ON source.dmp_id = s.dmp_id
LEFT JOIN committed ON committed.dmp_id = s.dmp_id
