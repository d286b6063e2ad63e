"""The SMTP relay down for a while in the middle of a day's sending, on PostgreSQL: a real aiosmtpd
relay on loopback, stopped once some messages of a shard went (its sessions dropped, then every
connection refused) and started again on the same port. The messages wait and go once it is back;
each recipient receives one copy, counted at the relay across both of its lifetimes; no message
ends failed, and no email becomes a letter because the relay was down."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from console.synth.notifications import synthetic_wave
from mes_rollout.config import load_settings
from mes_rollout.db import as_datetime
from notifications import dao, tasks
from notifications.email_client import RelayUnreachableError, SmtpTarget
from notifications.loopback_smtp import free_port, serving
from notifications.sending import RetryPolicy, SendSummary, send_emails, settle_stuck
from tests.faults.conftest import wait_until
from tests.notifications.factories import fetch

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

SEND_DAY = dt.date(2022, 1, 31)
RUN_ID = "scheduled__2022-01-31T06:00:00+00:00"  # one Airflow run: its tries share the run id
MESSAGES = 90
SHARD_SIZE = 30  # three shards, one mapped task each
DOWN_AFTER = 12  # the relay goes down once this many messages of shard 0 went
# The first try's retries give up well before the relay comes back (the run's own retries with
# backoff are 2 s, 4 s, 8 s, 16 s: an outage of a minute outlasts them the same way).
SHORT_BUDGET = RetryPolicy(max_attempts=3, first_delay=0.05)


class OutageRelay:
    """An aiosmtpd handler that counts the copies each recipient received, whichever server
    lifetime took them, and goes down after `down_after` messages: from then on a new transaction
    waits at MAIL until the server stops (its connection is then dropped), so that no message is
    half accepted when the server goes away (a relay that took a message but whose 250 was lost
    is the documented SMTP duplicate, not the fault tested here)."""

    def __init__(self, down_after: int) -> None:
        self.copies: Counter[str] = Counter()
        self.down_after = down_after
        self.going_down = threading.Event()
        self.went_down = False  # once: started again, it stays up
        self.in_transaction = 0  # MAIL accepted, DATA not yet answered

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        while self.going_down.is_set():
            await asyncio.sleep(0.01)  # until the server stops and drops this session
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.in_transaction += 1
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_transaction -= 1
        self.copies.update(envelope.rcpt_tos)
        if not self.went_down and sum(self.copies.values()) >= self.down_after:
            self.went_down = True
            self.going_down.set()
        return "250 2.0.0 queued"


class LoopbackRelay:
    """One relay on a fixed loopback port that can be stopped and started again."""

    def __init__(self, handler: OutageRelay) -> None:
        self.handler = handler
        self.port = free_port()
        self._controller: Controller | None = None

    @property
    def target(self) -> SmtpTarget:
        return SmtpTarget(host="127.0.0.1", port=self.port, timeout=10)

    def start(self) -> None:
        self.handler.going_down.clear()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def stop_when_going_down(self) -> threading.Thread:
        """Stop the server once the handler decided to go down and the transactions under way
        were answered (a moment later, so that the 250 of the last message accepted reaches its
        sender)."""

        def watch() -> None:
            self.handler.going_down.wait(60)
            deadline = time.monotonic() + 10
            while self.handler.in_transaction > 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.2)
            self.stop()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        return watcher


@pytest.fixture
def relay() -> Iterator[LoopbackRelay]:
    loopback = LoopbackRelay(OutageRelay(DOWN_AFTER))
    loopback.start()
    try:
        yield loopback
    finally:
        loopback.stop()


def _statuses(engine: Engine) -> dict[tuple[str, str], int]:
    rows = fetch(engine, "SELECT channel, status, COUNT(*) FROM notifications GROUP BY channel, status")
    return {(row[0], row[1]): int(row[2]) for row in rows}


def _shards(engine: Engine) -> list[int]:
    return [int(row[0]) for row in fetch(engine, "SELECT DISTINCT shard FROM notifications ORDER BY shard")]


def _assert_everyone_told_once(engine: Engine, relay: LoopbackRelay, summaries: list[dict[str, int]]) -> None:
    emails = {f"personne.{index}@example.fr" for index in range(MESSAGES)}
    assert set(relay.handler.copies) == emails  # nobody skipped
    assert [
        address for address, copies in relay.handler.copies.items() if copies != 1
    ] == []  # nobody told twice
    assert _statuses(engine) == {("email", "sent"): MESSAGES}  # no failure, no letter
    assert sum(summary["sent"] for summary in summaries) == MESSAGES
    assert sum(summary["technical_failures"] + summary["permanent_failures"] for summary in summaries) == 0
    assert sum(summary["letters_queued"] for summary in summaries) == 0
    people = fetch(
        engine, "SELECT COUNT(*), SUM(CASE WHEN state = 'notified' THEN 1 ELSE 0 END) FROM enrolments"
    )[0]
    assert people[0] == people[1] == MESSAGES + MESSAGES // 10  # every person told, the children too
    fallbacks = fetch(engine, "SELECT COUNT(*) FROM notifications WHERE replaces_notification_id IS NOT NULL")
    assert fallbacks[0][0] == 0
    bounced = fetch(engine, "SELECT COUNT(*) FROM persons WHERE email_bounced")
    assert bounced[0][0] == 0


@pytest.mark.slow
def test_a_relay_down_for_a_few_seconds_is_waited_for_within_the_run(
    engine: Engine, settings_env: Path, monkeypatch: pytest.MonkeyPatch, relay: LoopbackRelay
) -> None:
    """Down for about a second: the shard's task (the production retry policy, through the task
    function the DAG calls) retries the messages the outage caught and sends them once it is back."""
    monkeypatch.setenv("MES_SMTP_URL", f"smtp://127.0.0.1:{relay.port}")
    monkeypatch.setenv("MES_SMTP_CONNECTIONS", "2")
    synthetic_wave(engine, settings_env, MESSAGES, send_date=SEND_DAY, shard_size=SHARD_SIZE)
    shards = tasks.email_shards(SEND_DAY)
    assert shards == [0, 1, 2]
    watcher = relay.stop_when_going_down()

    def back_after_a_second() -> None:
        watcher.join(60)
        time.sleep(1.0)
        relay.start()

    restarter = threading.Thread(target=back_after_a_second, daemon=True)
    restarter.start()
    summaries = [tasks.send_shard(SEND_DAY, RUN_ID, shard) for shard in shards]
    restarter.join(10)

    assert relay.handler.going_down.is_set() is False and sum(relay.handler.copies.values()) == MESSAGES
    assert summaries[0]["temporary_attempts"] > 0  # the outage did catch messages of shard 0
    _assert_everyone_told_once(engine, relay, summaries)
    retried = fetch(
        engine,
        "SELECT COUNT(DISTINCT notification_id) FROM sending_attempts WHERE outcome = 'temporary_failure'",
    )
    assert retried[0][0] > 0


@pytest.mark.slow
def test_a_relay_down_longer_than_the_runs_retries_fails_the_run_and_its_retry_sends_everything_once(
    engine: Engine, settings_env: Path, monkeypatch: pytest.MonkeyPatch, relay: LoopbackRelay
) -> None:
    """Down longer than the retries of each shard's first try: each first try fails (the relay
    cannot be reached), the settle task that follows fails too, nothing becomes a letter; the
    relay comes back, Airflow retries the shards (same run id, the task function with the
    production retry policy) and every message goes, once."""
    monkeypatch.setenv("MES_SMTP_URL", f"smtp://127.0.0.1:{relay.port}")
    monkeypatch.setenv("MES_SMTP_CONNECTIONS", "2")
    synthetic_wave(engine, settings_env, MESSAGES, send_date=SEND_DAY, shard_size=SHARD_SIZE)
    shards = _shards(engine)
    assert shards == [0, 1, 2]
    watcher = relay.stop_when_going_down()
    settings = load_settings()
    summaries: list[dict[str, int]] = []

    # The first try of each mapped task, while the relay goes down and stays down.
    failed = []
    for shard in shards:
        try:
            summary = send_emails(
                engine,
                settings,
                relay.target,
                logical_date=SEND_DAY,
                run_id=RUN_ID,
                shard=shard,
                retry=SHORT_BUDGET,
            )
        except RelayUnreachableError:
            failed.append(shard)
        else:
            summaries.append({"shard": shard, **summary.as_dict()})
        if shard == 0:
            watcher.join(30)
            assert not watcher.is_alive(), "the relay never went down"
    went_before_the_outage = sum(relay.handler.copies.values())
    assert DOWN_AFTER <= went_before_the_outage < SHARD_SIZE, went_before_the_outage
    assert failed == shards  # every first try stopped on the relay, none gave up a message
    assert ("email", "technical_failure") not in _statuses(engine)
    # The DAG's settle runs after the shards whatever their state (trigger rule all_done): the
    # relay is still down, it fails too, and turns nothing into a letter.
    with pytest.raises(RelayUnreachableError):
        settle_stuck(engine, settings, relay.target, logical_date=SEND_DAY, run_id=RUN_ID, retry=SHORT_BUDGET)
    statuses = _statuses(engine)
    assert set(statuses) <= {("email", "sent"), ("email", "sending"), ("email", "created")}, statuses
    assert statuses[("email", "sent")] == went_before_the_outage  # what went is recorded, once
    exhausted = fetch(
        engine,
        "SELECT COUNT(*) FROM notifications WHERE status = 'sending' AND attempts >= :n",
        n=SHORT_BUDGET.max_attempts,
    )
    assert exhausted[0][0] > 0  # messages used their whole budget against the dead relay

    # The relay is back; Airflow retries each failed shard in the same run (the task function).
    relay.start()
    wait_until("the relay to listen again", lambda: _listening(relay.port), timeout=10)
    summaries += [tasks.send_shard(SEND_DAY, RUN_ID, shard) for shard in failed]

    _assert_everyone_told_once(engine, relay, _with_first_tries(summaries, went_before_the_outage))
    # Sending the day again (a cleared run) sends nothing more.
    again = send_emails(engine, settings, relay.target, logical_date=SEND_DAY, run_id=RUN_ID, shard=None)
    assert again == SendSummary()
    assert max(relay.handler.copies.values()) == 1


def _with_first_tries(summaries: list[dict[str, int]], sent_before: int) -> list[dict[str, int]]:
    """The retries' summaries, and what the failed first tries sent before the relay went down
    (a failed task returns no summary)."""
    first = {"sent": sent_before, "technical_failures": 0, "permanent_failures": 0, "letters_queued": 0}
    return [*summaries, first]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LostWhileAnotherWasTaken:
    """Drops the connection of one recipient's first two tries (the second only once the other
    recipient's message is being accepted), answers its third 451 (busy, as a relay just back
    may be), then takes it; takes every other message."""

    def __init__(self, doomed: str) -> None:
        self.doomed = doomed
        self.doomed_tries = 0
        self.copies: Counter[str] = Counter()
        self._second_try = threading.Event()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == self.doomed and self.doomed_tries < 2:
            self.doomed_tries += 1
            if self.doomed_tries == 2:
                self._second_try.set()
                while not self.copies:  # the other message accepted...
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)  # ...and its 250 at the sender, before this connection drops
            server.transport.close()
            return "421 4.4.2 gone"
        if address == self.doomed and self.doomed_tries == 2:
            self.doomed_tries += 1
            return "451 4.3.0 busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        while self.doomed not in envelope.rcpt_tos and not self._second_try.is_set():
            await asyncio.sleep(0.005)
        self.copies.update(envelope.rcpt_tos)
        return "250 2.0.0 queued"


def test_a_run_stopped_by_the_relay_records_what_the_relay_had_already_taken(
    engine: Engine, settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay is lost on one connection at a message's last attempt while the other connection's
    message was just accepted: the run stops, but records that message sent first, so that its
    retry sends only the one the relay never took; that one, given back, has its attempts afresh
    (a 451 from the relay just back is retried, not taken for the end of its attempts)."""
    monkeypatch.setenv("MES_SMTP_CONNECTIONS", "2")
    synthetic_wave(engine, settings_env, 2, send_date=SEND_DAY)
    first, second = (
        row[0] for row in fetch(engine, "SELECT email FROM notifications ORDER BY notification_id")
    )
    handler = LostWhileAnotherWasTaken(doomed=second)
    budget = RetryPolicy(max_attempts=2, first_delay=0.01)
    with serving(handler) as target:
        with pytest.raises(RelayUnreachableError):
            send_emails(
                engine, load_settings(), target, logical_date=SEND_DAY, run_id=RUN_ID, shard=0, retry=budget
            )
        rows = {
            row.email: row
            for row in fetch(engine, "SELECT email, status, attempts, status_detail FROM notifications")
        }
        assert (rows[first].status, rows[first].attempts) == ("sent", 1)  # recorded before the run stopped
        assert (rows[second].status, rows[second].attempts) == ("sending", 2)
        assert rows[second].status_detail == dao.RELAY_UNREACHABLE  # given back, not left as a crash's
        attempts = fetch(
            engine, "SELECT attempt, outcome, smtp_code FROM sending_attempts ORDER BY notification_id"
        )
        assert len(attempts) == 3  # the last try against the lost relay is on record too

        again = send_emails(
            engine, load_settings(), target, logical_date=SEND_DAY, run_id=RUN_ID, shard=0, retry=budget
        )

    assert again.sent == 1 and again.technical_failures == 0 and again.temporary_attempts == 1
    assert handler.copies == Counter({first: 1, second: 1})
    assert _statuses(engine) == {("email", "sent"): 2}
    assert fetch(engine, "SELECT attempts FROM notifications WHERE email = :e", e=second)[0][0] == 4


