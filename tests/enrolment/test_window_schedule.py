"""The opt-out window as a dated setting: one month for the messages sent before 1 April 2022,
six weeks from that day on. A change never moves a window already running: every deadline comes
from its own message's send date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.window import last_day_to_oppose, opt_out_deadline, window_for, window_line
from mes_rollout.config import ConfigError, OptOutWindow, load_settings
from mes_rollout.db import as_datetime
from tests.enrolment.builders import load_people, plan_wave, send_wave
from tests.factories import person_row

DECREE = OptOutWindow.parse("P1M;2022-04-01=P6W")
UTC = dt.UTC


def test_the_setting_reads_a_first_length_and_dated_changes() -> None:
    assert load_settings({"MES_OPT_OUT_WINDOW": "P1M"}).opt_out_window == OptOutWindow(1, 0, 0)
    assert DECREE == OptOutWindow(1, 0, 0, ((dt.date(2022, 4, 1), OptOutWindow(0, 6, 0)),))
    assert str(DECREE) == "P1M;2022-04-01=P6W"
    assert str(OptOutWindow.parse(" p1m ; 2022-04-01 = p6w ; 2023-01-01=P2M ")) == "P1M;2022-04-01=P6W;2023-01-01=P2M"
    for bad in ("P1M;2022-04-01", "P1M;01/04/2022=P6W", "P1M;2022-04-01=6W", "P1M;2022-04-01=P6W;2022-04-01=P2M", "2022-04-01=P6W"):
        with pytest.raises(ConfigError):
            OptOutWindow.parse(bad)
    with pytest.raises(ConfigError):
        load_settings({"MES_WEEKLY_AUTO_APPROVE_CAP": "-1"})
    assert load_settings({}).weekly_auto_approve_cap == 20_000


def test_a_message_gets_the_window_of_its_send_date_across_the_change() -> None:
    assert window_for(dt.date(2022, 3, 31), DECREE) == OptOutWindow(1, 0, 0)
    assert window_for(dt.date(2022, 4, 1), DECREE) == OptOutWindow(0, 6, 0)
    # Sent 28 March: the window runs across 1 April and keeps its month (28 April, not 9 May).
    assert last_day_to_oppose(dt.date(2022, 3, 28), DECREE) == dt.date(2022, 4, 28)
    # Sent 31 March: one month, clamped to 30 April.
    assert last_day_to_oppose(dt.date(2022, 3, 31), DECREE) == dt.date(2022, 4, 30)
    # Sent 1 April and 4 April: six weeks.
    assert last_day_to_oppose(dt.date(2022, 4, 1), DECREE) == dt.date(2022, 5, 13)
    assert last_day_to_oppose(dt.date(2022, 4, 4), DECREE) == dt.date(2022, 5, 16)
    # The deadline instant: the end of the last day in Paris (summer time: UTC+2).
    assert opt_out_deadline(dt.date(2022, 3, 31), DECREE) == dt.datetime(2022, 4, 30, 21, 59, 59, 999_999, tzinfo=UTC)
    assert opt_out_deadline(dt.date(2022, 4, 1), DECREE) == dt.datetime(2022, 5, 13, 21, 59, 59, 999_999, tzinfo=UTC)
    assert window_line(dt.date(2022, 4, 4), DECREE) == (
        "Opt-out window P6W (setting P1M;2022-04-01=P6W) for messages sent on 2022-04-04: last day to oppose 2022-05-16."
    )


def test_windows_started_across_the_change_keep_their_own_length(engine: Engine, tmp_path: Path) -> None:
    before, after = person_row(email="a@example.fr"), person_row(departement="02", email="b@example.fr")
    load_people(engine, [before, after], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W-march", ["01"], dt.date(2022, 3, 31))
    plan_wave(engine, tmp_path / "var", "W-april", ["02"], dt.date(2022, 4, 1))
    assert send_wave(engine, "W-march", dt.date(2022, 3, 31), DECREE) == 1
    assert send_wave(engine, "W-april", dt.date(2022, 4, 1), DECREE) == 1
    with engine.connect() as connection:
        deadlines = {nir: as_datetime(value) for nir, value in connection.execute(text("SELECT nir, opt_out_deadline FROM enrolments"))}
    assert deadlines == {
        before["nir"]: dt.datetime(2022, 4, 30, 21, 59, 59, 999_999, tzinfo=UTC),
        after["nir"]: dt.datetime(2022, 5, 13, 21, 59, 59, 999_999, tzinfo=UTC),
    }
