-- The unique_ids already in the spaces of one batch's persons (from earlier runs): duplicates.
SELECT md.nir, md.unique_id
FROM migrated_documents md
WHERE md.nir IN (SELECT m.nir FROM migration_run_dmps m WHERE m.run_id = :run_id AND m.batch_no = :batch_no)
