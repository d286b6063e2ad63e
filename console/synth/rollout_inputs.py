"""The outside world's files during a simulated rollout: decisions.csv, feedback.csv, later register extracts.

Each file is drawn from what the pipeline has done so far (who was told and when, which messages
went out), as the website, the 3422 line, the email relay and the post would report it. Every
draw is a hash of the seed and the person's NIR (or the message's id), not a random stream: the
same person gets the same fate whichever file first sees them, so a file written again, or a run
with another calendar of files, tells the same story. References carry no NIR.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

from mes_rollout.constants import DecisionChannel, DecisionEvent, EnrolmentState, NotificationStatus
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.db import as_date, as_datetime

PARIS = ZoneInfo("Europe/Paris")
DECISIONS_HEADER = ("reference", "nir", "event", "received_at", "channel")
FEEDBACK_HEADER = ("notification_id", "status", "occurred_at", "detail")
_CHANNELS = tuple(DecisionChannel)
# How long after posting a letter that did not arrive comes back to the sender (NPAI).
LETTER_RETURN_DAYS = 6


@dataclass(frozen=True)
class OutsideRates:
    """How people, the relay and the post answer: shares of the people told, emails sent, letters posted."""

    opposition: float = 0.015  # within the window: no space
    activation: float = 0.03  # within the window: the space at once
    late_opposition: float = 0.003  # a few days after the automatic creation: the space is closed
    email_bounce: float = 0.02  # permanent failure reported by the relay: a fallback letter follows
    letter_returned: float = 0.015  # NPAI: the person becomes unreachable
    death_per_month: float = 0.001  # of the living, each month (France: about 0.08 %)
    email_share: float = 0.70  # of the people in the register (the generator gives more)


def draw(seed: int, key: str, purpose: str) -> float:
    """A number in [0, 1) fixed by the seed, the key (a NIR, a message id) and what it decides."""
    digest = hashlib.blake2b(f"{seed}/{purpose}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _reference(seed: int, nir: str, event: str) -> str:
    return "SIM-" + hashlib.blake2b(f"{seed}/{nir}/{event}".encode(), digest_size=10).hexdigest() + f"-{event[:3]}"


@dataclass(frozen=True)
class Decision:
    nir: str
    event: DecisionEvent
    received_at: dt.datetime
    late: bool = False  # after the window closed (the space exists by then)


def _received(day: dt.date, seed: int, nir: str) -> dt.datetime:
    """A working-hours moment of `day`, in Paris time (with its offset, as the contract requires)."""
    minutes = int(draw(seed, nir, "minute") * 10 * 60)
    return dt.datetime.combine(day, dt.time(8), tzinfo=PARIS) + dt.timedelta(minutes=minutes)


def fate(seed: int, nir: str, notified_on: dt.date, deadline: dt.date, rates: OutsideRates) -> Decision | None:
    """What a person told on `notified_on` (window closing on `deadline`) answers, and when; None: nothing."""
    chosen = draw(seed, nir, "decision")
    when = draw(seed, nir, "decision-day")
    window_days = max((deadline - notified_on).days, 2)
    if chosen < rates.opposition + rates.activation:
        event = DecisionEvent.OPPOSITION if chosen < rates.opposition else DecisionEvent.ACTIVATION
        # Strictly inside the window: from the day after the message to the day before the deadline.
        day = notified_on + dt.timedelta(days=1 + int(when * (window_days - 1)))
        return Decision(nir, event, _received(day, seed, nir))
    if chosen < rates.opposition + rates.activation + rates.late_opposition:
        day = deadline + dt.timedelta(days=3 + int(when * 8))  # after the creation run of the day after the deadline
        return Decision(nir, DecisionEvent.OPPOSITION, _received(day, seed, nir), late=True)
    return None


class DecisionSource:
    """The people's decisions as they come in: each person's fate drawn once per window (kept
    here, so that a file day costs one read of the enrolments), each decision given once."""

    def __init__(self, seed: int, rates: OutsideRates) -> None:
        self.seed = seed
        self.rates = rates
        self._fates: dict[str, tuple[object, Decision | None]] = {}
        self._given: set[str] = set()

    def due(self, engine: Engine, since: dt.date, day: dt.date) -> list[Decision]:
        """The decisions received after `since` up to `day`, of the people told so far."""
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT nir, state, notified_at, opt_out_deadline FROM enrolments"
                    " WHERE notified_at IS NOT NULL AND state IN (:notified, :created)"
                ),
                {"notified": EnrolmentState.NOTIFIED.value, "created": EnrolmentState.CREATED.value},
            ).all()
        decisions = []
        for nir, state, notified_at, deadline_at in rows:
            if nir in self._given:
                continue
            known = self._fates.get(nir)
            if known is None or known[0] != notified_at:  # a new window (a fallback letter) draws again
                notified, deadline = as_datetime(notified_at), as_datetime(deadline_at)
                if notified is None or deadline is None:
                    continue
                drawn = fate(
                    self.seed, nir, notified.astimezone(PARIS).date(), deadline.astimezone(PARIS).date(), self.rates
                )
                known = (notified_at, drawn)
                self._fates[nir] = known
            decision = known[1]
            if decision is None or not since < decision.received_at.date() <= day:
                continue
            # An answer within the window comes from someone still waiting; a late one from someone with a space.
            if decision.late != (state == EnrolmentState.CREATED.value):
                continue
            decisions.append(decision)
            self._given.add(nir)
        decisions.sort(key=lambda decision: (decision.received_at, decision.nir))
        return decisions


def write_decisions(path: Path, seed: int, decisions: list[Decision]) -> int:
    """decisions.csv as docs/inputs.md describes it; returns the rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", lineterminator="\n")
        writer.writerow(DECISIONS_HEADER)
        for decision in decisions:
            channel = _CHANNELS[int(draw(seed, decision.nir, "channel") * len(_CHANNELS))]
            writer.writerow(
                (
                    _reference(seed, decision.nir, decision.event.value),
                    decision.nir,
                    decision.event.value,
                    decision.received_at.isoformat(),
                    channel.value,
                )
            )
    return len(decisions)


