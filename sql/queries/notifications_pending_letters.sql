-- The next letters to print, in (shard, id) order (keyset pagination on the pending index):
-- created letters of approved waves due on the run's logical date, with their recipient's name
-- and postal address.
SELECT n.notification_id, n.shard, n.wave_id, n.recipient_nir, n.send_date,
       r.prenom, COALESCE(r.nom_usage, r.nom_naissance) AS nom,
       r.adresse_ligne2, r.adresse_ligne3, r.adresse_ligne4, r.adresse_ligne5, r.code_postal, r.commune,
       r.address_returned
FROM notifications n
JOIN waves w ON w.wave_id = n.wave_id
JOIN persons r ON r.nir = n.recipient_nir
WHERE n.channel = :letter
  AND n.status = :created
  AND w.state = :approved
  AND w.send_date <= :logical_date
  AND (n.shard, n.notification_id) > (:after_shard, :after_id)
ORDER BY n.shard, n.notification_id
LIMIT :limit
