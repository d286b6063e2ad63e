"""DAG notification_sending: send the due messages of approved waves, on each approval and daily.

List the shards holding emails to send -> one mapped task per shard, each holding a slot of the `smtp_relay` pool while it
talks to the relay -> settle emails left `sending` by a dead sender (its lease passed) -> print
the due letters (fallbacks included) and hand the batches to the print provider. The send date of
every message is the run's logical date (as a day in Paris). One run at a time here; senders of
another run (a second Airflow, a command) skip what this one holds: each message is claimed once.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, get_current_context, task

from mes_rollout.constants import SMTP_RELAY_POOL, WAVE_APPROVED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS


def _run() -> tuple[dt.date, str]:
    from mes_rollout.runday import context_day

    context = get_current_context()
    return context_day(context), context["dag_run"].run_id


with DAG(
    dag_id="notification_sending",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 7 * * *", timezone="Europe/Paris"),
        assets=[Asset(WAVE_APPROVED_ASSET)],
    ),
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "notifications"],
    doc_md=__doc__,
) as dag:

    @task
    def list_email_shards() -> list[int]:
        from notifications.tasks import email_shards

        return email_shards(_run()[0])

    @task(pool=SMTP_RELAY_POOL, retries=2, retry_delay=dt.timedelta(minutes=2))
    def send_email_shard(shard: int) -> dict:
        from notifications.tasks import airflow_smtp_connection, send_shard

        send_date, run_id = _run()
        return send_shard(send_date, run_id, shard, airflow_smtp_connection())

    @task(pool=SMTP_RELAY_POOL, trigger_rule="all_done")
    def settle_stuck() -> dict:
        from notifications.tasks import airflow_smtp_connection
        from notifications.tasks import settle_stuck as run

        send_date, run_id = _run()
        return run(send_date, run_id, airflow_smtp_connection())

    @task(trigger_rule="all_done")
    def print_and_post_letters() -> dict:
        from notifications.tasks import print_and_post_letters as run

        return run(*_run())

    @task
    def all_shards_sent() -> None:
        """Runs only when every shard succeeded: a failed shard fails the run, visibly."""

    shards = list_email_shards()
    sent = send_email_shard.expand(shard=shards)
    settled = settle_stuck()
    printed = print_and_post_letters()
    sent >> settled >> printed
    [sent, printed] >> all_shards_sent()
