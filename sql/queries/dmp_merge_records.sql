-- Staged DMP rows into dmp_records: a later extract updates what an earlier one said.
INSERT INTO dmp_records (dmp_id, nir, date_naissance, sexe, created_at, status, input_file_id, line_no)
SELECT dmp_id, nir, date_naissance, sexe, created_at, status, :dmp_file_id, line_no
FROM dmp_records_staging
WHERE TRUE
ON CONFLICT (dmp_id) DO UPDATE SET
    nir = excluded.nir,
    date_naissance = excluded.date_naissance,
    sexe = excluded.sexe,
    created_at = excluded.created_at,
    status = excluded.status,
    input_file_id = excluded.input_file_id,
    line_no = excluded.line_no
