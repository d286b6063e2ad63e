-- Staged register rows whose NIR already appeared on an earlier line of the same file.
SELECT later.line_no, later.nir
FROM register_keys AS later
WHERE EXISTS (
    SELECT 1 FROM register_keys AS earlier
    WHERE earlier.nir = later.nir AND earlier.line_no < later.line_no
)
