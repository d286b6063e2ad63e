-- Writes rollout_summary_reasons: per wave, the people not told at selection by their
-- wave_cohort reason ('exclusion'), and the people left unreachable after a failure by their
-- enrolments.state_reason ('unreachable'). Codes are bound parameters.
INSERT INTO rollout_summary_reasons (wave_id, kind, reason, people)
SELECT wave_id, CAST(:kind_exclusion AS TEXT), COALESCE(reason, outcome), COUNT(*)
FROM wave_cohort
WHERE outcome IN (:outcome_unreachable, :outcome_excluded)
GROUP BY 1, 2, 3
UNION ALL
SELECT wave_id, CAST(:kind_unreachable AS TEXT), COALESCE(state_reason, CAST(:no_reason AS TEXT)), COUNT(*)
FROM enrolments
WHERE state = :unreachable
GROUP BY 1, 2, 3
