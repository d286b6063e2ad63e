-- The next emails of one status to hand to the relay, in id order (keyset pagination): the
-- waves must be approved and due on the run's logical date, and no live sender may hold the
-- message (a created one has no lease; one in `sending` is taken over only once its sender's
-- lease has passed). dao.py appends the shard condition where the comment stands, and on
-- PostgreSQL locks the rows it returns (FOR UPDATE SKIP LOCKED: a row another sender is
-- claiming right now is passed over, not waited for).
SELECT n.notification_id, n.reference, n.wave_id, n.recipient_nir, n.email, n.attempts, n.send_date, n.status,
       n.status_detail,
       r.prenom, COALESCE(r.nom_usage, r.nom_naissance) AS nom, r.sexe
FROM notifications n
JOIN waves w ON w.wave_id = n.wave_id
LEFT JOIN persons r ON r.nir = n.recipient_nir
WHERE n.channel = :email
  AND n.status = :status
  AND (n.lease_until IS NULL OR n.lease_until < :now)
  AND w.state = :approved
  AND w.send_date <= :logical_date
  AND n.notification_id > :after_id
  /* more conditions */
ORDER BY n.notification_id
LIMIT :limit
