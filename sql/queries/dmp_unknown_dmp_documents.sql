-- Documents of a dmp_id that neither this extract's dmp.csv nor an earlier extract has.
SELECT d.line_no, d.entry_uuid
FROM dmp_documents_staging d
WHERE NOT EXISTS (SELECT 1 FROM dmp_records_staging r WHERE r.dmp_id = d.dmp_id)
  AND NOT EXISTS (SELECT 1 FROM dmp_records r WHERE r.dmp_id = d.dmp_id)
ORDER BY d.line_no
