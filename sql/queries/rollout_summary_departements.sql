-- Writes one rollout_summary_departements row per wave and département of its cohort: how the
-- selected people were routed, and (through their enrolment in that wave and their space) who
-- opposed and whose space was activated or created automatically. Codes are bound parameters.
INSERT INTO rollout_summary_departements (
    wave_id, departement, selected, routed_email, routed_letter, unreachable_at_selection, excluded,
    opposed, spaces_activated, spaces_automatic
)
SELECT
    c.wave_id,
    c.departement,
    COUNT(*),
    SUM(CASE WHEN c.outcome = :outcome_notify AND c.channel = :email THEN 1 ELSE 0 END),
    SUM(CASE WHEN c.outcome = :outcome_notify AND c.channel = :letter THEN 1 ELSE 0 END),
    SUM(CASE WHEN c.outcome = :outcome_unreachable THEN 1 ELSE 0 END),
    SUM(CASE WHEN c.outcome = :outcome_excluded THEN 1 ELSE 0 END),
    SUM(CASE WHEN e.state IN (:opposed, :late_opposed) THEN 1 ELSE 0 END),
    SUM(CASE WHEN s.creation_cause = :activation THEN 1 ELSE 0 END),
    SUM(CASE WHEN s.creation_cause = :automatic THEN 1 ELSE 0 END)
FROM wave_cohort AS c
LEFT JOIN enrolments AS e ON e.nir = c.nir AND e.wave_id = c.wave_id
LEFT JOIN spaces AS s ON s.nir = e.nir
GROUP BY c.wave_id, c.departement
