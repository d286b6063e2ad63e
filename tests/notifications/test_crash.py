"""A sending process killed (SIGKILL) at random points of a 20 000-email run, several times, then run
to completion, against an aiosmtpd server in another process that records every Message-ID it
receives: everyone gets at least one email, the duplicates stay within kills x the in-flight
limit (the bound the README states), and every copy received is accounted for in the database."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from console.synth.notifications import synthetic_wave
from mes_rollout.config import PROJECT_ROOT
from mes_rollout.db import make_engine, upgrade
from notifications.loopback_smtp import free_port
from notifications.sending import in_flight_limit

EMAILS = 20_000
KILLS = 4
CONNECTIONS = 8
LEASE_SECONDS = 2  # a killed sender's claims pass to the next sender after this long


@pytest.mark.slow
def test_killed_senders_lose_nothing_and_duplicate_within_the_bound(tmp_path: Path) -> None:
    seed = int(os.environ.get("MES_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed {seed} (MES_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    env = {
        **os.environ,
        "MES_VAR_DIR": str(tmp_path / "var"),
        "MES_DATABASE_URL": f"sqlite:///{tmp_path / 'mes.db'}",
        "MES_SMTP_CONNECTIONS": str(CONNECTIONS),
        "MES_SEND_LEASE": str(LEASE_SECONDS),
    }
    engine = make_engine(env["MES_DATABASE_URL"])
    upgrade(engine)
    synthetic_wave(engine, tmp_path / "var", EMAILS, shard_size=5_000)
    received_file = tmp_path / "received.txt"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "notifications.loopback_smtp", "--port", str(port), "--mode", "record",
         "--record-file", str(received_file)],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
    )
    sender = [sys.executable, "-m", "tests.notifications.crash_sender", str(port)]
    kills, held_at_kills = 0, []
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        for attempt in range(KILLS):
            child = subprocess.Popen([*sender, f"run-{attempt}"], stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=PROJECT_ROOT)
            assert child.stdout is not None and child.stdout.readline().strip() == "started"
            time.sleep(rng.uniform(0.3, 2.5))
            if child.poll() is None:
                child.kill()  # SIGKILL: no cleanup, no last commit
                kills += 1
            child.wait()
            with engine.connect() as connection:
                # What the killed sender held: its claims wait for their lease to pass, meanwhile
                # the next sender leaves them alone.
                held = connection.execute(
                    text("SELECT COUNT(*) FROM notifications WHERE status = 'sending' AND claimed_by LIKE :run"),
                    {"run": f"run-{attempt}/%"},
                ).scalar_one()
            assert held <= in_flight_limit(CONNECTIONS)
            held_at_kills.append(held)
        time.sleep(LEASE_SECONDS + 0.5)  # the last killed sender's lease runs out: the final run takes over
        final = subprocess.run([*sender, "final"], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                               timeout=240)
        assert final.returncode == 0, final.stderr[-3000:]
    finally:
        server.terminate()
        server.communicate(timeout=30)

    received = Counter(received_file.read_text().split())
    with engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT notification_id, status FROM notifications")).all())
        attempts = dict(connection.execute(text("SELECT notification_id, attempts FROM notifications")).all())
        answered = Counter(connection.execute(text("SELECT notification_id FROM sending_attempts")).scalars())
        enrolment_states = Counter(connection.execute(text("SELECT state FROM enrolments")).scalars())
    engine.dispose()
    duplicates = sum(copies - 1 for copies in received.values())
    print(f"kills {kills}, held in sending after each kill {held_at_kills}, duplicates {duplicates}, "
          f"bound {kills * in_flight_limit(CONNECTIONS)}")

    assert kills >= KILLS - 1 and sum(held_at_kills) > 0  # the kills did land in the middle of sending
    assert set(received) == set(statuses)  # every recipient got at least one email, and nothing else came
    assert duplicates <= kills * in_flight_limit(CONNECTIONS)
    assert duplicates <= sum(held_at_kills)  # at most one copy too many per message held at a kill
    assert set(statuses.values()) == {"sent"}
    assert enrolment_states == Counter({"notified": sum(enrolment_states.values())})
    for notification_id, copies in received.items():
        # Each copy beyond the first went out in an attempt a kill cut short (claimed, never answered).
        assert copies <= attempts[notification_id]
        assert copies - 1 <= attempts[notification_id] - answered[notification_id]
