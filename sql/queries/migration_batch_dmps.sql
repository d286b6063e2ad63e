-- The DMPs of one batch with the register's traits of their person (for the identity check).
SELECT m.dmp_id, m.nir, r.date_naissance, r.sexe, r.created_at, p.date_naissance AS person_birth, p.sexe AS person_sex
FROM migration_run_dmps m
JOIN dmp_records r ON r.dmp_id = m.dmp_id
JOIN persons p ON p.nir = m.nir
WHERE m.run_id = :run_id AND m.batch_no = :batch_no
ORDER BY m.nir, r.created_at, m.dmp_id
