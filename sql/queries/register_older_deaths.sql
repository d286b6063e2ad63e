-- The death dates an older register extract brings (delivered after a newer one was loaded): a
-- death is a fact, taken whatever the age of the extract that records it, for people without one
-- yet; nothing else of the older row is (register_merge.sql leaves those rows alone). The row's
-- provenance (input_file_id, register_extracted_on) stays that of the newer extract; the death's
-- is in the audit trail (register_deaths.sql, with this file's id).
UPDATE persons
SET date_deces = (SELECT s.date_deces FROM register_staging AS s WHERE s.nir = persons.nir),
    updated_at = :now
WHERE persons.date_deces IS NULL
  AND persons.register_extracted_on > :extracted_on
  AND persons.nir IN (SELECT s.nir FROM register_staging AS s WHERE s.date_deces IS NOT NULL)
