"""Senders that run at once never overlap on a message: two senders of the same day against one
PostgreSQL database and one aiosmtpd server on loopback, every copy received counted per
recipient; and a claim is taken over once its lease has passed, never while it runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from console.synth.notifications import synthetic_wave
from mes_rollout.config import load_settings
from notifications.loopback_smtp import serving
from notifications.sending import SendSummary, send_emails, settle_stuck
from tests.notifications.factories import adult, create_notification, create_wave, fetch, load_people, scalar
from tests.notifications.relay import ScriptedRelay

SEND_DAY = dt.date(2022, 1, 31)
MESSAGES = 300


class SlowCountingRelay:
    """Accepts every message after a short pause (so that senders interleave), counting per recipient."""

    def __init__(self) -> None:
        self.copies: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.002)
        self.copies.update(envelope.rcpt_tos)
        return "250 2.0.0 queued"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("round_number", [1, 2, 3])
def test_two_senders_of_the_same_day_send_each_message_once(
    engine: Engine, settings_env: Path, monkeypatch: pytest.MonkeyPatch, round_number: int
) -> None:
    monkeypatch.setenv("MES_SMTP_CONNECTIONS", "1")  # claims of 100: several chunks, so the senders interleave
    synthetic_wave(engine, settings_env, MESSAGES, send_date=SEND_DAY, shard_size=100)
    relay = SlowCountingRelay()
    summaries: dict[str, SendSummary] = {}
    errors: list[BaseException] = []

    def sender(name: str) -> None:
        try:
            summaries[name] = send_emails(
                engine, load_settings(), target, logical_date=SEND_DAY, run_id=f"round-{round_number}-{name}", shard=None
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    with serving(relay) as target:
        first = threading.Thread(target=sender, args=("first",))
        first.start()
        # The second starts while the first holds claimed messages in `sending`: what the old
        # sender took for a crash's leftovers.
        deadline = time.monotonic() + 10
        while scalar(engine, "SELECT COUNT(*) FROM notifications WHERE status = 'sending'") == 0:
            assert time.monotonic() < deadline and first.is_alive(), "the first sender never claimed anything"
            time.sleep(0.005)
        second = threading.Thread(target=sender, args=("second",))
        second.start()
        first.join(60)
        second.join(60)

    assert errors == []
    emails = {f"personne.{index}@example.fr" for index in range(MESSAGES)}
    assert set(relay.copies) == emails  # nobody skipped
    assert [address for address, copies in relay.copies.items() if copies > 1] == []  # nobody told twice
    assert summaries["first"].sent + summaries["second"].sent == MESSAGES
    assert summaries["first"].sent > 0 and summaries["second"].sent > 0  # both really sent, side by side
    assert summaries["first"].resent_after_crash == summaries["second"].resent_after_crash == 0
    rows = fetch(engine, "SELECT status, attempts, COUNT(*) AS n FROM notifications GROUP BY status, attempts")
    assert [(row.status, row.attempts, row.n) for row in rows] == [("sent", 1, MESSAGES)]
    assert scalar(engine, "SELECT COUNT(*) FROM sending_attempts") == MESSAGES
    claimers = fetch(engine, "SELECT DISTINCT run_id FROM sending_attempts ORDER BY run_id")
    assert [row.run_id for row in claimers] == [f"round-{round_number}-first", f"round-{round_number}-second"]


def _hold(engine: Engine, notification_id: str, *, by: str, until: dt.datetime, attempts: int = 1) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE notifications SET status = 'sending', attempts = :attempts, send_date = :day,"
                " claimed_by = :by, lease_until = :until WHERE notification_id = :id"
            ),
            {"attempts": attempts, "day": SEND_DAY, "by": by, "until": until, "id": notification_id},
        )


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    people = [adult(email="expired@example.fr"), adult(email="live@example.fr")]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    expired, live = (create_notification(engine, settings_env, wave, person) for person in people)
    live_until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    _hold(engine, expired, by="dead-sender", until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    _hold(engine, live, by="live-sender", until=live_until)
    handler = ScriptedRelay()

    with serving(handler) as target:
        summary = send_emails(engine, load_settings(), target, logical_date=SEND_DAY, run_id="taker", shard=None)
        settled = settle_stuck(engine, load_settings(), target, logical_date=SEND_DAY, run_id="settle")

    assert summary.sent == 1 and summary.resent_after_crash == 1 and settled.sent == 0
    assert [message["To"] for message in handler.messages()] == ["expired@example.fr"]
    rows = {row.notification_id: row for row in fetch(engine, "SELECT * FROM notifications")}
    assert (rows[expired].status, rows[expired].attempts) == ("sent", 2)
    assert rows[expired].claimed_by.startswith("taker/0/")
    assert (rows[live].status, rows[live].attempts, rows[live].claimed_by) == ("sending", 1, "live-sender")
    assert scalar(engine, "SELECT COUNT(*) FROM sending_attempts WHERE notification_id = :id", id=live) == 0

    # Once the live sender's lease passes (it died), the settle takes its message over.
    _hold(engine, live, by="live-sender", until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    with serving(handler) as target:
        settled = settle_stuck(engine, load_settings(), target, logical_date=SEND_DAY, run_id="settle")
    assert settled.sent == 1 and settled.resent_after_crash == 1
    assert [message["To"] for message in handler.messages()] == ["expired@example.fr", "live@example.fr"]


def test_a_sender_renews_the_lease_of_what_it_still_holds(
    engine: Engine, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 1 s lease and a relay answering after 2.5 s, the first sender still holds its
    message when a second sender starts at 1.5 s: the renewed lease keeps the second one off."""
    monkeypatch.setenv("MES_SEND_LEASE", "1")
    person = adult(email="slow@example.fr")
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)

    class SlowRelay(SlowCountingRelay):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(2.5)
            self.copies.update(envelope.rcpt_tos)
            return "250 2.0.0 queued"

    relay = SlowRelay()
    results: dict[str, SendSummary] = {}
    with serving(relay) as target:
        first = threading.Thread(
            target=lambda: results.setdefault(
                "first", send_emails(engine, load_settings(), target, logical_date=SEND_DAY, run_id="first", shard=None)
            )
        )
        first.start()
        time.sleep(1.5)
        results["second"] = send_emails(engine, load_settings(), target, logical_date=SEND_DAY, run_id="second",
                                        shard=None)
        first.join(30)

    assert relay.copies == Counter({"slow@example.fr": 1})
    assert results["first"].sent == 1 and results["second"].sent == 0
    assert scalar(engine, "SELECT attempts FROM notifications WHERE notification_id = :id", id=notification) == 1
