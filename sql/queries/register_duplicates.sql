-- Staged register rows whose NIR already appeared on an earlier line of the same file. A NIR
-- found twice has at least one row that did not go straight into persons (a first load sends
-- there only rows whose NIR surely came for the first time; later loads send none): only the
-- NIRs of those rows are looked at. Every row of such a NIR but its first (by line) is a
-- duplicate: numbered in one sort, rather than each row checked against the others of its NIR
-- (a semi-join of a CTE onto itself, a nested loop over every row when estimates are off).
SELECT ranked.line_no, ranked.nir
FROM (
    SELECT k.line_no, k.nir, ROW_NUMBER() OVER (PARTITION BY k.nir ORDER BY k.line_no) AS occurrence
    FROM register_keys AS k
    WHERE k.nir IN (SELECT c.nir FROM register_keys AS c WHERE NOT c.direct)
) AS ranked
WHERE ranked.occurrence > 1
