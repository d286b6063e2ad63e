"""DAG dmp_migration: carry the DMP documents of newly created spaces into their document stores.

Scheduled by the Asset that space creation publishes; runnable by hand for a date (Param `date`,
default the run's day). Tasks, in order: plan (or resume an interrupted run), classify
(decide every document, copy and verify content), validate_decisions (GX: staged extract,
reconciliation), quality_gate (fails the run above the hold-back threshold: nothing committed),
commit, validate_migration (GX: migrated documents, reconciliation), report (always runs; fails
when the run did not succeed, so that a stopped run is visible). Reports and Data Docs:
$MES_VAR_DIR/reports/<rollout_id>/migration/<run_id>/. Each task calls `migration.tasks`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, chain, task

from mes_rollout.constants import SPACES_CREATED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="dmp_migration",
    schedule=[Asset(SPACES_CREATED_ASSET)],
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_TASK_ARGS,
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
        from migration import tasks

        extras = [dict(event.extra or {}) for events in (triggering_asset_events or {}).values() for event in events]
        return tasks.plan(
            params or {}, logical_date=logical_date, run_after=getattr(dag_run, "run_after", None),
            dag_run_id=getattr(dag_run, "run_id", None), asset_extras=extras,
        )  # fmt: skip

    @task
    def classify(planned: Any) -> dict:
        from migration import tasks

        return tasks.classify(planned["run_id"])

    @task
    def validate_decisions(planned: Any) -> dict:
        from migration import tasks

        return tasks.validate_decisions(planned["run_id"])

    @task(retries=0)  # the gate's decision is the data's: a retry gives the same answer
    def quality_gate(planned: Any) -> dict:
        from migration import tasks

        return tasks.quality_gate(planned["run_id"])

    @task
    def commit(planned: Any) -> dict:
        from migration import tasks

        return tasks.commit(planned["run_id"])

    @task
    def validate_migration(planned: Any) -> dict:
        from migration import tasks

        return tasks.validate_migration(planned["run_id"])

    @task(trigger_rule="all_done", retries=0)  # fails when the run failed: a retry cannot change it
    def report(planned: Any) -> dict:
        from migration import tasks

        return tasks.report(planned["run_id"])

    planned = plan()
    chain(
        classify(planned),
        validate_decisions(planned),
        quality_gate(planned),
        commit(planned),
        validate_migration(planned),
        report(planned),
    )
