-- The staged documents of one batch's DMPs.
SELECT d.entry_uuid, d.unique_id, d.dmp_id, d.type_code, d.class_code, d.confidentiality, d.creation_time,
       d.service_start_time, d.status, d.replaces, d.size, d.hash, d.content_path, d.extract_dir, d.line_no
FROM migration_run_dmps m
JOIN dmp_documents d ON d.dmp_id = m.dmp_id
WHERE m.run_id = :run_id AND m.batch_no = :batch_no
