-- Writes one rollout_summary_waves row per wave: the wave as recorded and its funnel, each count
-- from one GROUP BY per table (cohort, messages, enrolments, spaces). Every state, status, channel
-- and outcome compared is a parameter bound from its enum (mes_rollout/rollout_summary.py).
INSERT INTO rollout_summary_waves (
    wave_id, state, departements, send_date, recipient_cap, dry_run, run_id, counts, decided_by,
    decided_at, decision_comment, created_at, selected, routed_email, routed_letter,
    unreachable_at_selection, excluded, emails, emails_sent, emails_delivered, emails_bounced,
    emails_waiting, emails_cancelled, letters, letters_posted, letters_returned, letters_fallback, letters_cancelled,
    people_planned, people_notified, people_unreachable, people_opposed, people_late_opposed,
    people_created, people_closed, people_deceased, spaces_activated, spaces_automatic, refreshed_at
)
SELECT
    w.wave_id, w.state, w.departements, w.send_date, w.recipient_cap, w.dry_run, w.run_id, w.counts,
    w.decided_by, w.decided_at, w.decision_comment, w.created_at,
    COALESCE(c.selected, 0), COALESCE(c.routed_email, 0), COALESCE(c.routed_letter, 0),
    COALESCE(c.unreachable, 0), COALESCE(c.excluded, 0),
    COALESCE(n.emails, 0), COALESCE(n.emails_sent, 0), COALESCE(n.emails_delivered, 0),
    COALESCE(n.emails_bounced, 0), COALESCE(n.emails_waiting, 0), COALESCE(n.emails_cancelled, 0),
    COALESCE(n.letters, 0), COALESCE(n.letters_posted, 0), COALESCE(n.letters_returned, 0),
    COALESCE(n.letters_fallback, 0), COALESCE(n.letters_cancelled, 0),
    COALESCE(e.planned, 0), COALESCE(e.notified, 0), COALESCE(e.unreachable, 0), COALESCE(e.opposed, 0),
    COALESCE(e.late_opposed, 0), COALESCE(e.created, 0), COALESCE(e.closed, 0), COALESCE(e.deceased, 0),
    COALESCE(s.activated, 0), COALESCE(s.automatic, 0),
    :now
FROM waves AS w
LEFT JOIN (
    SELECT wave_id,
           COUNT(*) AS selected,
           SUM(CASE WHEN outcome = :outcome_notify AND channel = :email THEN 1 ELSE 0 END) AS routed_email,
           SUM(CASE WHEN outcome = :outcome_notify AND channel = :letter THEN 1 ELSE 0 END) AS routed_letter,
           SUM(CASE WHEN outcome = :outcome_unreachable THEN 1 ELSE 0 END) AS unreachable,
           SUM(CASE WHEN outcome = :outcome_excluded THEN 1 ELSE 0 END) AS excluded
    FROM wave_cohort
    GROUP BY wave_id
) AS c ON c.wave_id = w.wave_id
LEFT JOIN (
    SELECT wave_id,
           SUM(CASE WHEN channel = :email THEN 1 ELSE 0 END) AS emails,
           SUM(CASE WHEN channel = :email AND sent_at IS NOT NULL THEN 1 ELSE 0 END) AS emails_sent,
           SUM(CASE WHEN channel = :email AND status = :delivered THEN 1 ELSE 0 END) AS emails_delivered,
           SUM(CASE WHEN channel = :email AND status IN (:permanent_failure, :technical_failure) THEN 1 ELSE 0 END)
               AS emails_bounced,
           SUM(CASE WHEN channel = :email AND status IN (:created, :sending, :temporary_failure) THEN 1 ELSE 0 END)
               AS emails_waiting,
           SUM(CASE WHEN channel = :email AND status = :cancelled THEN 1 ELSE 0 END) AS emails_cancelled,
           SUM(CASE WHEN channel = :letter THEN 1 ELSE 0 END) AS letters,
           SUM(CASE WHEN channel = :letter AND status IN (:posted, :returned) THEN 1 ELSE 0 END) AS letters_posted,
           SUM(CASE WHEN channel = :letter AND status = :returned THEN 1 ELSE 0 END) AS letters_returned,
           SUM(CASE WHEN channel = :letter AND replaces_notification_id IS NOT NULL THEN 1 ELSE 0 END)
               AS letters_fallback,
           SUM(CASE WHEN channel = :letter AND status = :cancelled THEN 1 ELSE 0 END) AS letters_cancelled
    FROM notifications
    GROUP BY wave_id
) AS n ON n.wave_id = w.wave_id
LEFT JOIN (
    SELECT wave_id,
           SUM(CASE WHEN state = :planned THEN 1 ELSE 0 END) AS planned,
           SUM(CASE WHEN state = :notified THEN 1 ELSE 0 END) AS notified,
           SUM(CASE WHEN state = :unreachable THEN 1 ELSE 0 END) AS unreachable,
           SUM(CASE WHEN state = :opposed THEN 1 ELSE 0 END) AS opposed,
           SUM(CASE WHEN state = :late_opposed THEN 1 ELSE 0 END) AS late_opposed,
           SUM(CASE WHEN state = :created_state THEN 1 ELSE 0 END) AS created,
           SUM(CASE WHEN state = :closed THEN 1 ELSE 0 END) AS closed,
           SUM(CASE WHEN state = :deceased THEN 1 ELSE 0 END) AS deceased
    FROM enrolments
    GROUP BY wave_id
) AS e ON e.wave_id = w.wave_id
LEFT JOIN (
    SELECT en.wave_id,
           SUM(CASE WHEN sp.creation_cause = :activation THEN 1 ELSE 0 END) AS activated,
           SUM(CASE WHEN sp.creation_cause = :automatic THEN 1 ELSE 0 END) AS automatic
    FROM spaces AS sp
    JOIN enrolments AS en ON en.nir = sp.nir
    GROUP BY en.wave_id
) AS s ON s.wave_id = w.wave_id
