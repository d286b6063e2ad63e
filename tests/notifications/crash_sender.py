"""The sending process the crash test kills: sends every due email of the test database, then exits.

Run as `python -m tests.notifications.crash_sender PORT RUN_ID` with MES_VAR_DIR and MES_DATABASE_URL set.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from mes_rollout.config import load_settings
from mes_rollout.db import make_engine
from notifications.email_client import SmtpTarget
from notifications.sending import send_emails

SEND_DAY = dt.date(2022, 1, 31)


def main() -> int:
    port, run_id = int(sys.argv[1]), sys.argv[2]
    settings = load_settings()
    engine = make_engine(settings.database_url)
    print("started", flush=True)
    summary = send_emails(engine, settings, SmtpTarget("127.0.0.1", port), logical_date=SEND_DAY, run_id=run_id,
                          shard=None)
    print(json.dumps(summary.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
