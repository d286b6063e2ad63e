"""Wave planning: select and route the cohort in one set-based statement, then plan it shard by shard.

1. `select_cohort` (one transaction): the cohort query (sql/queries/enrolment_cohort.sql) routes
   every eligible person of the wave's départements: told by email or letter (directly or through
   their representative), unreachable, or excluded with a reason; the told people are cut into
   shards. Unreachable people get their enrolment row here.
2. `plan_shard` (one transaction per shard, a mapped task each): draws each person's provisional
   code (an HMAC under the wave's secret key, stored only as a salted hash) and each recipient's
   notification id in Python, stages them, and writes the enrolments, notifications and their
   members with INSERT ... SELECT. A shard is marked done in the same transaction: a re-run skips it.
3. `summarise`: counts for the operator (recipients by channel, unreachable, excluded and why);
   the wave then waits for approval.
`dry_run_counts` runs the same cohort query, only counting.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from enrolment import dao
from enrolment.codes import code_hash, notification_id, provisional_code, wave_key
from enrolment.references import free_references
from enrolment.waves import CohortOutcome, Wave, load_wave
from enrolment.window import add_calendar_months
from mes_rollout import bulk
from mes_rollout.constants import Channel, EnrolmentState, NotificationStatus, WaveExclusion, WaveState
from mes_rollout.db import analyze, load_query

log = logging.getLogger(__name__)

ADULT_AGE_MONTHS = 18 * 12
# Any constant shared by the processes of this project: planners select one at a time, so that two
# waves can never take the same person (PostgreSQL; SQLite serialises writers anyway).
_SELECTION_LOCK = 7_413_220_23
_NO_CAP = 10**12


def adult_born_by(send_date: dt.date) -> dt.date:
    """Born on or before this day: 18 or older on the send date (born 29 Feb: of age on 1 Mar)."""
    return add_calendar_months(send_date, -ADULT_AGE_MONTHS)


def _cohort_params(wave_id: str, send_date: dt.date, recipient_cap: int | None, shard_size: int) -> dict[str, Any]:
    """The cohort query's parameters: the wave's, and every state, channel, outcome and exclusion
    reason it writes or compares, bound from their enums."""
    return {
        "wave_id": wave_id,
        "send_date": send_date,
        "adult_born_by": adult_born_by(send_date),
        "recipient_cap": recipient_cap or _NO_CAP,
        "shard_size": max(shard_size, 1),
        "unreachable_state": EnrolmentState.UNREACHABLE.value,
        "email": Channel.EMAIL.value,
        "letter": Channel.LETTER.value,
        **{f"outcome_{outcome.name.lower()}": outcome.value for outcome in CohortOutcome},
        **{f"exclusion_{reason.name.lower()}": reason.value for reason in WaveExclusion},
    }


def _not_eligible(connection: Connection, wave_id: str, send_date: dt.date) -> dict[str, int]:
    """People of the wave's départements the wave does not take: dead, or enrolled already."""
    row = connection.execute(
        text(
            "SELECT"
            " SUM(CASE WHEN p.date_deces IS NOT NULL AND p.date_deces <= :send_date THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN (p.date_deces IS NULL OR p.date_deces > :send_date)"
            "          AND e.nir IS NOT NULL AND e.state <> :unreachable THEN 1 ELSE 0 END)"
            " FROM persons AS p"
            " JOIN wave_departements AS wd ON wd.wave_id = :wave_id AND wd.departement = p.departement"
            " LEFT JOIN enrolments AS e ON e.nir = p.nir"
        ),
        {"wave_id": wave_id, "send_date": send_date, "unreachable": EnrolmentState.UNREACHABLE.value},
    ).one()
    return {"deceased": int(row[0] or 0), "already_enrolled": int(row[1] or 0)}


def _selection_counts(rows: list[Any]) -> dict[str, Any]:
    """Counts of routed people from (outcome, channel, reason, people, recipients, represented) rows."""
    people: Counter[str] = Counter()
    recipients: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    represented = 0
    for outcome, channel, reason, count, recipient_count, represented_count in rows:
        people[outcome] += int(count)
        if outcome == CohortOutcome.NOTIFY:
            recipients[channel] += int(recipient_count)
            represented += int(represented_count)
        elif outcome == CohortOutcome.EXCLUDED:
            excluded[reason] += int(count)
    return {
        "people": {
            "to_notify": people[CohortOutcome.NOTIFY],
            "unreachable": people[CohortOutcome.UNREACHABLE],
            "excluded": people[CohortOutcome.EXCLUDED],
            "told_through_representative": represented,
        },
        "recipients": {
            "email": recipients[Channel.EMAIL],
            "letter": recipients[Channel.LETTER],
            "total": sum(recipients.values()),
        },
        "excluded": dict(sorted(excluded.items())),
    }


