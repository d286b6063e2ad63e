-- Letters to print, in (shard, id) order, with their recipient's name and postal address: created
-- letters of approved waves due on the run's logical date. letters.py puts where the comment
-- stands either the next page of letters no print batch has claimed (keyset pagination on the
-- pending index; on PostgreSQL locked FOR UPDATE SKIP LOCKED, so that a concurrent run passes
-- them over) or the letters of one claimed batch (to write it again after a crash).
SELECT n.notification_id, n.reference, n.shard, n.wave_id, n.recipient_nir, n.send_date,
       r.prenom, COALESCE(r.nom_usage, r.nom_naissance) AS nom, r.sexe,
       r.adresse_ligne2, r.adresse_ligne3, r.adresse_ligne4, r.adresse_ligne5, r.code_postal, r.commune,
       r.address_returned, r.date_deces AS recipient_died
FROM notifications n
JOIN waves w ON w.wave_id = n.wave_id
JOIN persons r ON r.nir = n.recipient_nir
WHERE n.channel = :letter
  AND n.status = :created
  AND w.state = :approved
  AND w.send_date <= :logical_date
  /* which letters */
ORDER BY n.shard, n.notification_id
LIMIT :limit
