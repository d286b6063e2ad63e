-- Upsert the staged register rows into persons, by NIR. A row that changes nothing is not
-- touched (re-loading a file is a no-op): only new people and changed ones are selected, by one
-- join on NIR (on a monthly extract, where most people are as they were, cheaper than an upsert
-- that looks each of a million people up by key). A death date, once known, is never erased by
-- a later extract that lacks it. A new email clears its bounce flag; a new address clears its
-- NPAI flag. Extracts may arrive out of order: a known person's row is taken only from an
-- extract as new as, or newer than, the one their row comes from (the file's extract date, given
-- with the load, against persons.register_extracted_on; a date unknown, from before schema 0012,
-- is older than any); an older extract's row changes nothing here (its death date, a fact, is
-- taken by register_older_deaths.sql). People only it knows are added.
INSERT INTO persons (
    nir, nom_naissance, nom_usage, prenom, prenoms, date_naissance, sexe, lieu_naissance, email,
    adresse_ligne2, adresse_ligne3, adresse_ligne4, adresse_ligne5, code_postal, commune,
    address_problem, departement, nir_representant, date_deces, input_file_id, register_extracted_on, updated_at
)
SELECT
    s.nir, s.nom_naissance, s.nom_usage, s.prenom, s.prenoms, s.date_naissance, s.sexe, s.lieu_naissance, s.email,
    s.adresse_ligne2, s.adresse_ligne3, s.adresse_ligne4, s.adresse_ligne5, s.code_postal, s.commune,
    s.address_problem, s.departement, s.nir_representant, s.date_deces, :input_file_id, :extracted_on, :now
FROM register_staging AS s
LEFT JOIN persons AS p ON p.nir = s.nir
WHERE p.nir IS NULL
   OR COALESCE(p.register_extracted_on, :extracted_on) <= :extracted_on AND (
      s.nom_naissance IS DISTINCT FROM p.nom_naissance
      OR s.nom_usage IS DISTINCT FROM p.nom_usage
      OR s.prenoms IS DISTINCT FROM p.prenoms
      OR s.date_naissance IS DISTINCT FROM p.date_naissance
      OR s.sexe IS DISTINCT FROM p.sexe
      OR s.lieu_naissance IS DISTINCT FROM p.lieu_naissance
      OR s.email IS DISTINCT FROM p.email
      OR s.adresse_ligne2 IS DISTINCT FROM p.adresse_ligne2
      OR s.adresse_ligne3 IS DISTINCT FROM p.adresse_ligne3
      OR s.adresse_ligne4 IS DISTINCT FROM p.adresse_ligne4
      OR s.adresse_ligne5 IS DISTINCT FROM p.adresse_ligne5
      OR s.code_postal IS DISTINCT FROM p.code_postal
      OR s.commune IS DISTINCT FROM p.commune
      OR s.departement IS DISTINCT FROM p.departement
      OR s.nir_representant IS DISTINCT FROM p.nir_representant
      OR (s.date_deces IS NOT NULL AND s.date_deces IS DISTINCT FROM p.date_deces))
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
    register_extracted_on = excluded.register_extracted_on,
    updated_at = excluded.updated_at
