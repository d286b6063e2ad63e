"""Waves: the operator's request, the wave row as read, and the outcomes of a wave's cohort.

planning -> awaiting_approval -> approved | rejected; a dry run is a wave row in state dry_run
(counted only: nothing is written for the people), which a real run of the same id may take over.
Every write of a wave (its registration, counts, approval, rejection) is in enrolment/dao.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, text

from enrolment.register_fields import DEPARTEMENTS
from mes_rollout.constants import WaveState
from mes_rollout.db import as_date

WAVE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_RECIPIENT_CAP = 2_000_000
_WAVE_ID = re.compile(WAVE_ID_PATTERN)


class WaveRequestError(ValueError):
    """The operator's request cannot be planned as given (the message says why)."""


class CohortOutcome(StrEnum):
    """What the wave's selection did with a person (wave_cohort.outcome)."""

    NOTIFY = "notify"  # told in this wave, by email or letter, directly or through a representative
    UNREACHABLE = "unreachable"  # no usable email nor printable address for the recipient
    EXCLUDED = "excluded"  # left out with a WaveExclusion reason (wave_cohort.reason)


def clean_wave_id(value: object) -> str:
    """The wave id of a request or a run's Params, stripped and checked: the one place that does it."""
    wave_id = str(value or "").strip()
    if not _WAVE_ID.match(wave_id):
        raise WaveRequestError(f"wave id {wave_id!r} must match {WAVE_ID_PATTERN}")
    return wave_id


def departement_order(code: str) -> tuple[int, str]:
    """Numeric order of département codes: 01..19, 2A, 2B, 21..95, 971..976."""
    if code in ("2A", "2B"):
        return (20, code)
    return (int(code), "")


@dataclass(frozen=True)
class WaveRequest:
    """What the operator asks for: validated, départements deduplicated in numeric order."""

    wave_id: str
    departements: tuple[str, ...]
    send_date: dt.date
    recipient_cap: int = DEFAULT_RECIPIENT_CAP
    dry_run: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any], logical_day: dt.date) -> WaveRequest:
        """From the DAG's Params (or the CLI); the send date defaults to the run's logical day."""
        wave_id = clean_wave_id(params.get("wave_id"))
        raw = params.get("departements") or []
        if isinstance(raw, str):
            raw = raw.split(",")
        departements = {str(code).strip().upper() for code in raw if str(code).strip()}
        departements = {code.zfill(2) if code.isdigit() and len(code) == 1 else code for code in departements}
        unknown = sorted(departements - DEPARTEMENTS)
        if unknown:
            raise WaveRequestError(f"unknown département(s): {', '.join(unknown)}")
        if not departements:
            raise WaveRequestError("a wave needs at least one département")
        send = params.get("send_date")
        try:
            send_date = dt.date.fromisoformat(str(send)) if send else logical_day
        except ValueError:
            raise WaveRequestError(f"send date {send!r} is not YYYY-MM-DD") from None
        cap = params.get("recipient_cap")
        recipient_cap = DEFAULT_RECIPIENT_CAP if cap in (None, "") else int(cap)
        if recipient_cap < 1:
            raise WaveRequestError("the cap on recipients must be at least 1")
        return cls(
            wave_id,
            tuple(sorted(departements, key=departement_order)),
            send_date,
            recipient_cap,
            bool(params.get("dry_run", False)),
        )

    def as_conf(self) -> dict[str, Any]:
        """The DAG run conf that asks for this wave."""
        return {
            "wave_id": self.wave_id,
            "departements": list(self.departements),
            "send_date": self.send_date.isoformat(),
            "recipient_cap": self.recipient_cap,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class Wave:
    wave_id: str
    departements: tuple[str, ...]
    send_date: dt.date
    recipient_cap: int
    dry_run: bool
    state: WaveState
    counts: dict[str, Any]
    decided_by: str | None


def _counts(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return dict(json.loads(value))


def load_wave(connection: Connection, wave_id: str) -> Wave | None:
    row = connection.execute(
        text(
            "SELECT wave_id, departements, send_date, recipient_cap, dry_run, state, counts, decided_by"
            " FROM waves WHERE wave_id = :wave_id"
        ),
        {"wave_id": wave_id},
    ).first()
    if row is None:
        return None
    send_date = as_date(row.send_date)
    assert send_date is not None
    return Wave(
        row.wave_id,
        tuple(code for code in row.departements.split(",") if code),
        send_date,
        int(row.recipient_cap) if row.recipient_cap is not None else DEFAULT_RECIPIENT_CAP,
        bool(row.dry_run),
        WaveState(row.state),
        _counts(row.counts),
        row.decided_by,
    )
