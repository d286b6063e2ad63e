"""`mes-rollout simulate`: the whole rollout calendar replayed on a synthetic population, timed per stage.

A fresh database and var folder of its own (never a previous one's), a synthetic register and DMP
extract (console.synth.generate), then day by day from 31 January 2022: the register extracts
(the first one, then a monthly one carrying the deaths of the month), the day's wave of
enrolment/data/rollout_plan.csv approved as an operator would, the files the outside world sends
(decisions.csv from the people, feedback.csv from the relay and the post:
console/synth/rollout_inputs.py) and the daily DAGs (console.schedule.advance, which skips a DAG
with nothing due without starting Airflow). Every step is a real DAG run in this process; the DAG
folder is parsed once for all of them (console.dagrun). A run is skipped only when it would have
had nothing to do: a daily DAG whose due check says so, a decisions or feedback file with no row;
the report lists those days. The waves' code keys are drawn from the seed (seeded_wave_key), so
that the same seed gives the same rollout, count for count.

The report (JSON and Markdown) goes under MES_REPORTS_DIR/simulation/<run id>/: each stage's
work time (its tasks' durations in Airflow, summed over the days), its volume and its throughput,
the reconciliation of the counts, and the 68 million projection (console/projection.py).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, text

from console.dagrun import reparse_every_run
from console.projection import BENCHMARK_RATES, STAGES, UNITS, markdown_table, project
from console.synth.rollout_inputs import (
    DecisionSource,
    OutsideRates,
    with_email_share,
    write_decisions,
    write_feedback,
    write_later_register,
)
from mes_rollout.config import load_settings

log = logging.getLogger(__name__)

DEFAULT_PERSONS = 200_000
FIRST_LOAD_DAY = dt.date(2022, 1, 28)  # the register and DMP extracts arrive the Friday before the first wave
FIRST_DAY = dt.date(2022, 1, 31)
# Days replayed after the last wave: its fallback letters go out within a week, their windows
# close a month later, the late oppositions come up to a fortnight after (28 March -> 20 May).
DAYS_AFTER_LAST_WAVE = 53
# The monthly register extracts after the first: their day, and the months of deaths they carry.
LATER_EXTRACTS: tuple[tuple[dt.date, tuple[tuple[dt.date, dt.date], ...]], ...] = (
    (dt.date(2022, 2, 28), ((dt.date(2022, 1, 31), dt.date(2022, 2, 27)),)),
    (
        dt.date(2022, 3, 31),
        ((dt.date(2022, 1, 31), dt.date(2022, 2, 27)), (dt.date(2022, 2, 28), dt.date(2022, 3, 30))),
    ),
)
# The relay's and the post's reports, and the people's decisions, arrive twice a week (Monday and
# Thursday): each file covers the days since the last one.
FILE_WEEKDAYS = (0, 3)
# Airflow's own steps in a DAG run (branches, the wait for the approval) are not a stage's work.
STAGE_OF_TASK: dict[tuple[str, str], str] = {
    ("register_intake", "load_register"): "intake",
    ("dmp_intake", "load_extract"): "dmp_intake",
    ("enrolment_wave", "register_wave"): "planning",
    ("enrolment_wave", "select_cohort"): "planning",
    ("enrolment_wave", "plan_shard"): "planning",
    ("enrolment_wave", "summarise"): "planning",
    ("enrolment_wave", "approve_wave"): "planning",
    ("notification_sending", "renotify"): "emails",
    ("notification_sending", "list_email_shards"): "emails",
    ("notification_sending", "send_email_shard"): "emails",
    ("notification_sending", "settle_stuck"): "emails",
    ("notification_sending", "print_and_post_letters"): "letters",
    ("decisions_intake", "load_decisions"): "decisions",
    ("delivery_feedback", "load_feedback"): "feedback",
    ("space_creation", "create_spaces"): "creation",
}
WHOLE_DAG_STAGE = {"dmp_migration": "migration"}
APPROVAL_TASK = ("enrolment_wave", "approval")
# The daily DAGs the calendar needs, in their order of the day. The weekly wave (newcomers after
# the calendar) is left out: the synthetic population has none, and it would tell again the people
# left unreachable, which the reconciliation counts as such.
SIMULATED_DAILY_DAGS: tuple[str, ...] = ("notification_sending", "space_creation", "dmp_migration")
# The synthetic extract's natural anomalies are a larger share of a small day's DMPs than of a real
# one: the gate of the simulation is that of the demo unless MES_HOLDBACK_THRESHOLD says otherwise.
SIMULATION_HOLDBACK_THRESHOLD = "0.05"


@dataclass
class StageTime:
    task_seconds: float = 0.0
    dag_runs: int = 0


@dataclass
class Clock:
    """Work time per stage, and what Airflow itself cost around it."""

    stages: dict[str, StageTime] = field(default_factory=lambda: {stage: StageTime() for stage in STAGES})
    dag_runs: dict[str, int] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    task_seconds: float = 0.0
    approval_wait_seconds: float = 0.0
    nothing_due: int = 0

    def add_run(self, dag_id: str, run_id: str, wall: float) -> None:
        self.dag_runs[dag_id] = self.dag_runs.get(dag_id, 0) + 1
        self.wall_seconds[dag_id] = self.wall_seconds.get(dag_id, 0.0) + wall
        touched: set[str] = set()
        for task_id, seconds in task_durations(dag_id, run_id).items():
            self.task_seconds += seconds
            if (dag_id, task_id) == APPROVAL_TASK:
                self.approval_wait_seconds += seconds
                continue
            stage = WHOLE_DAG_STAGE.get(dag_id) or STAGE_OF_TASK.get((dag_id, task_id))
            if stage is not None:
                self.stages[stage].task_seconds += seconds
                touched.add(stage)
        for stage in touched:
            self.stages[stage].dag_runs += 1


def task_durations(dag_id: str, run_id: str) -> dict[str, float]:
    """Seconds each task of a finished run took, mapped copies summed, from Airflow's metadata."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    durations: dict[str, float] = {}
    with create_session() as session:
        for task_id, duration in session.execute(
            select(TaskInstance.task_id, TaskInstance.duration).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ):
            durations[task_id] = durations.get(task_id, 0.0) + float(duration or 0.0)
    return durations


