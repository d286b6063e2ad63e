-- Staged register rows whose NIR already appeared on an earlier line of the same file. A NIR
-- found twice has at least one row that did not go straight into persons (a first load sends
-- there only rows whose NIR surely came for the first time; later loads send none): only the
-- NIRs of those rows are looked at.
WITH candidates AS (
    SELECT DISTINCT nir FROM register_keys WHERE NOT direct
),
candidate_rows AS (
    SELECT k.line_no, k.nir FROM register_keys AS k JOIN candidates AS c ON c.nir = k.nir
)
SELECT later.line_no, later.nir
FROM candidate_rows AS later
WHERE EXISTS (
    SELECT 1 FROM candidate_rows AS earlier
    WHERE earlier.nir = later.nir AND earlier.line_no < later.line_no
)
