-- The DMPs a new run takes on: those of persons whose space is active (created on or before the
-- run's date), not migrated yet, and not in the scope of another run still under way. Batches hold
-- whole persons (duplicates are found per space), a set number of persons each.
INSERT INTO migration_run_dmps (run_id, dmp_id, nir, batch_no)
SELECT :run_id, r.dmp_id, r.nir, (DENSE_RANK() OVER (ORDER BY r.nir) - 1) / :persons_per_batch
FROM dmp_records r
JOIN spaces s ON s.nir = r.nir
WHERE s.state = :active
  AND s.created_on <= :as_of
  AND NOT EXISTS (SELECT 1 FROM dmp_migrations m WHERE m.dmp_id = r.dmp_id)
  AND NOT EXISTS (
      SELECT 1
      FROM migration_run_dmps o
      JOIN migration_runs u ON u.run_id = o.run_id
      WHERE o.dmp_id = r.dmp_id AND o.run_id <> :run_id AND u.state IN (:classifying, :classified, :committing, :committed)
  )