@dataclass(frozen=True)
class Places:
    run_id: str
    var_dir: Path
    report_dir: Path
    database_url: str
    admin_url: str | None  # the PostgreSQL server's URL when the database was made there
    database_name: str | None


def _new_places(persons: int, database_url: str | None) -> Places:
    """A run id, its own var folder and report folder (made here: never an earlier run's), and
    its own database: a new one on the PostgreSQL server named, else a SQLite file in the folder."""
    outer = load_settings()
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{persons}-{uuid.uuid4().hex[:6]}"
    var_dir = outer.var_dir / "simulation" / run_id
    report_dir = outer.reports_dir / "simulation" / run_id
    var_dir.mkdir(parents=True, exist_ok=False)
    report_dir.mkdir(parents=True, exist_ok=False)
    url = database_url or os.environ.get("MES_DATABASE_URL") or ""
    if url.startswith("postgresql"):
        name = f"mes_sim_{run_id[:15].lower()}_{run_id[-6:]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return Places(run_id, var_dir, report_dir, url.rsplit("/", 1)[0] + f"/{name}", url, name)
    return Places(run_id, var_dir, report_dir, f"sqlite:///{var_dir / 'mes-rollout.db'}", None, None)


def _drop_database(places: Places) -> None:
    if places.admin_url is None or places.database_name is None:
        return
    admin = create_engine(places.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{places.database_name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def _environment(places: Places) -> Iterator[None]:
    """The run's settings, set before its first engine and restored afterwards."""
    from mes_rollout.db import get_engine

    var = places.var_dir / "var"
    changes = {
        "MES_VAR_DIR": str(var),
        "MES_DATABASE_URL": places.database_url,
        "MES_REPORTS_DIR": str(var / "reports"),
        "MES_OUTBOX_DIR": str(var / "outbox"),
        "MES_PRINT_DIR": str(var / "print"),
        "MES_DOCUMENT_STORE_DIR": str(var / "documents"),
        "MES_DOCUMENT_STORE_URL": "",
        "MES_SMTP_URL": "embedded",  # never a real relay: the emails are kept in the run's outbox
        "MES_HOLDBACK_THRESHOLD": os.environ.get("MES_HOLDBACK_THRESHOLD", SIMULATION_HOLDBACK_THRESHOLD),
    }
    # A fresh Airflow home too, unless the caller chose one (AIRFLOW_HOME: a test session's, set
    # before Airflow was first imported; Airflow reads its home only then) or Airflow is imported.
    if not os.environ.get("AIRFLOW_HOME") and "airflow" not in sys.modules:
        changes["AIRFLOW_HOME"] = str(places.var_dir / "airflow")
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    get_engine.cache_clear()
    try:
        yield
    finally:
        get_engine.cache_clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Simulation:
    """One replay of the calendar: the days, the files, the DAG runs and their times."""

    def __init__(self, persons: int, seed: int, places: Places, rates: OutsideRates) -> None:
        self.persons = persons
        self.seed = seed
        self.places = places
        self.rates = rates
        self.clock = Clock()
        self.inputs = places.var_dir / "inputs"
        self.items: dict[str, float] = {"intake": 0, "dmp_intake": 0, "decisions": 0, "feedback": 0}
        self.files: dict[str, Any] = {"decisions": [], "feedback": [], "register": []}
        self.decision_source = DecisionSource(seed, rates)
        self.decisions_written = {"opposition": 0, "activation": 0, "late_opposition": 0}
        self.failures: list[dict[str, Any]] = []
        self.waves: list[dict[str, Any]] = []
        # File days on which the people or the relay had nothing to send: no file, no DAG run.
        self.no_file: dict[str, list[str]] = {"decisions_intake": [], "delivery_feedback": []}

    @property
    def engine(self) -> Engine:
        from mes_rollout.db import get_engine

        return get_engine()

    def _run(self, dag_id: str, day: dt.date, conf: dict[str, Any]) -> dict[str, Any]:
        from console.dagrun import run_dag

        began = time.monotonic()
        result = run_dag(dag_id, day, conf)
        self.clock.add_run(dag_id, result.run_id, time.monotonic() - began)
        return result.xcom_returns

    def load_register(self, path: Path, day: dt.date) -> None:
        returns = self._run("register_intake", day, {"register_file": str(path)})
        rows = returns["load_register"]
        self.items["intake"] += rows["read"]
        self.files["register"].append({"day": day.isoformat(), **{k: rows[k] for k in ("read", "accepted", "quarantined")}})

    def load_dmp(self, folder: Path, day: dt.date) -> None:
        returns = self._run("dmp_intake", day, {"extract_dir": str(folder)})
        loaded = returns["load_extract"]
        self.items["dmp_intake"] += loaded["dmp"]["read"] + loaded["documents"]["read"]

    def run_wave(self, day: dt.date, conf: dict[str, Any]) -> None:
        from console.approval import APPROVE, run_wave, wave_outcome
        from enrolment.waves import WaveRequest

        request = WaveRequest.from_params(conf, day)
        seeded_wave_key(load_settings().var_dir, self.seed, request.wave_id)
        began = time.monotonic()
        result = run_wave(request, day, decision=APPROVE, comment="simulation")
        self.clock.add_run("enrolment_wave", result.run_id, time.monotonic() - began)
        outcome = wave_outcome(result)
        self.waves.append({"wave_id": request.wave_id, "day": day.isoformat(), "state": outcome.get("state")})

    def outside_files(self, day: dt.date, since: dt.date) -> None:
        decisions = self.decision_source.due(self.engine, since, day)
        for decision in decisions:
            self.decisions_written["late_opposition" if decision.late else decision.event.value] += 1
        if decisions:
            path = self.inputs / f"decisions-{day.isoformat()}.csv"
            written = write_decisions(path, self.seed, decisions)
            returns = self._run("decisions_intake", day, {"decisions_file": str(path)})
            loaded = returns["load_decisions"]
            self.items["decisions"] += written
            self.files["decisions"].append({"day": day.isoformat(), "rows": loaded["rows"], "spaces_created": loaded["spaces_created"]})
        else:
            self.no_file["decisions_intake"].append(day.isoformat())
        path = self.inputs / f"feedback-{day.isoformat()}.csv"
        counts = write_feedback(self.engine, path, self.seed, day, self.rates)
        if sum(counts.values()):
            returns = self._run("delivery_feedback", day, {"feedback_file": str(path)})
            loaded = returns["load_feedback"]
            self.items["feedback"] += sum(counts.values())
            self.files["feedback"].append({"day": day.isoformat(), **counts, "quarantined": loaded.get("quarantined", 0)})
        else:
            path.unlink()
            self.no_file["delivery_feedback"].append(day.isoformat())

    def daily_dags(self, day: dt.date) -> None:
        from console.schedule import AdvanceFailed, advance

        for dag_id in SIMULATED_DAILY_DAGS:
            began = time.monotonic()
            try:
                summary = advance(day, dag_ids=(dag_id,), engine=self.engine)
            except AdvanceFailed as error:
                summary = error.summary
                self.failures.extend(summary["failures"])
            wall = time.monotonic() - began
            self.clock.nothing_due += summary["nothing_due"]
            for run in summary["runs"]:
                self.clock.add_run(run["dag_id"], run["run_id"], wall / max(len(summary["runs"]), 1))
            for failure in summary["failures"]:
                self.clock.add_run(failure["dag_id"], failure["run_id"], 0.0)


def skipped_runs(engine: Engine, simulation: Simulation) -> dict[str, list[str]]:
    """The runs not started because they had nothing to do, by DAG: the daily DAGs' days with
    nothing due (console.schedule's due checks, kept in daily_runs) and the file days without a file."""
    skipped: dict[str, list[str]] = {dag_id: [] for dag_id in SIMULATED_DAILY_DAGS}
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT dag_id, logical_date FROM daily_runs WHERE outcome = 'nothing_due' ORDER BY logical_date")
        ).all()
    for dag_id, day in rows:
        skipped.setdefault(str(dag_id), []).append(str(day)[:10])
    skipped.update({dag_id: list(days) for dag_id, days in simulation.no_file.items()})
    return skipped


def day_ranges(days: list[str]) -> str:
    """ISO days as runs of consecutive days: '2022-02-05..2022-02-06, 2022-02-09'."""
    spans: list[list[dt.date]] = []
    for day in sorted(dt.date.fromisoformat(day) for day in days):
        if spans and day - spans[-1][1] == dt.timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ", ".join(first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}" for first, last in spans)


def seeded_wave_key(var_dir: Path, seed: int, wave_id: str) -> None:
    """Put the wave's provisional-code key where planning looks for it, drawn from the seed rather
    than from `secrets` (synthetic people only, in the run's own var folder). The message ids are
    keyed on it, and so are the relay's and the post's synthetic answers (console/synth): the same
    seed then gives the same rollout, and two runs can be compared count for count."""
    from enrolment.codes import keys_dir, wave_key

    key = hashlib.sha256(f"mes-rollout simulation {seed} {wave_id}".encode()).digest()
    path = keys_dir(var_dir) / f"wave-{hashlib.sha256(wave_id.encode()).hexdigest()[:32]}.key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as stream:
        stream.write(base64.b64encode(key))
    try:
        found = wave_key(var_dir, wave_id)
    except FileNotFoundError:
        found = None
    if found != key:
        raise RuntimeError(f"enrolment.codes does not read wave {wave_id}'s key from {path} any more")


def _count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one() or 0)


