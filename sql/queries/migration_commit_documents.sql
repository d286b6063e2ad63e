-- The batch's migrated documents into their spaces, metadata exactly as the DMP had it.
INSERT INTO migrated_documents (
    entry_uuid, nir, dmp_id, unique_id, type_code, class_code, confidentiality, creation_time,
    service_start_time, author_role, mime_type, size, sha1, store_key, version_role, replaces,
    chain_head, title, migration_run_id, migrated_at
)
SELECT
    d.entry_uuid, m.nir, d.dmp_id, d.unique_id, d.type_code, d.class_code, d.confidentiality, d.creation_time,
    d.service_start_time, d.author_role, d.mime_type, d.size, LOWER(d.hash), x.store_key, x.version_role,
    d.replaces, x.chain_head, d.title, x.run_id, :now
FROM migration_decisions x
JOIN dmp_documents d ON d.entry_uuid = x.entry_uuid
JOIN migration_run_dmps m ON m.run_id = x.run_id AND m.dmp_id = x.dmp_id
WHERE x.run_id = :run_id AND x.batch_no = :batch_no AND x.outcome = :outcome_migrated
ON CONFLICT (entry_uuid) DO NOTHING
