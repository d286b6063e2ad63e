-- The staged extract of a run's scope, batches first_batch to last_batch (a validation chunk).
SELECT d.entry_uuid, d.unique_id, d.dmp_id, d.type_code, d.class_code, d.confidentiality, d.author_role,
       d.mime_type, d.size, d.hash, d.status, d.replaces, d.content_path
FROM migration_run_dmps m
JOIN dmp_documents d ON d.dmp_id = m.dmp_id
WHERE m.run_id = :run_id AND m.batch_no BETWEEN :first_batch AND :last_batch
