-- Audit one event per person whose death the staged extract records for the first time.
INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id, input_file_id)
SELECT :now, 'person', s.nir, 'death_recorded', NULL, 'deceased', 'register extract', :run_id, :input_file_id
FROM register_staging AS s
JOIN persons AS p ON p.nir = s.nir
WHERE s.date_deces IS NOT NULL AND p.date_deces IS NULL
