-- One row per batch of a run's scope, each to be classified then committed.
INSERT INTO migration_batches (run_id, batch_no, state, documents, updated_at)
SELECT run_id, batch_no, :planned, 0, :now
FROM migration_run_dmps
WHERE run_id = :run_id
GROUP BY run_id, batch_no