def measured_items(engine: Engine, simulation: Simulation) -> dict[str, float]:
    """Each stage's volume: what the files held, what the database says was done."""
    items = dict(simulation.items)
    items["planning"] = _count(engine, "SELECT COUNT(*) FROM wave_cohort")
    items["emails"] = _count(engine, "SELECT COUNT(*) FROM notifications WHERE channel = 'email' AND sent_at IS NOT NULL")
    items["letters"] = _count(engine, "SELECT COUNT(*) FROM notifications WHERE channel = 'letter' AND sent_at IS NOT NULL")
    items["creation"] = _count(engine, "SELECT COUNT(*) FROM spaces WHERE creation_cause = 'automatic'")
    items["migration"] = _count(engine, "SELECT COUNT(*) FROM dmp_document_outcomes")
    return items


def reconcile(engine: Engine, departements: list[str]) -> dict[str, Any]:
    """The counts that must agree at the end of the rollout (the test checks them); `departements`
    are those of the waves replayed."""
    from console.status import pipeline_status

    with engine.connect() as connection:
        status = pipeline_status(connection)

        def one(sql: str) -> int:
            return int(connection.execute(text(sql)).scalar_one() or 0)

        in_scope = int(
            connection.execute(
                text("SELECT COUNT(*) FROM persons WHERE departement IN :codes").bindparams(
                    bindparam("codes", expanding=True)
                ),
                {"codes": departements},
            ).scalar_one()
        )
        # In a wave's département and never selected: only the people already dead when their
        # département's first wave was planned may be.
        not_selected_alive = one(
            "SELECT COUNT(*) FROM persons p"
            " JOIN (SELECT wd.departement, MIN(w.send_date) AS first_send FROM wave_departements wd"
            " JOIN waves w ON w.wave_id = wd.wave_id GROUP BY wd.departement) f ON f.departement = p.departement"
            " WHERE NOT EXISTS (SELECT 1 FROM wave_cohort c WHERE c.nir = p.nir)"
            " AND (p.date_deces IS NULL OR p.date_deces > f.first_send)"
        )
        selected = one("SELECT COUNT(DISTINCT nir) FROM wave_cohort")
        outcomes: dict[str, int] = dict(
            connection.execute(
                text("SELECT outcome, COUNT(DISTINCT nir) FROM wave_cohort GROUP BY outcome")
            ).all()
        )
        # People a message reached more than once (a bounced email then its letter reached them once).
        told_twice = one(
            "SELECT COUNT(*) FROM (SELECT m.nir FROM notification_members m"
            " JOIN notifications n ON n.notification_id = m.notification_id"
            " WHERE n.status IN ('sent', 'delivered', 'posted') GROUP BY m.nir HAVING COUNT(*) > 1) AS twice"
        )
        reached = one(
            "SELECT COUNT(DISTINCT m.nir) FROM notification_members m"
            " JOIN notifications n ON n.notification_id = m.notification_id"
            " WHERE n.status IN ('sent', 'delivered', 'posted')"
        )
        spaces_active = one("SELECT COUNT(*) FROM spaces WHERE state = 'active'")
        spaces_closed = one("SELECT COUNT(*) FROM spaces WHERE state = 'closed'")
        spaces_by_cause: dict[str, int] = dict(
            connection.execute(text("SELECT creation_cause, COUNT(*) FROM spaces GROUP BY creation_cause")).all()
        )
        opposed_with_space = one(
            "SELECT COUNT(*) FROM spaces s JOIN enrolments e ON e.nir = s.nir"
            " WHERE e.state IN ('opposed', 'late_opposed', 'cancelled_deceased') AND s.state = 'active'"
        )
        documents_taken_on = one(
            "SELECT COUNT(*) FROM dmp_documents d JOIN dmp_migrations m ON m.dmp_id = d.dmp_id"
        )
        report_paths = [
            row[0]
            for row in connection.execute(
                text("SELECT report_path FROM migration_runs WHERE report_path IS NOT NULL")
            )
        ]
        decisions_quarantined = one("SELECT COUNT(*) FROM quarantine WHERE file_kind = 'decisions'")
        feedback_quarantined = one("SELECT COUNT(*) FROM quarantine WHERE file_kind = 'feedback'")
    documents = {"source": 0, "migrated": 0, "held_back": 0, "skipped": 0}
    for report_path in report_paths:
        report = json.loads(Path(report_path).read_text())
        for name in documents:
            documents[name] += int(report["documents"][name])
    enrolments = {state: int(count) for state, count in status["enrolments"].items()}
    told = sum(enrolments.values()) - enrolments.get("unreachable", 0) - enrolments.get("planned", 0)
    opposed = enrolments.get("opposed", 0) + enrolments.get("late_opposed", 0)
    return {
        "persons": status["persons"]["total"],
        "in_scope": in_scope,
        "selected": selected,
        "not_selected_alive": not_selected_alive,
        "cohort_outcomes": {str(key): int(value) for key, value in outcomes.items()},
        "enrolments": enrolments,
        "told": told,
        "reached_by_a_message": reached,
        "told_twice": told_twice,
        "opposition_rate": round(opposed / told, 4) if told else 0.0,
        "late_opposition_closures": enrolments.get("closed", 0),
        "spaces": {"active": spaces_active, "closed": spaces_closed, "by_cause": {str(k): int(v) for k, v in spaces_by_cause.items()}},
        # told − opposed − deceased − closed = spaces still active (the unreachable were never told)
        "spaces_expected": told - opposed - enrolments.get("cancelled_deceased", 0) - enrolments.get("closed", 0)
        - enrolments.get("notified", 0),
        "opposed_or_deceased_with_active_space": opposed_with_space,
        "notifications": status["notifications"],
        "dmp_documents": {**documents, "staged_for_dmps_taken_on": documents_taken_on, "outcomes": status["dmp_documents"]},
        "quarantined": {"decisions": decisions_quarantined, "feedback": feedback_quarantined},
    }


