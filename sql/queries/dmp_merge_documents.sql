-- Staged document rows into dmp_documents, with the folder their content paths are relative to.
INSERT INTO dmp_documents (
    entry_uuid, unique_id, dmp_id, type_code, class_code, confidentiality, creation_time,
    service_start_time, author_role, mime_type, size, hash, status, replaces, content_path, title,
    extract_dir, input_file_id, line_no
)
SELECT
    entry_uuid, unique_id, dmp_id, type_code, class_code, confidentiality, creation_time,
    service_start_time, author_role, mime_type, size, hash, status, replaces, content_path, title,
    :extract_dir, :documents_file_id, line_no
FROM dmp_documents_staging
WHERE TRUE
ON CONFLICT (entry_uuid) DO UPDATE SET
    unique_id = excluded.unique_id,
    dmp_id = excluded.dmp_id,
    type_code = excluded.type_code,
    class_code = excluded.class_code,
    confidentiality = excluded.confidentiality,
    creation_time = excluded.creation_time,
    service_start_time = excluded.service_start_time,
    author_role = excluded.author_role,
    mime_type = excluded.mime_type,
    size = excluded.size,
    hash = excluded.hash,
    status = excluded.status,
    replaces = excluded.replaces,
    content_path = excluded.content_path,
    title = excluded.title,
    extract_dir = excluded.extract_dir,
    input_file_id = excluded.input_file_id,
    line_no = excluded.line_no
