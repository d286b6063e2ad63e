-- Staged rows whose legal representative is not a known living person: known means in this
-- file (staged) or already in the register; living means no death date in either.
SELECT s.line_no, s.nir,
       CASE
           WHEN rs.nir IS NULL AND p.nir IS NULL THEN 'UNKNOWN_REPRESENTATIVE'
           ELSE 'DECEASED_REPRESENTATIVE'
       END AS reason
FROM register_keys AS s
LEFT JOIN register_keys AS rs ON rs.nir = s.nir_representant
LEFT JOIN persons AS p ON p.nir = s.nir_representant
WHERE s.nir_representant IS NOT NULL
  AND (
      (rs.nir IS NULL AND p.nir IS NULL)
      OR (rs.nir IS NOT NULL AND rs.date_deces IS NOT NULL)
      OR (rs.nir IS NULL AND p.date_deces IS NOT NULL)
  )
