-- DMP rows whose dmp_id is already on an earlier line of the same dmp.csv: the first line wins.
SELECT line_no, dmp_id
FROM (
    SELECT line_no, dmp_id, ROW_NUMBER() OVER (PARTITION BY dmp_id ORDER BY line_no) AS occurrence
    FROM dmp_records_staging
) ranked
WHERE occurrence > 1
ORDER BY line_no