def _stage_report(clock: Clock, items: dict[str, float]) -> dict[str, dict[str, Any]]:
    stages = {}
    for stage in STAGES:
        seconds = clock.stages[stage].task_seconds
        stages[stage] = {
            "unit": UNITS[stage],
            "items": int(items.get(stage, 0)),
            "seconds": round(seconds, 2),
            "dag_runs": clock.stages[stage].dag_runs,
            "per_second": round(items.get(stage, 0) / seconds, 1) if seconds > 0 else 0.0,
        }
    return stages


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_simulation(
    persons: int = DEFAULT_PERSONS,
    seed: int = 2022,
    *,
    database_url: str | None = None,
    keep_database: bool = False,
    rates: OutsideRates | None = None,
    waves: int | None = None,
    reuse_parsed_dags: bool = True,
) -> dict[str, Any]:
    """Replay the rollout on `persons` synthetic people; returns the report (also written as
    report.json and report.md under MES_REPORTS_DIR/simulation/<run id>/). `waves` keeps only the
    plan's first waves (a quick check: the others' départements are then out of scope).
    `reuse_parsed_dags=False` parses the DAGs again for every run, as before they were kept (the
    end state must not differ)."""
    if persons < 1:
        raise ValueError(f"persons must be at least 1, not {persons}")
    places = _new_places(persons, database_url)
    began = time.monotonic()
    load_before = _load_average()
    try:
        with _environment(places), contextlib.nullcontext() if reuse_parsed_dags else reparse_every_run():
            report = _simulate(persons, seed, places, rates or OutsideRates(), waves)
        report["airflow"]["dag_parsing"] = "once for the run" if reuse_parsed_dags else "every DAG run"
    finally:
        if not keep_database:
            _drop_database(places)
    report["seconds_total"] = round(time.monotonic() - began, 1)
    report["load_average"] = {"start": load_before, "end": _load_average()}
    report["database"] = (
        places.database_url.rsplit("@", 1)[-1] + ("" if keep_database or places.admin_url is None else " (dropped)")
    )
    _write_report(places.report_dir, report)
    return report


