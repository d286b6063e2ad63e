-- Upsert the staged register rows into persons, by NIR. A row that changes nothing is not
-- touched (re-loading a file is a no-op). A death date, once known, is never erased by a later
-- extract that lacks it. A new email clears its bounce flag; a new address clears its NPAI flag.
INSERT INTO persons (
    nir, nom_naissance, nom_usage, prenom, prenoms, date_naissance, sexe, lieu_naissance, email,
    adresse_ligne2, adresse_ligne3, adresse_ligne4, adresse_ligne5, code_postal, commune,
    address_problem, departement, nir_representant, date_deces, input_file_id, updated_at
)
SELECT
    nir, nom_naissance, nom_usage, prenom, prenoms, date_naissance, sexe, lieu_naissance, email,
    adresse_ligne2, adresse_ligne3, adresse_ligne4, adresse_ligne5, code_postal, commune,
    address_problem, departement, nir_representant, date_deces, :input_file_id, :now
FROM register_staging
WHERE TRUE
ON CONFLICT (nir) DO UPDATE SET
    nom_naissance = excluded.nom_naissance,
    nom_usage = excluded.nom_usage,
    prenom = excluded.prenom,
    prenoms = excluded.prenoms,
    date_naissance = excluded.date_naissance,
    sexe = excluded.sexe,
    lieu_naissance = excluded.lieu_naissance,
    email = excluded.email,
    email_bounced = CASE WHEN excluded.email IS DISTINCT FROM persons.email THEN FALSE
                         ELSE persons.email_bounced END,
    adresse_ligne2 = excluded.adresse_ligne2,
    adresse_ligne3 = excluded.adresse_ligne3,
    adresse_ligne4 = excluded.adresse_ligne4,
    adresse_ligne5 = excluded.adresse_ligne5,
    code_postal = excluded.code_postal,
    commune = excluded.commune,
    address_problem = excluded.address_problem,
    address_returned = CASE
        WHEN excluded.adresse_ligne2 IS DISTINCT FROM persons.adresse_ligne2
          OR excluded.adresse_ligne3 IS DISTINCT FROM persons.adresse_ligne3
          OR excluded.adresse_ligne4 IS DISTINCT FROM persons.adresse_ligne4
          OR excluded.adresse_ligne5 IS DISTINCT FROM persons.adresse_ligne5
          OR excluded.code_postal IS DISTINCT FROM persons.code_postal
          OR excluded.commune IS DISTINCT FROM persons.commune
        THEN FALSE ELSE persons.address_returned END,
    departement = excluded.departement,
    nir_representant = excluded.nir_representant,
    date_deces = COALESCE(excluded.date_deces, persons.date_deces),
    input_file_id = excluded.input_file_id,
    updated_at = excluded.updated_at
WHERE excluded.nom_naissance IS DISTINCT FROM persons.nom_naissance
   OR excluded.nom_usage IS DISTINCT FROM persons.nom_usage
   OR excluded.prenoms IS DISTINCT FROM persons.prenoms
   OR excluded.date_naissance IS DISTINCT FROM persons.date_naissance
   OR excluded.sexe IS DISTINCT FROM persons.sexe
   OR excluded.lieu_naissance IS DISTINCT FROM persons.lieu_naissance
   OR excluded.email IS DISTINCT FROM persons.email
   OR excluded.adresse_ligne2 IS DISTINCT FROM persons.adresse_ligne2
   OR excluded.adresse_ligne3 IS DISTINCT FROM persons.adresse_ligne3
   OR excluded.adresse_ligne4 IS DISTINCT FROM persons.adresse_ligne4
   OR excluded.adresse_ligne5 IS DISTINCT FROM persons.adresse_ligne5
   OR excluded.code_postal IS DISTINCT FROM persons.code_postal
   OR excluded.commune IS DISTINCT FROM persons.commune
   OR excluded.departement IS DISTINCT FROM persons.departement
   OR excluded.nir_representant IS DISTINCT FROM persons.nir_representant
   OR (excluded.date_deces IS NOT NULL AND excluded.date_deces IS DISTINCT FROM persons.date_deces)
