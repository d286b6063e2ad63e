"""PostgreSQL restarted for real in the middle of a wave's planning and in the middle of a DMP
migration (a private cluster, `pg_ctl restart -m fast`, or `stop -m immediate` then start: a crash
and its recovery). The task the restart lands in fails; Airflow's retry of it (same run id, same
day) completes the run, and the end state equals that of a run without the fault on another
database of the same cluster, with the same inputs: enrolments, notifications, spaces, migrated
documents, document outcomes, and the audit trail counted by entity, action and states."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from enrolment.register import load_register
from mes_rollout.config import load_settings
from mes_rollout.db import get_engine
from migration.intake import load_dmp_extract
from migration.store import FolderStore, open_store
from tests.factories import make_nir, person_row, write_csv
from tests.faults.conftest import PrivateCluster
from tests.migration.factories import ExtractBuilder, insert_space

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAVE_DAY = dt.date(2022, 1, 31)
WAVE_RUN = "manual__2022-01-31T08:00:00+00:00"
MIGRATION_DAY = dt.date(2022, 3, 2)
MIGRATION_RUN = "asset_triggered__2022-03-02T06:00:00+00:00"
REGISTER_DAY = dt.date(2022, 1, 20)
ADULTS = 400
SHARD_SIZE = 10  # about forty shards: the restart lands with most still to plan
DMP_PEOPLE = 120
BATCH_PERSONS = 2  # sixty batches to classify and commit
RETRIES = 2  # as every task of the DAGs (mes_rollout.dag_defaults.TASK_RETRIES)

# What the pipeline leaves, without run ids' timestamps nor wall-clock times.
END_STATE = {
    "waves": "SELECT wave_id, departements, send_date, state, decided_by FROM waves",
    "wave_cohort": "SELECT wave_id, nir, recipient_nir, outcome, channel, reason, shard FROM wave_cohort",
    "wave_shards": "SELECT wave_id, shard, people, email, letter FROM wave_shards",
    "enrolments": "SELECT nir, wave_id, state, recipient_nir, code_hash, notification_id, state_reason FROM enrolments",
    "notifications": (
        "SELECT notification_id, wave_id, recipient_nir, channel, status, shard, email, reference, attempts"
        " FROM notifications"
    ),
    "members": "SELECT notification_id, nir FROM notification_members",
    "spaces": "SELECT nir, state, created_on, creation_cause FROM spaces",
    "migration_runs": "SELECT run_id, logical_date, state, dmps, documents, migrated, held_back, skipped FROM migration_runs",
    "migrated_documents": (
        "SELECT entry_uuid, nir, dmp_id, unique_id, type_code, confidentiality, size, sha1, store_key, version_role,"
        " replaces, chain_head, migration_run_id FROM migrated_documents"
    ),
    "document_outcomes": (
        "SELECT entry_uuid, dmp_id, outcome, reason, version_role, store_key, migration_run_id FROM dmp_document_outcomes"
    ),
    "dmp_migrations": "SELECT dmp_id, nir, migration_run_id, documents, migrated, held_back, skipped FROM dmp_migrations",
    "audit": (
        "SELECT entity, action, from_state, to_state, reason, COUNT(*) FROM audit_trail"
        " GROUP BY entity, action, from_state, to_state, reason"
    ),
}


def end_state(url: str) -> dict[str, list[tuple[str, ...]]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {
                name: sorted(tuple(str(value) for value in row) for row in connection.execute(text(query)))
                for name, query in END_STATE.items()
            }
    finally:
        engine.dispose()


# -- the fault -----------------------------------------------------------------------------------


@dataclass
class RestartWhen:
    """A thread that watches the work's progress from a connection of its own and restarts the
    server once `progress` (a query giving done, total) reaches `at` done."""

    cluster: PrivateCluster
    url: str
    progress: str
    at: int
    mode: str  # "fast": pg_ctl restart -m fast; "immediate": stop -m immediate (a crash), then start
    seen: tuple[int, int] | None = None  # (done, total) when the restart began
    error: BaseException | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="postgres-restart", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            watcher = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            deadline = time.monotonic() + 60
            with watcher.connect() as connection:
                while time.monotonic() < deadline:
                    done, total = connection.execute(text(self.progress)).one()
                    if int(done or 0) >= self.at:
                        self.seen = (int(done or 0), int(total or 0))
                        break
                    time.sleep(0.002)
            watcher.dispose()
            if self.seen is not None:
                self.cluster.restart(self.mode)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def wait(self) -> None:
        """Until the server is back (Airflow's retry comes a minute later; the server is up by then)."""
        assert self._thread is not None
        self._thread.join(90)
        assert not self._thread.is_alive(), "the restart did not finish"
        assert self.error is None, self.error
        assert self.seen is not None, "the work ended before the restart could land"


@dataclass
class Airflow:
    """Runs task callables as the scheduler would: a task that fails is tried again (same run id,
    same arguments) after its retry delay, here once the restart is over, at most RETRIES times."""

    fault: RestartWhen | None
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    failed_again: list[str] = field(default_factory=list)  # tasks whose retry failed too

    def run(self, task_id: str, call: Callable[[], Any], *, retries: int = RETRIES, tries_done: int = 0) -> Any:
        for attempt in range(tries_done, retries + 1):
            try:
                return call()
            except Exception as error:
                self.failures.append((task_id, error))
                if attempt > 0:
                    self.failed_again.append(task_id)
                if attempt == retries:
                    raise
                if self.fault is not None:
                    self.fault.wait()
        raise AssertionError("unreachable")


def _assert_failed_on_the_restart(airflow: Airflow, expected_tasks: set[str]) -> None:
    assert airflow.failures, "no task failed: the restart did not land in the work"
    assert {task for task, _ in airflow.failures} <= expected_tasks, airflow.failures
    # Each failure is the lost or refused connection, nothing the restart left half done.
    for task, error in airflow.failures:
        assert isinstance(error, OperationalError), (task, repr(error))
    # The server is back when the retry comes: the retry succeeds at once (no dead pooled
    # connection handed out to it).
    assert airflow.failed_again == []


@contextlib.contextmanager
def pointed_at(url: str, var_dir: Path, **settings: str) -> Iterator[None]:
    """The tasks (which read their settings when they run) work on this database and var folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MES_DATABASE_URL", url)
        patch.setenv("MES_VAR_DIR", str(var_dir))
        for name, value in settings.items():
            patch.setenv(name, value)
        get_engine.cache_clear()
        try:
            yield
        finally:
            get_engine(url).dispose()
            get_engine.cache_clear()


@dataclass(frozen=True)
class Reference:
    """The inputs of a scenario and the end state its run without a fault left (once per module)."""

    inputs: Path
    var_dir: Path
    result: dict[str, Any]
    state: dict[str, list[tuple[str, ...]]]


@contextlib.contextmanager
def _database(cluster: PrivateCluster) -> Iterator[str]:
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


# -- a wave's planning ---------------------------------------------------------------------------

WAVE_SETTINGS = {"MES_SHARD_SIZE": str(SHARD_SIZE)}


def _register(folder: Path) -> Path:
    """Adults of Ain, most with an email, some only a postal address, a few neither (unreachable),
    a few dead; one in ten with a child told through them."""
    rows = []
    for index in range(ADULTS):
        sex, year, month, order = 1 + index % 2, 1950 + index % 50, 1 + (index // 50) % 12, 1 + index // 600
        nir = make_nir(str(sex), year, month, "01053", order)
        extra = {"email": f"p{index}@example.fr"}
        if index % 9 == 0:
            extra["email"] = ""
        if index % 23 == 0:
            extra.update(email="", adresse_ligne4="", code_postal="", commune="")
        if index % 31 == 0:
            extra["date_deces"] = "2021-12-01"
        rows.append(
            person_row(
                nir=nir, sexe="M" if sex == 1 else "F", date_naissance=f"{year}-{month:02d}-15",
                prenoms=f"Personne{index}", **extra,
            )
        )  # fmt: skip
        if index % 10 == 1:
            child = index // 10
            rows.append(
                person_row(
                    nir=make_nir("1", 2012, 1 + child % 12, "01053", 1 + child // 12), sexe="M",
                    date_naissance=f"2012-{1 + child % 12:02d}-03", prenoms=f"Enfant{child}", email="",
                    nir_representant=nir,
                )
            )  # fmt: skip
    return write_csv(folder / "register.csv", rows)


def _plan_wave(airflow: Airflow) -> dict[str, Any]:
    """enrolment_wave's tasks in order, its shards as mapped tasks, then the operator's approval."""
    from enrolment import tasks

    params = {"wave_id": "FAULT-01", "departements": ["01"], "send_date": WAVE_DAY.isoformat()}
    airflow.run("register_wave", lambda: tasks.register_wave(params, WAVE_DAY, WAVE_RUN))
    shards = airflow.run("select_cohort", lambda: tasks.select_cohort(params, WAVE_RUN))
    if airflow.fault is not None:
        airflow.fault.start()
    # The mapped tasks run side by side in Airflow: one failing does not stop the others; each
    # failed one is tried again later.
    failed: list[int] = []
    for shard in shards:
        try:
            tasks.plan_shard(params, shard, WAVE_RUN)
        except Exception as error:
            airflow.failures.append(("plan_shard", error))
            failed.append(shard)
    if failed:
        assert airflow.fault is not None
        airflow.fault.wait()
    for shard in failed:
        airflow.run("plan_shard", lambda shard=shard: tasks.plan_shard(params, shard, WAVE_RUN), tries_done=1)
    summary = airflow.run("summarise", lambda: tasks.summarise(params, WAVE_RUN))
    answer = {"responded_by_user": {"name": "operator1"}, "params_input": {"comment": "ok"}}
    airflow.run("approve_wave", lambda: tasks.approve_wave(params, answer, WAVE_RUN))
    return {"shards": len(shards), "summary": summary}


@pytest.fixture(scope="module")
def wave_reference(private_cluster: PrivateCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """The register, and the wave planned and approved from it without a fault. Its var folder
    (the wave's key) serves the faulted runs too: the same codes and message ids."""
    folder = tmp_path_factory.mktemp("wave")
    register = _register(folder)
    with _database(private_cluster) as url, pointed_at(url, folder / "var", **WAVE_SETTINGS):
        load_register(get_engine(), register, as_of=REGISTER_DAY)
        result = _plan_wave(Airflow(fault=None))
        state = end_state(url)
    assert result["shards"] >= 30
    assert len(state["notifications"]) > 300 and {row[3] for row in state["notifications"]} == {"email", "letter"}
    assert any(row[2] == "unreachable" for row in state["enrolments"])
    yield Reference(register, folder / "var", result, state)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_in_the_middle_of_a_waves_planning(
    private_cluster: PrivateCluster, private_database: Callable[[], str], wave_reference: Reference, mode: str
) -> None:
    url = private_database()
    with pointed_at(url, wave_reference.var_dir, **WAVE_SETTINGS):
        load_register(get_engine(), wave_reference.inputs, as_of=REGISTER_DAY)
        fault = RestartWhen(
            private_cluster, url, mode=mode, at=3,
            progress="SELECT (SELECT COUNT(*) FROM wave_shards),"
            " (SELECT COUNT(DISTINCT shard) FROM wave_cohort WHERE shard >= 0)",
        )  # fmt: skip
        airflow = Airflow(fault)
        faulted = _plan_wave(airflow)

    assert fault.seen is not None and 3 <= fault.seen[0] < fault.seen[1], fault.seen  # mid-planning
    _assert_failed_on_the_restart(airflow, {"plan_shard"})
    assert faulted["shards"] == wave_reference.result["shards"]
    assert faulted["summary"]["counts"] == wave_reference.result["summary"]["counts"]
    got = end_state(url)
    for part in END_STATE:
        assert got[part] == wave_reference.state[part], part


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_between_two_tasks_fails_neither(
    private_cluster: PrivateCluster,
    private_database: Callable[[], str],
    wave_reference: Reference,
    tmp_path: Path,
    mode: str,
) -> None:
    """The server restarted while the process sat idle between two tasks, its pooled connections
    dead: the next task checks each connection before using it (pool_pre_ping) and does not fail."""
    from enrolment import tasks

    url = private_database()
    with pointed_at(url, tmp_path / "var", **WAVE_SETTINGS):
        load_register(get_engine(), wave_reference.inputs, as_of=REGISTER_DAY)
        params = {"wave_id": "FAULT-02", "departements": ["01"], "send_date": WAVE_DAY.isoformat()}
        tasks.register_wave(params, WAVE_DAY, WAVE_RUN)
        shards = tasks.select_cohort(params, WAVE_RUN)
        assert get_engine().pool.checkedin() >= 1  # a pooled connection, about to die

        private_cluster.restart(mode)

        planned = [tasks.plan_shard(params, shard, WAVE_RUN) for shard in shards]
        counts = tasks.summarise(params, WAVE_RUN)["counts"]
    assert sum(shard["people"] for shard in planned) == counts["people"]["planned"] > 300


# -- a DMP migration -----------------------------------------------------------------------------

MIGRATION_SETTINGS = {"MES_MIGRATION_BATCH_PERSONS": str(BATCH_PERSONS)}


def _migration_inputs(folder: Path) -> None:
    """register.csv and dmp/ under `folder`: people with an active space and a DMP each: documents to migrate, a few deleted (skipped),
    a few with an unknown type code or a wrong hash (held back), some replacement chains."""
    people = [
        person_row(
            nir=make_nir("2", 1960 + index % 40, 1 + (index // 40) % 12, "01053", 700 + index // 480),
            date_naissance=f"{1960 + index % 40}-{1 + (index // 40) % 12:02d}-15",
        )
        for index in range(DMP_PEOPLE)
    ]
    write_csv(folder / "register.csv", people)
    builder = ExtractBuilder(folder / "dmp")
    for index, person in enumerate(people):
        dmp_id = builder.add_dmp(person)
        first = builder.add_document(dmp_id, status="Deleted" if index % 7 == 0 else "Approved")
        if index % 5 == 0:
            builder.add_document(dmp_id, replaces=first)
        else:
            builder.add_document(dmp_id, type_code="99999-9" if index % 13 == 0 else "11488-4")
        if index % 17 == 0:
            builder.add_document(dmp_id, hash="0" * 40)
    builder.write()


def _prepare_migration(inputs: Path) -> None:
    """The register, a space for each of its people, and the DMP extract, loaded."""
    engine = get_engine()
    load_register(engine, inputs / "register.csv", as_of=REGISTER_DAY)
    with engine.connect() as connection:
        nirs = [row[0] for row in connection.execute(text("SELECT nir FROM persons ORDER BY nir"))]
    for nir in nirs:
        insert_space(engine, nir, dt.date(2022, 3, 1))
    load_dmp_extract(engine, inputs / "dmp", run_id=None)


def _migrate(airflow: Airflow, day: dt.date) -> dict[str, Any]:
    """dmp_migration's tasks in order (as its DAG chains them), each called as Airflow calls it."""
    from migration import tasks

    params = {"holdback_threshold": 1.0}
    planned = airflow.run(
        "plan",
        lambda: tasks.plan(
            params, logical_date=dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.UTC), run_after=None,
            dag_run_id=MIGRATION_RUN,
        ),
    )  # fmt: skip
    run_id = planned["run_id"]
    if airflow.fault is not None:
        airflow.fault.start()
    airflow.run("classify", lambda: tasks.classify(run_id))
    airflow.run("validate_decisions", lambda: tasks.validate_decisions(run_id))
    airflow.run("quality_gate", lambda: tasks.quality_gate(run_id), retries=0)
    airflow.run("commit", lambda: tasks.commit(run_id))
    airflow.run("validate_migration", lambda: tasks.validate_migration(run_id))
    report = airflow.run("report", lambda: tasks.report(run_id), retries=0)
    return {"planned": planned, "report": report}


@pytest.fixture(scope="module")
def migration_reference(
    private_cluster: PrivateCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """The inputs, and the day's migration run on them without a fault."""
    folder = tmp_path_factory.mktemp("migration")
    _migration_inputs(folder)
    with _database(private_cluster) as url, pointed_at(url, folder / "var", **MIGRATION_SETTINGS):
        _prepare_migration(folder)
        result = _migrate(Airflow(fault=None), MIGRATION_DAY)
        state = end_state(url)
    assert result["planned"]["batches"] >= 50
    assert {row[2] for row in state["document_outcomes"]} == {"migrated", "held_back", "skipped"}
    assert [row[2] for row in state["migration_runs"]] == ["succeeded"]
    yield Reference(folder, folder / "var", result, state)


@pytest.mark.parametrize(("restart_while", "mode"), [("classified", "fast"), ("committed", "immediate")])
def test_a_restart_in_the_middle_of_a_migration(
    private_cluster: PrivateCluster,
    private_database: Callable[[], str],
    migration_reference: Reference,
    tmp_path: Path,
    restart_while: str,
    mode: str,
) -> None:
    url = private_database()
    with pointed_at(url, tmp_path / "var", **MIGRATION_SETTINGS):
        _prepare_migration(migration_reference.inputs)
        fault = RestartWhen(
            private_cluster, url, mode=mode, at=3,
            progress=(
                f"SELECT SUM(CASE WHEN state = '{restart_while}' THEN 1 ELSE 0 END), COUNT(*) FROM migration_batches"
            ),
        )  # fmt: skip
        airflow = Airflow(fault)
        faulted = _migrate(airflow, MIGRATION_DAY)
        store = open_store(load_settings())

    assert fault.seen is not None and 3 <= fault.seen[0] < fault.seen[1], fault.seen  # mid-phase
    _assert_failed_on_the_restart(airflow, {"classify" if restart_while == "classified" else "commit"})
    assert faulted["planned"] == migration_reference.result["planned"]
    got = end_state(url)
    for part in END_STATE:
        assert got[part] == migration_reference.state[part], part  # one run, resumed by the retry
    # Every document the faulted run's store holds is whole, under the key of what it holds.
    assert isinstance(store, FolderStore)
    for key in {row[8] for row in got["migrated_documents"]}:
        assert hashlib.sha256(store.path_of(key).read_bytes()).hexdigest() == key
