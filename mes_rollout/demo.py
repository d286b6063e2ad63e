"""`make demo`: the main job end to end on the embedded default (SQLite, loopback SMTP)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from mes_rollout.config import load_settings

log = logging.getLogger(__name__)


def run_demo(persons: int, seed: int) -> dict[str, Any]:
    from enrolment.register import load_register
    from mes_rollout.db import get_engine
    from mes_rollout.status import pipeline_status
    from mes_rollout.synth import generate

    settings = load_settings()
    extract_dir = settings.var_dir / "demo" / f"extract-{persons}-{seed}"
    log.info("synthesising %d people into %s", persons, extract_dir)
    synth = generate(persons, seed, extract_dir, dirty=0.01)
    engine = get_engine(settings.database_url)
    intake = load_register(engine, extract_dir / "register.csv", as_of=dt.date(2022, 1, 28))
    with engine.connect() as connection:
        status = pipeline_status(connection)
    return {
        "database": settings.database_url,
        "synthetic_extract": str(extract_dir),
        "synth": synth.as_dict(),
        "register_intake": intake.as_dict(),
        "status": status,
    }
