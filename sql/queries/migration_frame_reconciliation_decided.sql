-- Per DMP of a run (a chunk of its batches): source documents, counted on their own, beside what
-- the run decided for them.
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
decided AS (
    SELECT dmp_id,
           SUM(CASE WHEN outcome = 'migrated' THEN 1 ELSE 0 END) AS migrated,
           SUM(CASE WHEN outcome = 'held_back' THEN 1 ELSE 0 END) AS held_back,
           SUM(CASE WHEN outcome = 'skipped' THEN 1 ELSE 0 END) AS skipped
    FROM migration_decisions
    WHERE run_id = :run_id AND batch_no BETWEEN :first_batch AND :last_batch
    GROUP BY dmp_id
)
SELECT s.dmp_id,
       COALESCE(source.documents, 0) AS source,
       COALESCE(decided.migrated, 0) AS migrated,
       COALESCE(decided.held_back, 0) AS held_back,
       COALESCE(decided.skipped, 0) AS skipped
FROM scope s
LEFT JOIN source ON source.dmp_id = s.dmp_id
LEFT JOIN decided ON decided.dmp_id = s.dmp_id
