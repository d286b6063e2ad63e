"""The weekly wave after the rollout calendar: its request, when it is due, and when it needs no operator.

After the last wave of the rollout plan (enrolment/data/rollout_plan.csv), people keep arriving:
newborns, the newly insured, people who moved into a département after its wave, minors whose
representative the register fixed, and people left unreachable whose recipient the register gave
a new email or address. Each week a wave of the ordinary kind (enrolment_cohort.sql, planning,
approval, sending) takes them: its scope is every département whose calendar wave is past, its id
the ISO week of its send date. The cohort query takes only people in no wave yet or left
unreachable, so nobody already told (planned, notified, opposed, created, closed, deceased) is
told again; an unreachable person is told again in it with a new message, a new code and, once
it is sent, a new window (this wave is the only path that tells someone again).
A wave of at most MES_WEEKLY_AUTO_APPROVE_CAP messages is approved without an operator; a larger
one waits for the approval step of enrolment_wave like any wave.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from enrolment.plan import DEFAULT_PLAN, read_plan
from enrolment.register import DEPARTEMENTS
from enrolment.waves import DEFAULT_RECIPIENT_CAP, Wave, WaveRequest, departement_order
from mes_rollout.constants import WaveState

WEEKLY_WEEKDAY = 0  # Monday: the rollout calendar's last wave (28 March 2022) was one too
AUTO_APPROVER = "auto-approval (MES_WEEKLY_AUTO_APPROVE_CAP)"


def weekly_wave_id(send_date: dt.date) -> str:
    """One weekly wave per ISO week: `weekly-2022-W14` for any day of the week of 4 April 2022."""
    year, week, _ = send_date.isocalendar()
    return f"weekly-{year}-W{week:02d}"


def calendar_end(plan_file: Path = DEFAULT_PLAN) -> dt.date:
    """The day of the plan's last wave."""
    return max(wave.day for wave in read_plan(plan_file))


def past_departements(send_date: dt.date, plan_file: Path = DEFAULT_PLAN) -> tuple[str, ...]:
    """Every département whose calendar wave is past on send_date: all its plan days before it (a
    département cut over two days waits for the second); the pilots, enrolled in 2021 and not in
    the plan, are past from the start."""
    pending = {code for wave in read_plan(plan_file) if wave.day >= send_date for code in wave.departements}
    return tuple(sorted(DEPARTEMENTS - pending, key=departement_order))


def weekly_request(send_date: dt.date, params: Mapping[str, Any], plan_file: Path = DEFAULT_PLAN) -> WaveRequest:
    """The week's wave: derived from the day, the cap on recipients from the run's Params."""
    cap = params.get("recipient_cap")
    return WaveRequest.from_params(
        {
            "wave_id": weekly_wave_id(send_date),
            "departements": list(past_departements(send_date, plan_file)),
            "send_date": send_date.isoformat(),
            "recipient_cap": DEFAULT_RECIPIENT_CAP if cap in (None, "") else cap,
        },
        send_date,
    )


def weekly_wave_due(connection: Connection, day: dt.date) -> bool:
    """`advance`'s check: the weekly wave runs on its weekday, once the calendar's waves are over."""
    del connection  # the calendar alone says it
    return day.weekday() == WEEKLY_WEEKDAY and day > calendar_end()


def messages_of(wave: Wave) -> int:
    """The messages a planned wave would send (what the cap of automatic approval counts)."""
    return int(wave.counts.get("recipients", {}).get("total", 0))


def auto_approvable(wave: Wave, cap: int) -> bool:
    """A weekly wave waiting for approval with at most `cap` messages needs no operator."""
    return wave.state == WaveState.AWAITING_APPROVAL and messages_of(wave) <= cap
