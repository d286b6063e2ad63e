-- How many rows of the staged register extract are for people whose row comes from a newer
-- extract: rows the merge does not apply (register_merge.sql), counted for the operator.
SELECT COUNT(*)
FROM register_staging AS s
JOIN persons AS p ON p.nir = s.nir
WHERE p.register_extracted_on > :extracted_on
