"""What every DAG of mes-rollout shares: its tasks' time limit, its start date, its tags.

A DAG file passes `default_args=DEFAULT_TASK_ARGS`; a task that must wait longer (the wave's
approval, which waits for a person) sets its own `execution_timeout`. A task that runs past its
limit fails visibly; every task is safe to run again, so its retry or a cleared re-run is safe.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Long enough for a 2-million-message day's shard or a migration batch run on a slow day, short
# enough that a hung read (a FIFO, a dead connection) is noticed the same day.
TASK_TIMEOUT = dt.timedelta(hours=3)

DEFAULT_TASK_ARGS: dict[str, Any] = {
    "owner": "mes-rollout",
    "execution_timeout": TASK_TIMEOUT,
}
