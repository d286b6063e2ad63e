"""The column names of the input files (INPUTS.md, a fixed contract), in their documented order."""

from __future__ import annotations

REGISTER_COLUMNS = (
    "nir",
    "nom_naissance",
    "nom_usage",
    "prenoms",
    "date_naissance",
    "sexe",
    "lieu_naissance",
    "email",
    "adresse_ligne2",
    "adresse_ligne3",
    "adresse_ligne4",
    "adresse_ligne5",
    "code_postal",
    "commune",
    "departement",
    "nir_representant",
    "date_deces",
)
DMP_COLUMNS = ("dmp_id", "nir", "date_naissance", "sexe", "created_at", "status")
DOCUMENT_COLUMNS = (
    "entry_uuid",
    "unique_id",
    "dmp_id",
    "type_code",
    "class_code",
    "confidentiality",
    "creation_time",
    "service_start_time",
    "author_role",
    "mime_type",
    "size",
    "hash",
    "status",
    "replaces",
    "content_path",
    "title",
)
