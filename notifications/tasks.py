"""What the notification DAGs' tasks do, testable without a scheduler: each function takes the
run's date, run id and partition, and returns counts and ids only (they go to XCom)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from mes_rollout.config import load_settings
from mes_rollout.constants import SMTP_AIRFLOW_CONN_ID, SMTP_RELAY_POOL
from mes_rollout.db import get_engine
from mes_rollout.rollout_summary import refresh as refresh_summary
from notifications import dao, letters, sending
from notifications.feedback import load_feedback

log = logging.getLogger(__name__)
DEFAULT_POOL_SLOTS = 2


def airflow_smtp_connection() -> Any | None:
    """The Airflow SMTP connection `mes_smtp` where one is defined, else None (MES_SMTP_URL)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(SMTP_AIRFLOW_CONN_ID)
    except AirflowNotFoundException:
        return None


def ensure_smtp_pool(slots: int = DEFAULT_POOL_SLOTS) -> None:
    """Create the `smtp_relay` pool if missing (the CLI does it before a run; a scheduler
    deployment creates it once: `airflow pools set smtp_relay 2 "SMTP relay"`). Its slots x
    MES_SMTP_CONNECTIONS is the number of connections the relay sees at most."""
    from airflow.models.pool import Pool

    if Pool.get_pool(SMTP_RELAY_POOL) is None:
        Pool.create_or_update_pool(
            SMTP_RELAY_POOL, slots, "SMTP relay: one slot per sending task", include_deferred=False
        )


def email_shards(send_date: dt.date) -> list[int]:
    with get_engine().begin() as connection:
        dao.refresh_planner_statistics(connection)
        return dao.email_shards(connection, send_date)


def send_shard(send_date: dt.date, run_id: str, shard: int, airflow_connection: Any | None = None) -> dict[str, int]:
    settings = load_settings()
    with sending.relay(settings, airflow_connection) as target:
        summary = sending.send_emails(
            get_engine(), settings, target, logical_date=send_date, run_id=run_id, shard=shard
        )
    return {"shard": shard, **summary.as_dict()}


def settle_stuck(send_date: dt.date, run_id: str, airflow_connection: Any | None = None) -> dict[str, int]:
    settings = load_settings()
    with sending.relay(settings, airflow_connection) as target:
        summary = sending.settle_stuck(get_engine(), settings, target, logical_date=send_date, run_id=run_id)
    return summary.as_dict()


def print_and_post_letters(send_date: dt.date, run_id: str) -> dict[str, Any]:
    settings = load_settings()
    engine = get_engine()
    printed = letters.print_letters(engine, settings, logical_date=send_date, run_id=run_id)
    posted = letters.post_printed_batches(engine, settings, logical_date=send_date, run_id=run_id)
    refresh_summary(engine, source="notification_sending", run_id=run_id)
    return {**printed.as_dict(), "posted_batches": posted}


def feedback_file(path: str, day: dt.date, run_id: str) -> dict[str, Any]:
    """Apply one feedback.csv as of the run's day: a line dated after that day is quarantined."""
    summary = load_feedback(get_engine(), Path(path), window=load_settings().opt_out_window, as_of=day, run_id=run_id)
    refresh_summary(get_engine(), source="delivery_feedback", run_id=run_id)
    return summary.as_dict()
