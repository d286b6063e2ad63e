"""The 68 million projection's arithmetic, pinned on literal inputs."""

from __future__ import annotations

import pytest

from console.projection import BENCHMARK_RATES, STAGES, Rollout, markdown_table, project

# A small rollout whose every figure is easy to check by hand.
SMALL = Rollout(
    persons=1_000_000,
    notifications_per_day=50_000,
    working_days=20,
    email_share=0.5,
    dmps=100_000,
    documents_per_dmp=10,
    register_loads=2,
    decisions_per_person=0.05,
    email_bounce=0.1,
    letter_returned=0.1,
    spaces_per_person=0.9,
    hours_per_working_day=0.25,
    goal_machine_hours=20.0,
)
RATES = {stage: 100.0 for stage in STAGES} | {"migration": 40.0}


def test_the_national_volumes_follow_the_brief() -> None:
    volumes = Rollout().volumes()
    assert volumes["emails"] == pytest.approx(44_800_000)  # 1.6 M a day x 40 days x 70 %
    assert volumes["letters"] == pytest.approx(19_200_000 + 896_000)  # 30 %, and a letter per bounced email
    assert volumes["migration"] == pytest.approx(120_000_000)  # 10 M DMPs x 12 documents
    assert volumes["planning"] == 68_000_000
    assert volumes["intake"] == 3 * 68_000_000


def test_each_stage_is_its_volume_over_its_rate_and_the_total_their_sum() -> None:
    projection = project(RATES, SMALL)
    seconds = {stage.stage: round(stage.machine_hours * 3600, 6) for stage in projection.stages}
    assert seconds == {
        "intake": 20_000,  # 2 loads x 1 M rows at 100/s
        "dmp_intake": 11_000,  # 100 000 DMPs + 1 M documents
        "planning": 10_000,
        "emails": 5_000,  # 1 M messages, half by email
        "letters": 5_500,  # the other half, and 50 000 fallback letters
        "decisions": 500,
        "feedback": 5_550,  # one row per email, and the 10 % of letters returned
        "creation": 9_000,
        "migration": 25_000,  # 1 M documents at 40/s
    }
    assert projection.machine_hours * 3600 == pytest.approx(91_550)
    assert projection.dominant_stage == "migration"
    assert not projection.goal_met
    # 20 h minus the 66 550 s of the other stages leaves 5 450 s for 1 M documents.
    assert projection.dominant_rate_for_goal == pytest.approx(1_000_000 / 5_450)


def test_workers_for_a_day_round_up_to_finish_within_the_working_hours() -> None:
    projection = project(RATES, SMALL)
    # A sending day: 50 000 people planned, 25 000 emails, 27 500 letters, 25 000 feedback rows.
    assert projection.sending_day_hours * 3600 == pytest.approx(1_275)
    assert projection.sending_day_workers == 2  # 1 275 s in days of 900 s
    # The busiest day adds 45 000 spaces (450 s) and 50 000 documents at 40/s (1 250 s).
    assert projection.busiest_day_hours * 3600 == pytest.approx(2_975)
    assert projection.busiest_day_workers == 4


def test_a_benchmark_rate_replaces_the_measured_one_and_is_named() -> None:
    projection = project(RATES, SMALL, benchmarks={"migration": 100.0})
    migration = next(stage for stage in projection.stages if stage.stage == "migration")
    assert (migration.rate_source, migration.machine_hours * 3600) == ("benchmark", pytest.approx(10_000))
    assert projection.dominant_stage == "intake"
    assert {stage.rate_source for stage in projection.stages if stage.stage != "migration"} == {"simulation"}


def test_the_goal_met_needs_no_faster_stage() -> None:
    projection = project({stage: 1e9 for stage in STAGES})
    assert projection.goal_met and projection.dominant_rate_for_goal is None
    assert projection.sending_day_workers == 1


def test_the_other_stages_alone_over_the_goal_leave_no_rate_that_meets_it() -> None:
    projection = project(RATES, Rollout(**{**SMALL.__dict__, "goal_machine_hours": 10.0}))
    assert not projection.goal_met and projection.dominant_rate_for_goal is None


def test_a_stage_without_a_positive_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="no rate for stage creation"):
        project({stage: 1.0 for stage in STAGES if stage != "creation"})
    with pytest.raises(ValueError, match="stage emails"):
        project(RATES | {"emails": 0.0})


def test_the_benchmark_rates_are_the_figures_of_benchmarks_md() -> None:
    assert BENCHMARK_RATES == {
        "intake": 158_600.0,
        "planning": 11_513.0,
        "emails": 2_031.0,
        "letters": 829.0,
        "migration": 5_048.0,
    }
    table = markdown_table(project(RATES, SMALL))
    assert "| migration | 40 documents/s | simulation | 1 000 000 | 6.94 |" in table
    assert table.endswith("| **total** | | | | **25.43** |")
