-- The cohort of a wave, every person routed in one pass (wave planning and its dry run share it).
-- Eligible: residence département in the wave, alive on the send date, and in no wave yet, or
-- unreachable in an earlier one (a register update may have given them an email or an address).
-- Someone left unreachable by an earlier wave who still cannot be told is not in the cohort at
-- all: their enrolment stays with the wave that found them unreachable, and each weekly wave does
-- not write them again (nor audit them again).
-- Minors (born after the adult_born_by parameter) and people with a representative are told through the
-- representative, who must be a known living person. Channel of the recipient: email when usable
-- and not bounced, else a letter when the address is printable and not returned (NPAI), else
-- unreachable. Recipients are ranked by département (2A/2B as 20, in numeric order) then NIR: the
-- first recipient_cap are told, the others are left for a later wave (OVER_CAP). shard cuts the
-- told people into chunks of about shard_size, a recipient's people always in the same chunk.
-- Columns: wave_id, nir, recipient_nir, departement, outcome, channel, reason, shard.
-- Every state, channel, outcome and reason it writes or compares is a parameter bound from its
-- enum (enrolment/planning.py, _cohort_params): unreachable_state from EnrolmentState, email and
-- letter from Channel, outcome_* from enrolment.waves.CohortOutcome, exclusion_* from WaveExclusion.
WITH candidates AS (
    SELECT
        p.nir,
        p.departement,
        CASE WHEN p.nir_representant IS NOT NULL OR p.date_naissance > :adult_born_by
             THEN p.nir_representant ELSE p.nir END AS recipient_nir,
        CASE WHEN p.departement = '2A' THEN '20A' WHEN p.departement = '2B' THEN '20B'
             ELSE p.departement END AS departement_order,
        CASE WHEN e.nir IS NULL THEN 0 ELSE 1 END AS was_unreachable
    FROM persons AS p
    JOIN wave_departements AS wd ON wd.wave_id = :wave_id AND wd.departement = p.departement
    LEFT JOIN enrolments AS e ON e.nir = p.nir
    WHERE (p.date_deces IS NULL OR p.date_deces > :send_date)
      AND (e.nir IS NULL OR e.state = :unreachable_state)
),
routed AS (
    SELECT
        c.nir,
        c.departement,
        c.departement_order,
        c.recipient_nir,
        c.was_unreachable,
        CASE
            WHEN c.recipient_nir IS NULL THEN :exclusion_representative_missing
            WHEN r.nir IS NULL THEN :exclusion_representative_unknown
            WHEN r.date_deces IS NOT NULL THEN :exclusion_representative_deceased
        END AS exclusion,
        CASE
            WHEN r.email IS NOT NULL AND NOT r.email_bounced THEN :email
            WHEN r.address_problem IS NULL AND NOT r.address_returned THEN :letter
        END AS channel
    FROM candidates AS c
    LEFT JOIN persons AS r ON r.nir = c.recipient_nir
),
-- A recipient's rank and the people told up to them are window functions over the routed rows
-- themselves (a recipient's people share their exclusion and channel, which depend on the
-- recipient only), not an aggregate joined back onto every row: sorts, whatever the planner
-- estimates, never a nested loop of every person over every recipient.
keyed AS (
    SELECT
        rt.*,
        CASE WHEN rt.exclusion IS NULL AND rt.channel IS NOT NULL THEN 1 ELSE 0 END AS told,
        MIN(rt.departement_order) OVER (PARTITION BY rt.recipient_nir) AS recipient_order
    FROM routed AS rt
),
ranked AS (
    SELECT
        k.*,
        DENSE_RANK() OVER (PARTITION BY k.told ORDER BY k.recipient_order, k.recipient_nir) AS recipient_rank,
        COUNT(*) OVER (PARTITION BY k.told ORDER BY k.recipient_order, k.recipient_nir) AS people_through
    FROM keyed AS k
)
SELECT
    :wave_id AS wave_id,
    rk.nir,
    rk.recipient_nir,
    rk.departement,
    CASE
        WHEN rk.exclusion IS NOT NULL THEN :outcome_excluded
        WHEN rk.channel IS NULL THEN :outcome_unreachable
        WHEN rk.recipient_rank > :recipient_cap THEN :outcome_excluded
        ELSE :outcome_notify
    END AS outcome,
    rk.channel,
    CASE
        WHEN rk.exclusion IS NOT NULL THEN rk.exclusion
        WHEN rk.channel IS NULL THEN :exclusion_no_contact
        WHEN rk.recipient_rank > :recipient_cap THEN :exclusion_over_cap
    END AS reason,
    CASE
        WHEN rk.exclusion IS NULL AND rk.channel IS NOT NULL AND rk.recipient_rank <= :recipient_cap
        THEN (CAST(rk.people_through AS BIGINT) - 1) / :shard_size
        ELSE -1
    END AS shard
FROM ranked AS rk
WHERE rk.told = 1 OR rk.was_unreachable = 0
