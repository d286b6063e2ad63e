"""The rollout calendar: the packaged plan is the generator's output and keeps every rule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from enrolment.plan import (
    DAILY_LIMIT,
    DEFAULT_PLAN,
    MESSAGES_PER_PERSON,
    PILOT_DEPARTEMENTS,
    default_plan,
    easter_sunday,
    french_public_holidays,
    generate_plan,
    read_plan,
    read_population,
    wave_of_day,
    working_days,
    write_plan,
)
from enrolment.register import DEPARTEMENTS
from enrolment.waves import departement_order


def test_the_packaged_plan_is_the_generated_one(tmp_path: Path) -> None:
    assert read_plan(DEFAULT_PLAN) == read_plan(write_plan(default_plan(), tmp_path / "plan.csv"))


def test_waves_run_every_working_day_from_31_january_to_28_march() -> None:
    days = [wave.day for wave in read_plan(DEFAULT_PLAN)]
    assert days[0] == dt.date(2022, 1, 31) and days[-1] == dt.date(2022, 3, 28)
    assert len(days) == 41 and len(set(days)) == 41
    assert all(day.weekday() < 5 for day in days)
    everyday = {dt.date(2022, 1, 31) + dt.timedelta(days=n) for n in range(57)}
    assert {day for day in everyday if day.weekday() < 5} == set(days)  # no public holiday in the stretch


def test_every_departement_but_the_pilots_is_planned_once_in_numeric_order() -> None:
    plan = read_plan(DEFAULT_PLAN)
    sequence: list[str] = []
    for wave in plan:
        for code in wave.departements:
            if not sequence or sequence[-1] != code:
                sequence.append(code)  # a département cut by a day boundary is listed on both days
    assert sequence == sorted(DEPARTEMENTS - set(PILOT_DEPARTEMENTS), key=departement_order)
    assert {"31", "44", "80"}.isdisjoint(code for wave in plan for code in wave.departements)
    assert sequence.index("19") + 1 == sequence.index("2A") and sequence.index("2B") + 1 == sequence.index("21")


def test_no_day_is_estimated_above_two_million_messages_and_each_carries_the_cap() -> None:
    population = read_population()
    plan = default_plan()
    estimates = {code: population[code] * MESSAGES_PER_PERSON for code in population}
    assert all(wave.estimated_messages <= DAILY_LIMIT for wave in plan)
    assert all(wave.recipient_cap == DAILY_LIMIT for wave in read_plan(DEFAULT_PLAN))
    # the estimates of the days add up to the départements': nobody is left out
    assert abs(sum(wave.estimated_messages for wave in plan) - sum(v for c, v in estimates.items() if c not in PILOT_DEPARTEMENTS)) < 50
    # Nord (59, about 2 million messages) is larger than a day: it spans several
    assert sum("59" in wave.departements for wave in plan) >= 2


def test_a_plan_is_balanced_whatever_the_population() -> None:
    population = {f"{n:02d}": 100_000 * (n % 7 + 1) for n in range(1, 20)}
    days = working_days(dt.date(2022, 3, 1), dt.date(2022, 3, 10))
    plan = generate_plan(population, days, skip=())
    assert len(plan) == len(days) == 8
    assert max(wave.estimated_messages for wave in plan) - min(wave.estimated_messages for wave in plan) <= 1


def test_french_holidays_and_the_day_lookup(tmp_path: Path) -> None:
    assert easter_sunday(2022) == dt.date(2022, 4, 17) and easter_sunday(2024) == dt.date(2024, 3, 31)
    assert {dt.date(2022, 4, 18), dt.date(2022, 5, 26), dt.date(2022, 6, 6), dt.date(2022, 7, 14)} <= french_public_holidays(2022)
    assert dt.date(2022, 4, 18) not in working_days(dt.date(2022, 4, 15), dt.date(2022, 4, 19))
    first = wave_of_day(dt.date(2022, 1, 31))
    assert first is not None and first.departements[0] == "01" and first.as_conf()["send_date"] == "2022-01-31"
    assert wave_of_day(dt.date(2022, 2, 5)) is None  # a Saturday
    edited = tmp_path / "edited.csv"
    edited.write_text("day;wave_id;departements\n2022-02-05;catch-up;01,02\n", encoding="utf-8")
    wave = wave_of_day(dt.date(2022, 2, 5), edited)
    assert wave is not None and wave.departements == ("01", "02") and wave.recipient_cap == DAILY_LIMIT
