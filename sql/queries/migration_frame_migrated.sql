-- The documents a run migrated (a chunk of its batches), beside what the source said of them.
SELECT md.entry_uuid, md.nir, md.unique_id, md.type_code, md.class_code, md.confidentiality,
       d.confidentiality AS source_confidentiality, md.size, d.size AS source_size, md.sha1,
       LOWER(d.hash) AS source_hash, md.store_key, md.version_role, md.chain_head, d.status AS source_status
FROM migrated_documents md
JOIN dmp_documents d ON d.entry_uuid = md.entry_uuid
JOIN migration_run_dmps m ON m.run_id = md.migration_run_id AND m.dmp_id = md.dmp_id
WHERE md.migration_run_id = :run_id AND m.batch_no BETWEEN :first_batch AND :last_batch