def _simulate(persons: int, seed: int, places: Places, rates: OutsideRates, waves: int | None) -> dict[str, Any]:
    from console.dagrun import ensure_airflow_home
    from console.synth import generate
    from enrolment.plan import read_plan
    from mes_rollout.db import get_engine, upgrade

    settings = load_settings()
    upgrade(get_engine())
    airflow_began = time.monotonic()
    ensure_airflow_home()
    airflow_seconds = time.monotonic() - airflow_began
    simulation = Simulation(persons, seed, places, rates)

    synth_began = time.monotonic()
    extract = places.var_dir / "extract"
    synthetic = generate(persons, seed, extract, dirty=0.0)
    synth_seconds = time.monotonic() - synth_began
    register = simulation.inputs / f"register-{FIRST_LOAD_DAY.isoformat()}.csv"
    email_share = with_email_share(extract / "register.csv", register, seed, rates.email_share)

    simulation.load_register(register, FIRST_LOAD_DAY)
    simulation.load_dmp(extract / "dmp", FIRST_LOAD_DAY)
    plan = {wave.day: wave for wave in read_plan()[:waves]}
    last_day = max(plan) + dt.timedelta(days=DAYS_AFTER_LAST_WAVE)
    later_extracts = dict(LATER_EXTRACTS)
    deaths: dict[str, int] = {}
    last_files_day = FIRST_LOAD_DAY
    day = FIRST_DAY
    while day <= last_day:
        if day in later_extracts:
            later = simulation.inputs / f"register-{day.isoformat()}.csv"
            deaths[day.isoformat()] = write_later_register(register, later, seed, list(later_extracts[day]), rates)
            simulation.load_register(later, day)
        if day in plan:
            simulation.run_wave(day, plan[day].as_conf())
        if day.weekday() in FILE_WEEKDAYS:
            simulation.outside_files(day, last_files_day)
            last_files_day = day
        simulation.daily_dags(day)
        log.info("simulation: %s done", day.isoformat())
        day += dt.timedelta(days=1)

    engine = get_engine()
    items = measured_items(engine, simulation)
    stages = _stage_report(simulation.clock, items)
    measured = {stage: values["per_second"] for stage, values in stages.items() if values["per_second"] > 0}
    try:
        from_simulation = project(measured).as_dict()
    except ValueError as error:  # a stage with no work at this size
        from_simulation = {"error": str(error)}
    with_benchmarks = project(measured, benchmarks=BENCHMARK_RATES) if set(STAGES) - set(BENCHMARK_RATES) <= set(measured) else None
    clock = simulation.clock
    wall = sum(clock.wall_seconds.values())
    return {
        "run_id": places.run_id,
        "persons": persons,
        "seed": seed,
        "dialect": settings.dialect,
        "calendar": {
            "first_day": FIRST_DAY.isoformat(),
            "last_day": last_day.isoformat(),
            "waves": len(simulation.waves),
            "departements": sorted({code for wave in plan.values() for code in wave.departements}),
        },
        "synthetic": {
            "seconds": round(synth_seconds, 1),
            "register_rows": synthetic.register_rows,
            "dmps": synthetic.dmps,
            "documents": synthetic.documents,
            "email_share": email_share,
        },
        "rates": {name: getattr(rates, name) for name in rates.__dataclass_fields__},
        "deaths_written": deaths,
        "stages": stages,
        "dag_runs": dict(sorted(clock.dag_runs.items())),
        "dag_wall_seconds": {dag: round(seconds, 1) for dag, seconds in sorted(clock.wall_seconds.items())},
        "dag_wall_seconds_per_run": {
            dag: round(seconds / clock.dag_runs[dag], 2) for dag, seconds in sorted(clock.wall_seconds.items()) if clock.dag_runs.get(dag)
        },
        "nothing_due_days": clock.nothing_due,
        "skipped_runs": skipped_runs(engine, simulation),
        "airflow": {
            "home_setup_seconds": round(airflow_seconds, 1),
            "approval_wait_seconds": round(clock.approval_wait_seconds, 1),
            # What a DAG run costs beyond its tasks: parsing the file, dag.test()'s bookkeeping.
            "overhead_seconds": round(wall - clock.task_seconds, 1),
        },
        "files": simulation.files,
        "decisions_written": simulation.decisions_written,
        "waves": simulation.waves,
        "failures": simulation.failures,
        "reconciliation": reconcile(engine, sorted({code for wave in plan.values() for code in wave.departements})),
        "projection": {
            "from_simulation": from_simulation,
            "with_benchmarks": with_benchmarks.as_dict() if with_benchmarks is not None else None,
            "table_from_simulation": markdown_table(project(measured)) if "error" not in from_simulation else "",
            "table_with_benchmarks": markdown_table(with_benchmarks) if with_benchmarks is not None else "",
        },
        "folders": {"var": str(places.var_dir), "report": str(places.report_dir)},
    }


