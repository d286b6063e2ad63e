-- Staged rows whose legal representative is not a known living person: known means in this
-- file (staged) or already in the register; living means no death date in either. The caller
-- fills in two blanks: /*wards*/ narrows the rows looked at to those whose representative has
-- just been rejected (a rejection may orphan them), and on a first load /*register*/persons
-- becomes an empty set: persons then holds nothing but rows of this file (rejected ones
-- included), and is being rebuilt on the load's own connection.
SELECT s.line_no, s.nir,
       CASE
           WHEN rs.nir IS NULL AND p.nir IS NULL THEN 'UNKNOWN_REPRESENTATIVE'
           ELSE 'DECEASED_REPRESENTATIVE'
       END AS reason
FROM register_keys AS s
LEFT JOIN register_keys AS rs ON rs.nir = s.nir_representant
LEFT JOIN /*register*/persons AS p ON p.nir = s.nir_representant
WHERE s.nir_representant IS NOT NULL /*wards*/
  AND (
      (rs.nir IS NULL AND p.nir IS NULL)
      OR (rs.nir IS NOT NULL AND rs.date_deces IS NOT NULL)
      OR (rs.nir IS NULL AND p.date_deces IS NOT NULL)
  )