_GROUPED = (
    "SELECT outcome, channel, reason, COUNT(*), COUNT(DISTINCT recipient_nir),"
    " SUM(CASE WHEN recipient_nir <> nir THEN 1 ELSE 0 END)"
)


def dry_run_counts(engine: Engine, wave: Wave, *, shard_size: int, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """What planning the wave would give, written nowhere but in the wave row's counts."""
    with engine.begin() as connection:
        not_eligible = _not_eligible(connection, wave.wave_id, wave.send_date)
        cohort = load_query("enrolment_cohort.sql")
        rows = connection.execute(
            text(f"{_GROUPED} FROM ({cohort}) AS cohort GROUP BY outcome, channel, reason"),  # noqa: S608
            _cohort_params(wave.wave_id, wave.send_date, wave.recipient_cap, shard_size),
        ).all()
        counts = {**_header(wave, dry_run=True), **_selection_counts(list(rows)), "not_eligible": not_eligible}
        dao.record_dry_run_counts(connection, wave.wave_id, counts, run_id=run_id, now=now)
    return counts


def _header(wave: Wave, *, dry_run: bool) -> dict[str, Any]:
    return {
        "wave_id": wave.wave_id,
        "departements": list(wave.departements),
        "send_date": wave.send_date.isoformat(),
        "recipient_cap": wave.recipient_cap,
        "dry_run": dry_run,
    }


def select_cohort(
    engine: Engine, wave_id: str, *, var_dir: Path, shard_size: int, run_id: str, now: dt.datetime
) -> list[int]:
    """Select and route the wave's cohort once; returns the shard numbers to plan."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SELECTION_LOCK})
        wave = load_wave(connection, wave_id)
        if wave is None:
            raise LookupError(f"no wave {wave_id}")
        if wave.state == WaveState.PLANNING and "selection" not in wave.counts:
            _select(connection, wave, var_dir=var_dir, shard_size=shard_size, run_id=run_id, now=now)
        shards = connection.execute(
            text("SELECT DISTINCT shard FROM wave_cohort WHERE wave_id = :wave_id AND shard >= 0 ORDER BY shard"),
            {"wave_id": wave_id},
        ).scalars()
        return [int(shard) for shard in shards]


def _select(
    connection: Connection, wave: Wave, *, var_dir: Path, shard_size: int, run_id: str, now: dt.datetime
) -> None:
    wave_key(var_dir, wave.wave_id, create=True)  # drawn once, before any code is
    not_eligible = _not_eligible(connection, wave.wave_id, wave.send_date)
    cohort = load_query("enrolment_cohort.sql")
    connection.execute(
        text(
            "INSERT INTO wave_cohort (wave_id, nir, recipient_nir, departement, outcome, channel, reason, shard)"
            f" SELECT wave_id, nir, recipient_nir, departement, outcome, channel, reason, shard FROM ({cohort}) AS c"  # noqa: S608
        ),
        _cohort_params(wave.wave_id, wave.send_date, wave.recipient_cap, shard_size),
    )
    analyze(connection, "wave_cohort", always=True)  # the statements below read it
    dao.enrol_unreachable(connection, wave.wave_id, run_id=run_id, now=now)
    rows = connection.execute(
        text(f"{_GROUPED} FROM wave_cohort WHERE wave_id = :wave_id GROUP BY outcome, channel, reason"),  # noqa: S608
        {"wave_id": wave.wave_id},
    ).all()
    selection = {**_selection_counts(list(rows)), "not_eligible": not_eligible}
    dao.record_selection(
        connection, wave.wave_id, {**_header(wave, dry_run=False), "selection": selection},
        people=selection["people"], run_id=run_id, now=now,
    )  # fmt: skip
    if selection["people"]["unreachable"]:
        analyze(connection, "enrolments")
    log.info("wave %s: cohort selected %s", wave.wave_id, selection["people"])


def _stage_keys(connection: Connection, rows: list[tuple[str, str, str, str, str, str]]) -> None:
    connection.exec_driver_sql("DROP TABLE IF EXISTS plan_keys")
    connection.exec_driver_sql(
        "CREATE TEMP TABLE plan_keys (nir TEXT PRIMARY KEY, recipient_nir TEXT NOT NULL, channel TEXT NOT NULL,"
        " code_hash TEXT NOT NULL, notification_id TEXT NOT NULL, reference TEXT NOT NULL, previous_state TEXT)"
    )
    bulk.insert_rows(
        connection, "plan_keys", ("nir", "recipient_nir", "channel", "code_hash", "notification_id", "reference"), rows
    )
    analyze(connection, "plan_keys")


# The shard's statements join the staged keys (about MES_SHARD_SIZE rows) to the big tables only
# through correlated look-ups by primary key, never a join the planner could turn into a scan of
# every enrolment or person: the cost of a shard does not grow with the register.
_PREVIOUS_STATE = text(
    "UPDATE plan_keys SET previous_state = (SELECT e.state FROM enrolments AS e WHERE e.nir = plan_keys.nir)"
)
_NOTIFY = text(
    "INSERT INTO notifications (notification_id, wave_id, recipient_nir, channel, status, shard, email,"
    " reference, created_at, updated_at)"
    " SELECT m.notification_id, :wave_id, m.recipient_nir, m.channel, :created, :shard,"
    " CASE WHEN m.channel = :email THEN (SELECT r.email FROM persons AS r WHERE r.nir = m.recipient_nir) END,"
    " m.reference, :now, :now"
    " FROM (SELECT DISTINCT notification_id, recipient_nir, channel, reference FROM plan_keys) AS m WHERE TRUE"
    " ON CONFLICT (notification_id) DO NOTHING"
)
_MEMBERS = text(
    "INSERT INTO notification_members (notification_id, nir) SELECT notification_id, nir FROM plan_keys WHERE TRUE"
    " ON CONFLICT (notification_id, nir) DO NOTHING"
)


def plan_shard(
    engine: Engine, wave_id: str, shard: int, *, var_dir: Path, run_id: str, now: dt.datetime
) -> dict[str, int]:
    """Plan one shard: codes, enrolments, notifications and their members. Counts only come back."""
    with engine.begin() as connection:
        wave = load_wave(connection, wave_id)
        if wave is None or wave.state != WaveState.PLANNING:
            return {"shard": shard, "skipped": 1}
        done = connection.execute(
            text("SELECT people, email, letter FROM wave_shards WHERE wave_id = :wave_id AND shard = :shard"),
            {"wave_id": wave_id, "shard": shard},
        ).first()
        if done is not None:
            return {"shard": shard, "people": done[0], "email": done[1], "letter": done[2], "already_planned": 1}
        key = wave_key(var_dir, wave_id)
        cohort = connection.execute(
            text(
                "SELECT nir, recipient_nir, channel FROM wave_cohort"
                " WHERE wave_id = :wave_id AND shard = :shard AND outcome = :notify"
            ),
            {"wave_id": wave_id, "shard": shard, "notify": CohortOutcome.NOTIFY.value},
        ).all()
        ids: dict[str, str] = {}
        staged = []
        for nir, recipient, channel in cohort:
            message = ids.get(recipient)
            if message is None:
                message = ids[recipient] = notification_id(key, wave_id, recipient)
            staged.append((nir, recipient, channel, code_hash(nir, provisional_code(key, nir)), message))
        references = free_references(connection, ids.values())  # each message's, drawn before it is inserted
        del cohort, ids
        _stage_keys(connection, [(*row, references[row[4]]) for row in staged])
        params = {
            "wave_id": wave_id,
            "shard": shard,
            "now": now,
            "run_id": run_id,
            "unreachable": EnrolmentState.UNREACHABLE.value,
            "created": NotificationStatus.CREATED.value,
            "email": Channel.EMAIL.value,
        }
        # Whoever another wave enrolled since the selection (a move between départements while
        # two waves plan) is not this shard's any more: dropped before and, racing, after the upsert.
        connection.execute(_PREVIOUS_STATE)
        connection.execute(
            text("DELETE FROM plan_keys WHERE previous_state IS NOT NULL AND previous_state <> :unreachable"), params
        )
        del staged
        dao.enrol_planned(connection, wave_id, run_id=run_id, now=now)
        connection.execute(_NOTIFY, params)
        people = connection.execute(_MEMBERS, params).rowcount
        by_channel: dict[str, int] = dict(
            connection.execute(
                text("SELECT channel, COUNT(DISTINCT notification_id) FROM plan_keys GROUP BY channel")
            ).all()
        )
        result = {
            "shard": shard,
            "people": max(people, 0),
            "email": int(by_channel.get(Channel.EMAIL, 0)),
            "letter": int(by_channel.get(Channel.LETTER, 0)),
        }
        connection.execute(
            text(
                "INSERT INTO wave_shards (wave_id, shard, people, email, letter, run_id, planned_at)"
                " VALUES (:wave_id, :shard, :people, :email, :letter, :run_id, :now)"
            ),
            {**params, **result},
        )
        connection.exec_driver_sql("DROP TABLE plan_keys")
    return result


def summarise(engine: Engine, wave_id: str, *, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """Once every shard is planned: the counts the operator approves on; the wave awaits approval."""
    with engine.begin() as connection:
        wave = load_wave(connection, wave_id)
        if wave is None:
            raise LookupError(f"no wave {wave_id}")
        if wave.state != WaveState.PLANNING:
            return wave.counts
        expected = connection.execute(
            text("SELECT COUNT(DISTINCT shard) FROM wave_cohort WHERE wave_id = :wave_id AND shard >= 0"),
            {"wave_id": wave_id},
        ).scalar_one()
        planned = connection.execute(
            text(
                "SELECT COUNT(*), COALESCE(SUM(people), 0), COALESCE(SUM(email), 0), COALESCE(SUM(letter), 0)"
                " FROM wave_shards WHERE wave_id = :wave_id"
            ),
            {"wave_id": wave_id},
        ).one()
        if int(planned[0]) != int(expected):
            raise RuntimeError(f"wave {wave_id}: {planned[0]} of {expected} shards planned; re-run the failed ones")
        selection = wave.counts.get("selection", {})
        unreachable = connection.execute(
            text("SELECT COUNT(*) FROM enrolments WHERE wave_id = :wave_id AND state = :unreachable"),
            {"wave_id": wave_id, "unreachable": EnrolmentState.UNREACHABLE.value},
        ).scalar_one()
        counts = {
            **_header(wave, dry_run=False),
            "people": {
                "planned": int(planned[1]),
                "unreachable": int(unreachable),
                "excluded": selection.get("people", {}).get("excluded", 0),
                "told_through_representative": selection.get("people", {}).get("told_through_representative", 0),
            },
            "recipients": {"email": int(planned[2]), "letter": int(planned[3]), "total": int(planned[2] + planned[3])},
            "excluded": selection.get("excluded", {}),
            "not_eligible": selection.get("not_eligible", {}),
            "shards": int(expected),
            "selection": selection,
        }
        dao.finish_planning(connection, wave_id, counts, run_id=run_id, now=now)
        # What the shards wrote, analysed once (not per shard: shards run at once, and ANALYZE
        # holds its lock to the commit): sending plans from these statistics.
        analyze(connection, "enrolments", "notifications", "notification_members", "wave_shards")
        return counts


def approval_body(counts: dict[str, Any]) -> str:
    """The operator's view of a wave before approving it (Markdown; counts only, no NIR)."""
    people = counts.get("people", {})
    recipients = counts.get("recipients", {})
    lines = [
        f"**Wave {counts.get('wave_id')}**: départements {', '.join(counts.get('departements', []))},"
        f" send date {counts.get('send_date')}, cap {counts.get('recipient_cap')} recipients.",
        "",
        "| | count |",
        "| --- | ---: |",
        f"| messages by email | {recipients.get('email', 0)} |",
        f"| messages by letter | {recipients.get('letter', 0)} |",
        f"| people told | {people.get('planned', people.get('to_notify', 0))} |",
        f"| of whom through a representative | {people.get('told_through_representative', 0)} |",
        f"| unreachable (no email nor printable address) | {people.get('unreachable', 0)} |",
    ]
    for reason, count in counts.get("excluded", {}).items():
        lines.append(f"| excluded: {reason} | {count} |")
    for reason, count in counts.get("not_eligible", {}).items():
        lines.append(f"| not eligible: {reason} | {count} |")
    return "\n".join(lines)
