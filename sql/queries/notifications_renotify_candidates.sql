-- People left unreachable in an approved, due wave whose recipient (themselves, or their legal
-- representative) now has a usable channel: an email that has not bounced, or an address the
-- register accepts that has not come back (NPAI). Both the person and the recipient are alive.
-- previous_messages tells re-notifications of one recipient in one wave apart (ids are derived
-- from it); last_notification_id is the message the new one follows.
SELECT e.nir,
       e.wave_id,
       r.nir AS recipient_nir,
       r.email, r.email_bounced, r.address_returned,
       r.adresse_ligne2, r.adresse_ligne3, r.adresse_ligne4, r.adresse_ligne5, r.code_postal, r.commune,
       (SELECT COUNT(*) FROM notifications n
         WHERE n.wave_id = e.wave_id AND n.recipient_nir = r.nir) AS previous_messages,
       (SELECT n.notification_id FROM notifications n
         WHERE n.wave_id = e.wave_id AND n.recipient_nir = r.nir
         ORDER BY n.created_at DESC, n.notification_id DESC LIMIT 1) AS last_notification_id
FROM enrolments e
JOIN waves w ON w.wave_id = e.wave_id
JOIN persons p ON p.nir = e.nir
JOIN persons r ON r.nir = COALESCE(e.recipient_nir, e.nir)
WHERE e.state = :unreachable
  AND w.state = :approved
  AND w.send_date <= :logical_date
  AND p.date_deces IS NULL
  AND r.date_deces IS NULL
  AND ((r.email IS NOT NULL AND r.email_bounced = FALSE)
       OR (r.address_problem IS NULL AND r.code_postal IS NOT NULL AND r.address_returned = FALSE))
ORDER BY e.wave_id, r.nir, e.nir