def _write_report(folder: Path, report: dict[str, Any]) -> None:
    """report.json and report.md, created (never overwriting: the folder is the run's own)."""
    with (folder / "report.json").open("x", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2, sort_keys=True, default=str)
    with (folder / "report.md").open("x", encoding="utf-8") as stream:
        stream.write(markdown_summary(report))


def markdown_summary(report: dict[str, Any]) -> str:
    reconciliation = report["reconciliation"]
    lines = [
        f"# Rollout simulation {report['run_id']}",
        "",
        f"{report['persons']:,} synthetic people (seed {report['seed']}), {report['dialect']},"
        f" {report['calendar']['waves']} waves from {report['calendar']['first_day']} to"
        f" {report['calendar']['last_day']}; {report.get('seconds_total', 0):,.0f} s in all"
        f" (load average {report.get('load_average', {}).get('start', '?')} at the start,"
        f" {report.get('load_average', {}).get('end', '?')} at the end).",
        "",
        "## Stages (work time: the stage's tasks in Airflow, summed over the days)",
        "",
        "| stage | volume | seconds | DAG runs | per second |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage, values in report["stages"].items():
        lines.append(
            f"| {stage} | {values['items']:,} {values['unit']} | {values['seconds']:,.1f} | {values['dag_runs']}"
            f" | {values['per_second']:,.1f} |"
        )
    airflow = report["airflow"]
    lines += [
        "",
        f"DAG runs: {sum(report['dag_runs'].values())} ({', '.join(f'{k} {v}' for k, v in report['dag_runs'].items())});"
        f" daily DAG days with nothing due: {report['nothing_due_days']}. Airflow around the tasks:"
        f" {airflow['overhead_seconds']:,.1f} s; waiting for the approvals: {airflow['approval_wait_seconds']:,.1f} s.",
        "",
        "## Runs skipped (nothing to do that day)",
        "",
        *(
            f"- {dag_id}: {len(days)} days" + (f" ({day_ranges(days)})" if days else "")
            for dag_id, days in report.get("skipped_runs", {}).items()
        ),
        "",
        "## Reconciliation",
        "",
        f"- in scope (register in the waves' départements): {reconciliation['in_scope']:,}; selected by a wave:"
        f" {reconciliation['selected']:,} (not selected though alive: {reconciliation['not_selected_alive']});"
        f" outcomes {reconciliation['cohort_outcomes']}",
        f"- enrolments: {reconciliation['enrolments']}",
        f"- told: {reconciliation['told']:,}; reached by a message: {reconciliation['reached_by_a_message']:,};"
        f" reached twice: {reconciliation['told_twice']}",
        f"- oppositions: {reconciliation['opposition_rate']:.2%} of those told; closures after a late opposition:"
        f" {reconciliation['late_opposition_closures']}",
        f"- spaces active {reconciliation['spaces']['active']:,} = expected {reconciliation['spaces_expected']:,}"
        f" (told − opposed − deceased − closed); closed {reconciliation['spaces']['closed']}",
        f"- DMP documents: {reconciliation['dmp_documents']['source']:,} source ="
        f" {reconciliation['dmp_documents']['migrated']:,} migrated + {reconciliation['dmp_documents']['held_back']:,}"
        f" held back + {reconciliation['dmp_documents']['skipped']:,} skipped",
        f"- quarantined: {reconciliation['quarantined']}; failures: {len(report['failures'])}",
        "",
        "## The 68 million projection",
        "",
    ]
    projection = report["projection"]
    for title, key, table in (
        ("Rates from this simulation", "from_simulation", "table_from_simulation"),
        ("Benchmark rates where BENCHMARKS.md has one", "with_benchmarks", "table_with_benchmarks"),
    ):
        figures = projection.get(key)
        if not figures or "error" in figures:
            continue
        lines += [
            f"### {title}",
            "",
            projection[table],
            "",
            f"Dominant stage: {figures['dominant_stage']}; goal {figures['goal_machine_hours']} machine-hours"
            f" {'met' if figures['goal_met'] else 'missed'}"
            + (
                f" (the dominant stage would need {figures['dominant_rate_for_goal']:,}/s)"
                if figures.get("dominant_rate_for_goal")
                else ""
            )
            + f". A sending day (1.6 M messages): {figures['sending_day']['machine_hours']} machine-hours,"
            f" {figures['sending_day']['workers_for_8_hours']} workers for 8 hours; the busiest day (with creation"
            f" and migration): {figures['busiest_day']['machine_hours']} machine-hours,"
            f" {figures['busiest_day']['workers_for_8_hours']} workers.",
            "",
        ]
    return "\n".join(lines) + "\n"