@pytest.mark.slow
def test_what_the_outage_held_back_to_the_next_day_is_dated_and_given_its_window_from_that_day(
    engine: Engine, settings_env: Path, monkeypatch: pytest.MonkeyPatch, relay: LoopbackRelay
) -> None:
    """The relay goes down on Monday 31 January 2022 and stays down past every retry of the day;
    the rest goes with Tuesday's run. Those told on Monday: sent 31 January, last day to oppose
    28 February. Those told on Tuesday: sent 1 February, last day 1 March (end of day, Paris,
    22:59:59.999999 UTC in winter) — not the day less that the first claim's date would give."""
    monkeypatch.setenv("MES_SMTP_URL", f"smtp://127.0.0.1:{relay.port}")
    monkeypatch.setenv("MES_SMTP_CONNECTIONS", "2")
    synthetic_wave(engine, settings_env, MESSAGES, send_date=SEND_DAY, shard_size=MESSAGES)
    watcher = relay.stop_when_going_down()
    settings = load_settings()
    with pytest.raises(RelayUnreachableError):
        send_emails(
            engine, settings, relay.target, logical_date=SEND_DAY, run_id=RUN_ID, shard=0, retry=SHORT_BUDGET
        )
    watcher.join(30)
    monday = sum(relay.handler.copies.values())
    assert DOWN_AFTER <= monday < MESSAGES

    relay.start()
    wait_until("the relay to listen again", lambda: _listening(relay.port), timeout=10)
    tuesday = dt.date(2022, 2, 1)
    send_emails(engine, settings, relay.target, logical_date=tuesday, run_id="scheduled__2022-02-01T06:00:00+00:00",
                shard=0)  # fmt: skip
    assert max(relay.handler.copies.values()) == 1 and len(relay.handler.copies) == MESSAGES
    dates = dict(
        fetch(engine, "SELECT CAST(send_date AS TEXT), COUNT(*) FROM notifications GROUP BY send_date")
    )
    assert dates == {"2022-01-31": monday, "2022-02-01": MESSAGES - monday}, dates
    deadlines = fetch(
        engine,
        "SELECT CAST(n.send_date AS TEXT), e.opt_out_deadline FROM enrolments AS e"
        " JOIN notification_members AS m ON m.nir = e.nir"
        " JOIN notifications AS n ON n.notification_id = m.notification_id",
    )
    by_day: dict[str, set[dt.datetime]] = {}
    for send_date, deadline in deadlines:
        by_day.setdefault(send_date, set()).add(as_datetime(deadline))
    assert by_day == {
        "2022-01-31": {dt.datetime(2022, 2, 28, 22, 59, 59, 999_999, tzinfo=dt.UTC)},
        "2022-02-01": {dt.datetime(2022, 3, 1, 22, 59, 59, 999_999, tzinfo=dt.UTC)},
    }
