-- The shards that hold emails to send (created) or cut short by a crash (sending), for a run.
SELECT DISTINCT n.shard
FROM notifications n
JOIN waves w ON w.wave_id = n.wave_id
WHERE n.channel = :email
  AND n.status IN (:created, :sending)
  AND w.state = :approved
  AND w.send_date <= :logical_date
ORDER BY n.shard
