-- A classified batch's decisions become the documents' outcomes (once: keyed by entry_uuid).
INSERT INTO dmp_document_outcomes
    (entry_uuid, dmp_id, outcome, reason, version_role, store_key, migration_run_id, decided_at)
SELECT entry_uuid, dmp_id, outcome, reason, version_role, store_key, run_id, :now
FROM migration_decisions
WHERE run_id = :run_id AND batch_no = :batch_no
ON CONFLICT (entry_uuid) DO NOTHING
