-- Document rows whose entry_uuid is already on an earlier line of the same documents.csv: the first wins.
SELECT line_no, entry_uuid
FROM (
    SELECT line_no, entry_uuid, ROW_NUMBER() OVER (PARTITION BY entry_uuid ORDER BY line_no) AS occurrence
    FROM dmp_documents_staging
) ranked
WHERE occurrence > 1
ORDER BY line_no
