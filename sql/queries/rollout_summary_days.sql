-- Writes rollout_summary_days: the messages that went out, by the day they went (send_date),
-- wave and channel. An email went out when the relay took it (sent_at set), a letter when its
-- batch was posted (posted, or returned since). Codes are bound parameters.
INSERT INTO rollout_summary_days (day, wave_id, channel, messages)
SELECT send_date, wave_id, channel, COUNT(*)
FROM notifications
WHERE send_date IS NOT NULL
  AND ((channel = :email AND sent_at IS NOT NULL)
       OR (channel = :letter AND status IN (:posted, :returned)))
GROUP BY send_date, wave_id, channel
