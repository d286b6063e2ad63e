"""DAG dmp_migration: carry the DMP documents of newly created spaces into their document stores.

Scheduled by the Asset that space creation publishes; runnable by hand for a date (Param `date`,
default the run's logical date). Tasks, in order: plan (or resume an interrupted run), classify
(decide every document, copy and verify content), validate_decisions (GX: staged extract,
reconciliation), quality_gate (fails the run above the hold-back threshold: nothing committed),
commit, validate_migration (GX: migrated documents, reconciliation), report (always runs; fails
when the run did not succeed, so that a stopped run is visible). Reports and Data Docs:
$MES_VAR_DIR/reports/migration/<run_id>/.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, chain, task

from mes_rollout.constants import SPACES_CREATED_ASSET

with DAG(
    dag_id="dmp_migration",
    schedule=[Asset(SPACES_CREATED_ASSET)],
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    tags=["mes-rollout", "dmp"],
    params={
        "date": Param(None, type=["null", "string"], format="date", description="Date of the run (default: logical date)"),
        "holdback_threshold": Param(
            None, type=["null", "number"], minimum=0, maximum=1, description="Override MES_HOLDBACK_THRESHOLD"
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def plan(
        params: dict | None = None,
        logical_date: pendulum.DateTime | None = None,
        dag_run: Any = None,
        triggering_asset_events: Any = None,
    ) -> dict:
        import datetime as dt

        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import start

        assert params is not None
        if params.get("date"):
            day = dt.date.fromisoformat(params["date"])
        else:
            # An Asset-triggered run has no logical date: the day it was due to run, in Paris.
            moment = pendulum.instance(logical_date or dag_run.run_after).in_timezone("Europe/Paris")
            day = dt.date(moment.year, moment.month, moment.day)
            # space_creation says which day it created spaces on: take it in, whatever the clock says.
            for events in (triggering_asset_events or {}).values():
                for event in events:
                    created_on = (getattr(event, "extra", None) or {}).get("created_on")
                    if created_on:
                        day = max(day, dt.date.fromisoformat(str(created_on)[:10]))
        threshold = params.get("holdback_threshold")
        return start(
            get_engine(), load_settings(), day, dag_run_id=dag_run.run_id if dag_run else None,
            holdback_threshold=None if threshold is None else float(threshold),
        )  # fmt: skip

    @task
    def classify(planned: Any) -> dict:
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import classify as run_classify
        from migration.store import open_store

        return run_classify(get_engine(), open_store(load_settings()), planned["run_id"])

    @task
    def validate_decisions(planned: Any) -> dict:
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import validate_decisions as run_validation

        return run_validation(get_engine(), load_settings(), planned["run_id"])

    @task
    def quality_gate(planned: Any) -> dict:
        from mes_rollout.db import get_engine
        from migration.run import gate

        return gate(get_engine(), planned["run_id"])

    @task
    def commit(planned: Any) -> dict:
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import commit as run_commit
        from migration.store import open_store

        return run_commit(get_engine(), open_store(load_settings()), planned["run_id"])

    @task
    def validate_migration(planned: Any) -> dict:
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import validate_committed
        from migration.store import open_store

        settings = load_settings()
        return validate_committed(get_engine(), settings, open_store(settings), planned["run_id"])

    @task(trigger_rule="all_done")
    def report(planned: Any) -> dict:
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine
        from migration.run import report as write_report

        return write_report(get_engine(), load_settings(), planned["run_id"])

    planned = plan()
    chain(
        classify(planned),
        validate_decisions(planned),
        quality_gate(planned),
        commit(planned),
        validate_migration(planned),
        report(planned),
    )
