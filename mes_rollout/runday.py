""""Today" of a run: the one function that turns a DAG run or a command into the business day."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


def business_day(moment: dt.datetime | dt.date) -> dt.date:
    """The calendar day in Paris of a moment: "today" for every business decision."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: a logical date carries its offset")
        local = moment.astimezone(PARIS)
        return dt.date(local.year, local.month, local.day)  # a plain date, even from a pendulum time
    return dt.date(moment.year, moment.month, moment.day)


def run_day(logical_date: dt.datetime | dt.date | None, run_after: dt.datetime | None = None) -> dt.date:
    """The business day of a DAG run: its logical date in Paris; a run without one (triggered by an
    Asset, or manually without a date) stands on the moment it was due to run (`run_after`)."""
    moment = logical_date or run_after
    if moment is None:
        raise ValueError("a run needs a logical date or a run_after time")
    return business_day(moment)


def context_day(context: Any) -> dt.date:
    """The business day of the task's running DAG run, from Airflow's task context."""
    dag_run = context["dag_run"]
    return run_day(context.get("logical_date"), getattr(dag_run, "run_after", None))


def today() -> dt.date:
    """The day in Paris at the moment of the call: the default date of a command run by hand."""
    return business_day(dt.datetime.now(dt.UTC))
