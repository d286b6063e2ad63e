"""A command's `--date` left out is the day the command runs (in Paris), taken when it runs, not
when the parser is built."""

from __future__ import annotations

import datetime as dt

import pytest

from console.cli import build_parser
from console.commands import TODAY, resolve_defaults
from mes_rollout.runday import business_day


@pytest.mark.parametrize(
    "argv",
    [["load", "register", "register.csv"], ["load", "decisions", "decisions.csv"], ["migrate"]],
)
def test_a_date_left_out_is_resolved_when_the_command_runs(argv: list[str]) -> None:
    parsed = build_parser().parse_args(argv)
    assert parsed.date is TODAY  # nothing fixed when the parser was built
    before = business_day(dt.datetime.now(dt.UTC))
    resolved = resolve_defaults(parsed).date
    after = business_day(dt.datetime.now(dt.UTC))
    assert isinstance(resolved, dt.date) and before <= resolved <= after


def test_a_date_given_is_kept() -> None:
    parsed = resolve_defaults(build_parser().parse_args(["load", "register", "r.csv", "--date", "2022-01-28"]))
    assert parsed.date == dt.date(2022, 1, 28)


def test_the_paris_day_is_not_the_utc_day_late_in_the_evening() -> None:
    # 23:30 UTC on 28 February 2022 is already 1 March in Paris (UTC+1 in winter).
    assert business_day(dt.datetime(2022, 2, 28, 23, 30, tzinfo=dt.UTC)) == dt.date(2022, 3, 1)
    assert business_day(dt.datetime(2022, 7, 31, 22, 0, tzinfo=dt.UTC)) == dt.date(2022, 8, 1)  # UTC+2 in summer
    assert business_day(dt.datetime(2022, 7, 31, 21, 59, tzinfo=dt.UTC)) == dt.date(2022, 7, 31)
