"""What every DAG of mes-rollout shares: its tasks' time limit and retries, its start date, its tags.

A DAG file passes `default_args=DEFAULT_TASK_ARGS`; a task that must wait longer (the wave's
approval, which waits for a person) sets its own `execution_timeout`. A task that runs past its
limit fails visibly; every task is safe to run again, so its retry or a cleared re-run is safe.

Retries: a task that failed for a passing reason (a worker killed, the database or the relay
restarting) is tried again by the scheduler, after a delay that doubles each time. Every task may
be retried: each works on an explicit partition (a wave, a shard, a day, a run id), upserts,
moves states through guarded transitions, and claims messages with a lease, so a second try
finds what the first one did and does only the rest. `NO_RETRY` is for the tasks whose failure
a retry cannot change, where it would only delay the failure: the wave's approval (a person's
answer, asked once), an intake's unreadable file, a DMP migration's quality gate and its report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Long enough for a 2-million-message day's shard or a migration batch run on a slow day, short
# enough that a hung read (a FIFO, a dead connection) is noticed the same day.
TASK_TIMEOUT = dt.timedelta(hours=3)

# Two more tries, 1 then 2 minutes later (never more than 10 minutes apart): long enough for a
# worker to be replaced or a database to fail over, short enough to finish the day's work.
TASK_RETRIES = 2
RETRY_DELAY = dt.timedelta(minutes=1)
MAX_RETRY_DELAY = dt.timedelta(minutes=10)

DEFAULT_TASK_ARGS: dict[str, Any] = {
    "owner": "mes-rollout",
    "execution_timeout": TASK_TIMEOUT,
    "retries": TASK_RETRIES,
    "retry_delay": RETRY_DELAY,
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": MAX_RETRY_DELAY,
}

# `retries=NO_RETRY` on a task whose failure a retry cannot change (see above).
NO_RETRY = 0
