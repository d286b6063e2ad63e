"""Planner statistics after our own bulk writes (PostgreSQL): each intake, the planning of a wave,
space creation and decisions end by analysing the tables they filled, in the same run, so that
the next stage is never planned from a table PostgreSQL takes for empty. Read from
pg_stat_user_tables (manual ANALYZE only: analyze_count, not autoanalyze_count) of the test's
fresh database, before and after each step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.decisions import load_decisions
from enrolment.spaces import create_due_spaces
from mes_rollout.db import get_engine, make_engine, upgrade
from migration.intake import load_dmp_extract
from tests.enrolment.builders import decision, load_people, plan_wave, send_wave, write_decisions
from tests.factories import make_nir, person_row
from tests.migration.factories import ExtractBuilder

pytestmark = pytest.mark.postgres

SEND = dt.date(2022, 1, 31)
CREATION_DAY = dt.date(2022, 3, 1)
NOW = dt.datetime(2022, 3, 1, 5, tzinfo=dt.UTC)


@pytest.fixture
def pg(postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    monkeypatch.setenv("MES_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_ANALYZE_AFTER_WRITES", raising=False)
    get_engine.cache_clear()
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()
    get_engine.cache_clear()


def people(count: int, first: int = 1) -> list[dict[str, str]]:
    """`count` people with NIRs of their own (the factories' shared counter wraps at 1000)."""
    return [person_row(nir=make_nir(order=first + index)) for index in range(count)]


def analyses(engine: Engine) -> dict[str, int]:
    """Manual ANALYZE count of every table of the database (a new transaction: fresh stats)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = connection.execute(text("SELECT relname, analyze_count FROM pg_stat_user_tables")).all()
    return {str(name): int(count) for name, count in rows}


def analysed_since(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {table for table, count in after.items() if count > before.get(table, 0)}


def test_register_intake_analyses_persons_on_a_first_and_a_later_load(pg: Engine, tmp_path: Path) -> None:
    before = analyses(pg)
    persons = people(30)
    load_people(pg, persons, tmp_path / "register")
    after_first = analyses(pg)
    assert "persons" in analysed_since(before, after_first)
    with pg.connect() as connection:
        last = connection.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'persons'")
        ).scalar_one()
    assert last is not None
    load_people(pg, [*persons, *people(1, first=31)], tmp_path / "register")  # a later load: the upsert path
    assert "persons" in analysed_since(after_first, analyses(pg))


def test_dmp_intake_analyses_what_it_staged(pg: Engine, tmp_path: Path) -> None:
    person = people(1)[0]
    load_people(pg, [person], tmp_path / "register")
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    builder.add_document(dmp_id)
    before = analyses(pg)
    load_dmp_extract(pg, builder.write())
    assert {"dmp_records", "dmp_documents"} <= analysed_since(before, analyses(pg))


def test_planning_decisions_and_space_creation_analyse_what_they_wrote(pg: Engine, tmp_path: Path) -> None:
    persons = people(12)
    load_people(pg, persons, tmp_path / "register")

    before = analyses(pg)
    plan_wave(pg, tmp_path / "var", "W1", ["01"], SEND)
    planned = analysed_since(before, analyses(pg))
    assert {"wave_departements", "wave_cohort", "enrolments", "notifications", "notification_members"} <= planned

    assert send_wave(pg, "W1", SEND) == 12
    before = analyses(pg)
    decisions = write_decisions(
        tmp_path / "decisions.csv", [decision("D1", persons[0]["nir"], "opposition", "2022-02-10T10:00:00+01:00")]
    )
    summary = load_decisions(pg, decisions, as_of=dt.date(2022, 2, 10), now=NOW)
    assert summary.applied == 1
    assert {"decisions", "enrolments"} <= analysed_since(before, analyses(pg))

    before = analyses(pg)
    created = create_due_spaces(pg, CREATION_DAY, run_id="creation", now=NOW)
    assert created["spaces_created"] == 11
    assert {"spaces", "enrolments"} <= analysed_since(before, analyses(pg))


def test_the_statistics_step_can_be_turned_off(pg: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MES_ANALYZE_AFTER_WRITES", "0")
    before = analyses(pg)
    load_people(pg, people(5), tmp_path / "register")
    assert "persons" not in analysed_since(before, analyses(pg))
