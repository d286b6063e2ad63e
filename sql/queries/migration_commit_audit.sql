-- The audit trail of a committed batch: what became of each document, and why.
INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)
SELECT :now, 'dmp_document', entry_uuid, 'dmp_migration', 'staged', outcome, reason, run_id
FROM migration_decisions
WHERE run_id = :run_id AND batch_no = :batch_no