def write_feedback(engine: Engine, path: Path, seed: int, day: dt.date, rates: OutsideRates) -> dict[str, int]:
    """feedback.csv for the morning of `day`: the relay's answer for every email sent and not yet
    reported (delivered, or a permanent failure), and the letters back by `day` (NPAI). Written
    before the day's sending, so every email still 'sent' went out on an earlier day. A message's
    sent_at is the wall clock of the run that sent it: the day of a letter is its batch's posting day."""
    with engine.connect() as connection:
        emails = connection.execute(
            text("SELECT notification_id FROM notifications WHERE channel = 'email' AND status = :sent"),
            {"sent": NotificationStatus.SENT.value},
        ).scalars().all()
        letters = connection.execute(
            text(
                "SELECT n.notification_id, b.posted_on FROM notifications n"
                " JOIN print_batches b ON b.batch_id = n.print_batch"
                " WHERE n.channel = 'letter' AND n.status = :posted"
            ),
            {"posted": NotificationStatus.POSTED.value},
        ).all()
    counts = {"delivered": 0, "permanent_failure": 0, "returned": 0}
    reported_at = dt.datetime.combine(day, dt.time(6), tzinfo=PARIS).isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", lineterminator="\n")
        writer.writerow(FEEDBACK_HEADER)
        for notification_id in sorted(emails):
            bounced = draw(seed, notification_id, "bounce") < rates.email_bounce
            status = "permanent_failure" if bounced else "delivered"
            writer.writerow((notification_id, status, reported_at, "550 5.1.1 mailbox unknown" if bounced else "250 OK"))
            counts[status] += 1
        for notification_id, posted_on in sorted(letters, key=lambda row: row[0]):
            posted = as_date(posted_on)
            if posted is None or draw(seed, notification_id, "npai") >= rates.letter_returned:
                continue
            back_on = posted + dt.timedelta(days=LETTER_RETURN_DAYS)
            if back_on > day:
                continue
            writer.writerow((notification_id, "returned", dt.datetime.combine(back_on, dt.time(11), tzinfo=PARIS).isoformat(), "NPAI"))
            counts["returned"] += 1
    return counts


def _register_rows(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter=";", quotechar='"')
        yield from reader


def with_email_share(source: Path, path: Path, seed: int, share: float) -> dict[str, float]:
    """`source` again with fewer emails, so that about `share` of the people have one (the
    generator gives more: 0.9 of working-age adults). Only people with a postal address lose
    theirs: nobody becomes unreachable by it. Returns the shares before and after."""
    header, *rows = list(_register_rows(source))
    nir_at, email_at, postcode_at = header.index("nir"), header.index("email"), header.index("code_postal")
    with_email = sum(1 for row in rows if row[email_at])
    before = with_email / len(rows) if rows else 0.0
    removable = [row for row in rows if row[email_at] and row[postcode_at]]
    excess = with_email - share * len(rows)
    if removable and excess > 0:
        drop = min(excess / len(removable), 1.0)
        for row in removable:
            if draw(seed, row[nir_at], "no-email") < drop:
                row[email_at] = ""
    _write_rows(path, header, rows)
    after = sum(1 for row in rows if row[email_at]) / len(rows) if rows else 0.0
    return {"before": round(before, 4), "after": round(after, 4)}


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", quotechar='"', lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_later_register(
    source: Path,
    path: Path,
    seed: int,
    deaths_between: list[tuple[dt.date, dt.date]],
    rates: OutsideRates,
) -> int:
    """A later register extract: `source` again, with the people who died in each (first, last)
    period given a death date in it (at least one a period once the extract has 100 people).
    Returns the deaths written in all."""
    header, *rows = list(_register_rows(source))
    nir_at, death_at = header.index(REGISTER_COLUMNS[0]), header.index("date_deces")
    dead: set[int] = set()
    for period, (first, last) in enumerate(deaths_between):
        living = [index for index, row in enumerate(rows) if index not in dead and not row[death_at]]
        ranked = sorted(living, key=lambda index: draw(seed, rows[index][nir_at], f"death-{period}"))
        count = round(len(living) * rates.death_per_month * max((last - first).days + 1, 1) / 30)
        count = max(count, 1 if len(rows) >= 100 else 0)
        for index in ranked[:count]:
            day = first + dt.timedelta(days=int(draw(seed, rows[index][nir_at], f"death-day-{period}") * ((last - first).days + 1)))
            rows[index][death_at] = day.isoformat()
            dead.add(index)
    _write_rows(path, header, rows)
    return len(dead)
