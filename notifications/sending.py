"""Sending emails: claim, render, hand to the relay, record; never more than a fixed number in flight.

The delivery guarantee (at least once, duplicates bounded):

1. A message is marked `sending` with one more attempt, and that is committed, BEFORE it is
   handed to the relay (`dao.claim_for_sending`).
2. It is marked `sent` (and the opt-out window of its people starts) only after the relay
   answered 250, in a later transaction.
3. A crash between 1 and 2 leaves the message `sending`. The next sender of the same shard, or
   the periodic settle task, hands it over again: nobody is skipped, and a message the relay
   had already accepted arrives twice. A message recorded `sent` is never handed over again.
4. One sending process never holds more than `in_flight_limit(connections)` =
   connections x IN_FLIGHT_PER_CONNECTION messages in `sending` (claimed, not yet recorded): it
   claims the next chunk only when the chunk fits under that limit. So one crash duplicates at
   most that many messages (1 600 with the default 8 connections); k crashes, at most k times that.
   Every copy carries the same Message-ID and says the same (same codes, same deadline: the send
   date is fixed at the first claim), so a mail client shows one message.

Besides crashes, SMTP itself can duplicate: a connection lost after the end of DATA but before
the relay's answer is retried (the relay may have taken the message): one copy per such loss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from enrolment.codes import wave_key
from enrolment.window import start_windows
from mes_rollout.config import OptOutWindow, Settings
from mes_rollout.constants import NotificationStatus
from notifications import dao, fallback
from notifications.email_client import (
    EmailClient,
    EmailClientError,
    PermanentEmailError,
    RelayConfigurationError,
    RelayConnection,
    RelayUnreachableError,
    SmtpTarget,
    TemporaryEmailError,
)
from notifications.loopback_smtp import embedded_relay
from notifications.render import UnsafeRecipientAddress, build_email, message_content

log = logging.getLogger(__name__)

IN_FLIGHT_PER_CONNECTION = 200
# The producer looks every tick whether a chunk fits; at the end of a scope the last answers are
# recorded once all are back, or every _RECORD_AT_MOST_AFTER seconds while retries are waiting.
_TICK_SECONDS = 0.005
_RECORD_AT_MOST_AFTER = 0.2
Status = NotificationStatus


def in_flight_limit(connections: int) -> int:
    """The most messages one sending process holds in `sending` at any time: the duplicate bound
    of one crash."""
    return connections * IN_FLIGHT_PER_CONNECTION


@dataclass(frozen=True)
class RetryPolicy:
    """Temporary failures are retried after first_delay, then twice as long each time."""

    max_attempts: int = 5
    first_delay: float = 2.0
    max_delay: float = 120.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Scope:
    """Which emails one sender takes: those of one shard (or all), created ones or only those a
    crash left in `sending` before `stuck_before`."""

    shard: int | None
    include_created: bool
    stuck_before: dt.datetime


@dataclass
class SendSummary:
    sent: int = 0
    permanent_failures: int = 0
    technical_failures: int = 0
    temporary_attempts: int = 0
    resent_after_crash: int = 0
    letters_queued: int = 0
    unreachable_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Kind(Enum):
    SENT = "sent"
    PERMANENT = "permanent_failure"
    TECHNICAL = "technical_failure"
    RETRY = "temporary_failure"  # the relay said "later": the message stays `sending`


@dataclass(frozen=True)
class _Job:
    message: dao.PendingMessage  # as claimed: `attempts` is the count before this attempt
    send_date: dt.date
    claimed_at: dt.datetime

    @property
    def attempt(self) -> int:
        return self.message.attempts + 1


@dataclass(frozen=True)
class _Result:
    job: _Job
    kind: _Kind
    smtp_code: int | None
    claimed: bool = True  # False: left by a crash with its attempts used up, not claimed again


@dataclass
class _State:
    outstanding: int = 0  # claimed and not yet recorded final (retries waiting included)
    results: list[_Result] = field(default_factory=list)  # answers not yet recorded
    finals: int = 0  # of which final (not "retry later")
    retries: list[tuple[float, int, _Job]] = field(default_factory=list)
    fatal: BaseException | None = None


class EmailSender:
    """One process sending the emails of a scope over `connections` relay connections."""

    def __init__(
        self,
        engine: Engine,
        *,
        target: SmtpTarget,
        window: OptOutWindow,
        var_dir: Path,
        logical_date: dt.date,
        run_id: str,
        scope: Scope,
        connections: int = 8,
        rate_per_second: float = 0.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._engine = engine
        self._target = target
        self._window = window
        self._var_dir = var_dir
        self._logical_date = logical_date
        self._run_id = run_id
        self._scope = scope
        self._connections = connections
        self._rate = rate_per_second
        self._retry = retry
        self.limit = in_flight_limit(connections)
        self._claim_size = max(1, self.limit // 2)
        self._keys: dict[str, bytes] = {}
        self._sequence = itertools.count()
        self._state = _State()
        self.summary = SendSummary()

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> SendSummary:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        client = EmailClient(self._target, connections=self._connections, rate_per_second=self._rate)
        workers = [asyncio.create_task(self._work(connection)) for connection in client.connections]
        try:
            await self._produce()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await client.close()
        if self._state.fatal is not None:
            raise self._state.fatal
        return self.summary

    async def _produce(self) -> None:
        """Claim chunk after chunk while the in-flight limit allows, then wait for the last answers.
        Each step is one transaction: record the answers come back so far, claim the next chunk."""
        phases = [Status.SENDING] + ([Status.CREATED] if self._scope.include_created else [])
        for status in phases:
            after = ""
            while True:
                await self._until(lambda: self._room() >= self._claim_size or self._retry_due())
                if self._state.fatal:
                    return
                due = self._due_retries()
                room = min(self._claim_size, self._room()) - len(due)
                fresh = await asyncio.to_thread(self._fetch, status, after, room)
                if not due and not fresh:
                    break
                if fresh:
                    after = fresh[-1].notification_id
                await self._step(due, fresh)
        waited = 0.0
        while not self._state.fatal:
            due = self._due_retries()
            answers = len(self._state.results)
            if self._state.outstanding == 0 and not due and not answers:
                return
            if due or (answers and (self._finals() >= self._state.outstanding or waited >= _RECORD_AT_MOST_AFTER)):
                await self._step(due, [])
                waited = 0.0
            else:
                await asyncio.sleep(_TICK_SECONDS)
                waited += _TICK_SECONDS

    async def _until(self, predicate: Any) -> None:
        while self._state.fatal is None and not predicate():
            await asyncio.sleep(_TICK_SECONDS)

    def _finals(self) -> int:
        return self._state.finals

    def _answered(self, result: _Result) -> None:
        self._state.results.append(result)
        if result.kind is not _Kind.RETRY:
            self._state.finals += 1

    def _room(self) -> int:
        """How many more messages may be claimed once the answers waiting are recorded."""
        return self.limit - self._state.outstanding + self._finals()

    def _retry_due(self) -> bool:
        retries = self._state.retries
        return bool(retries) and retries[0][0] <= asyncio.get_running_loop().time()

    def _due_retries(self) -> list[_Job]:
        now = asyncio.get_running_loop().time()
        due: list[_Job] = []
        retries = self._state.retries
        while retries and retries[0][0] <= now and len(due) < self._claim_size:
            due.append(heapq.heappop(retries)[2])
        return due

    def _fetch(self, status: Status, after: str, limit: int) -> list[dao.PendingMessage]:
        if limit <= 0:
            return []
        with self._engine.connect() as connection:
            dao.size_page_cache(connection)
            return dao.pending_emails(
                connection,
                logical_date=self._logical_date,
                status=status,
                after_id=after,
                limit=limit,
                shard=self._scope.shard,
                claimed_before=self._scope.stuck_before if status == Status.SENDING else None,
            )

    async def _step(self, due: list[_Job], fresh: list[dao.PendingMessage]) -> None:
        """One transaction: record the answers so far, claim `due` retries and `fresh` messages."""
        exhausted = [m for m in fresh if m.status == Status.SENDING and m.attempts >= self._retry.max_attempts]
        for message in exhausted:  # a crash left it `sending` with its attempts used up: no new try
            job = _Job(message, message.send_date or self._logical_date, _now())
            self._answered(_Result(job, _Kind.TECHNICAL, None, claimed=False))
        answers, self._state.results, self._state.finals = self._state.results, [], 0
        to_claim = [job.message for job in due] + [m for m in fresh if m not in exhausted]
        try:
            recorded, claimed, claimed_at = await asyncio.to_thread(self._step_in_db, answers, to_claim)
        except Exception as error:  # noqa: BLE001 - the run stops; its `sending` rows are re-sent later
            self._fail(error)
            return
        for name, value in recorded.as_dict().items():
            setattr(self.summary, name, getattr(self.summary, name) + value)
        retried = {job.message.notification_id for job in due}
        new = [m for m in claimed if m.notification_id not in retried]
        # A retry was counted when first claimed; one that someone else moved meanwhile leaves the count.
        lost = len(due) - (len(claimed) - len(new))
        finals = sum(1 for answer in answers if answer.kind is not _Kind.RETRY)
        self._state.outstanding += len(new) + len(exhausted) - lost - finals
        self.summary.resent_after_crash += sum(1 for m in new if m.status == Status.SENDING)
        for message in claimed:
            self._queue.put_nowait(_Job(message, message.send_date or self._logical_date, claimed_at))

    def _step_in_db(
        self, answers: list[_Result], messages: list[dao.PendingMessage]
    ) -> tuple[SendSummary, list[dao.PendingMessage], dt.datetime]:
        now = _now()
        with self._engine.begin() as connection:
            dao.size_page_cache(connection)
            recorded = self._record(connection, answers, now)
            claimed = dao.claim_for_sending(
                connection, messages, send_date=self._logical_date, now=now, run_id=self._run_id
            ) if messages else []
        return recorded, claimed, now

    # -- handing over ----------------------------------------------------------------------------

    async def _work(self, connection: RelayConnection) -> None:
        while True:
            job = await self._queue.get()
            result = await self._deliver(connection, job)
            if result is not None:
                self._answered(result)

    async def _deliver(self, connection: RelayConnection, job: _Job) -> _Result | None:
        message = job.message
        try:
            content = message_content(
                message.notification_id,
                message.recipient_nir,
                message.recipient,
                message.members,
                self._key(message.wave_id),
                job.send_date,
                self._window,
            )
            raw = build_email(content, message.email or "", sender=self._target.sender, attempt=job.attempt)
        except UnsafeRecipientAddress:
            return _Result(job, _Kind.PERMANENT, None)
        except Exception as error:  # noqa: BLE001 - a message that cannot be rendered stops the run
            self._fail(error)
            return None
        try:
            await connection.send(message.email or "", raw)
        except PermanentEmailError as error:
            return _Result(job, _Kind.PERMANENT, error.smtp_code)
        except TemporaryEmailError as error:
            if job.attempt >= self._retry.max_attempts:
                if isinstance(error, RelayUnreachableError):
                    # The relay, not the message: stop, and leave it `sending` for the next run
                    # rather than turn every email of an outage into a letter.
                    self._fail(error)
                    return None
                return _Result(job, _Kind.TECHNICAL, error.smtp_code)
            retry = _Job(
                dataclasses.replace(message, attempts=job.attempt, status=Status.SENDING.value), job.send_date, job.claimed_at
            )
            due = asyncio.get_running_loop().time() + self._retry.delay(job.attempt)
            heapq.heappush(self._state.retries, (due, next(self._sequence), retry))
            return _Result(job, _Kind.RETRY, error.smtp_code)
        except RelayConfigurationError as error:
            self._fail(error)
            return None
        except EmailClientError as error:
            return _Result(job, _Kind.TECHNICAL, error.smtp_code)
        return _Result(job, _Kind.SENT, 250)

    def _key(self, wave_id: str) -> bytes:
        if wave_id not in self._keys:
            self._keys[wave_id] = wave_key(self._var_dir, wave_id)
        return self._keys[wave_id]

    def _fail(self, error: BaseException) -> None:
        if self._state.fatal is None:
            self._state.fatal = error

    # -- recording -------------------------------------------------------------------------------

    def _record(self, connection: Any, batch: list[_Result], now: dt.datetime) -> SendSummary:
        summary = SendSummary(temporary_attempts=sum(1 for r in batch if r.kind is _Kind.RETRY))
        if not batch:
            return summary
        dao.record_attempts(
            connection,
            [
                dao.Attempt(r.job.message.notification_id, r.job.attempt, r.job.claimed_at, r.kind.value, r.smtp_code)
                for r in batch
                if r.claimed
            ],
            run_id=self._run_id,
            now=now,
        )
        sent = self._move(connection, batch, _Kind.SENT, Status.SENT, now)
        for send_date in sorted({job.send_date for job in sent}):
            ids = [job.message.notification_id for job in sent if job.send_date == send_date]
            start_windows(connection, ids, send_date, self._window, run_id=self._run_id, now=now)
        summary.sent = len(sent)
        for kind, status, bounced, reason in (
            (_Kind.PERMANENT, Status.PERMANENT_FAILURE, True, "email address refused by the relay"),
            (_Kind.TECHNICAL, Status.TECHNICAL_FAILURE, False, "email could not be handed to the relay"),
        ):
            moved = self._move(connection, batch, kind, status, now)
            outcome = fallback.email_failed(
                connection, [job.message.notification_id for job in moved], bounced=bounced, reason=reason,
                run_id=self._run_id, now=now,
            )
            summary.letters_queued += outcome.letters_queued
            summary.unreachable_messages += outcome.unreachable_messages
            if kind is _Kind.PERMANENT:
                summary.permanent_failures = len(moved)
            else:
                summary.technical_failures = len(moved)
        return summary

    def _move(self, connection: Any, batch: list[_Result], kind: _Kind, status: Status, now: dt.datetime) -> list[_Job]:
        results = [r for r in batch if r.kind is kind]
        jobs = {r.job.message.notification_id: r.job for r in results}
        moved = dao.transition(
            connection,
            [
                dao.Transition(
                    r.job.message.notification_id,
                    attempt=r.job.message.attempts + (1 if r.claimed else 0),
                    reason=f"SMTP {r.smtp_code}" if r.smtp_code and kind is not _Kind.SENT else None,
                )
                for r in results
            ],
            from_status=Status.SENDING,
            to_status=status,
            now=now,
            run_id=self._run_id,
            sent=kind is _Kind.SENT,
        )
        return [jobs[notification_id] for notification_id in moved]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextmanager
def relay(settings: Settings, airflow_connection: Any | None = None) -> Iterator[SmtpTarget]:
    """The relay to send through: the Airflow SMTP connection where there is one, else
    MES_SMTP_URL; 'embedded' starts a loopback relay keeping each message under the outbox."""
    if airflow_connection is not None:
        yield SmtpTarget.from_airflow_connection(airflow_connection)
    elif settings.is_embedded_smtp:
        with embedded_relay(settings.outbox_dir) as target:
            yield target
    else:
        yield SmtpTarget.from_url(settings.smtp_url)


def send_emails(
    engine: Engine,
    settings: Settings,
    target: SmtpTarget,
    *,
    logical_date: dt.date,
    run_id: str,
    shard: int | None,
    retry: RetryPolicy = RetryPolicy(),
) -> SendSummary:
    """Send the due emails of one shard (None: every shard, one after the other), first those a
    crash cut short. The caller ensures one sender per shard at a time (the DAG runs one mapped
    task per shard, and one run at a time)."""
    if shard is None:
        with engine.begin() as connection:
            dao.refresh_planner_statistics(connection)
            shards = dao.email_shards(connection, logical_date)
        total = SendSummary()
        for each in shards:
            part = send_emails(engine, settings, target, logical_date=logical_date, run_id=run_id, shard=each, retry=retry)
            for name, value in part.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total
    sender = EmailSender(
        engine,
        target=target,
        window=settings.opt_out_window,
        var_dir=settings.var_dir,
        logical_date=logical_date,
        run_id=run_id,
        scope=Scope(shard=shard, include_created=True, stuck_before=_now()),
        connections=settings.smtp_connections,
        rate_per_second=settings.smtp_rate_per_second,
        retry=retry,
    )
    summary = asyncio.run(sender.run())
    log.info("shard %s: %s", shard, summary.as_dict())
    return summary


def settle_stuck(
    engine: Engine,
    settings: Settings,
    target: SmtpTarget,
    *,
    logical_date: dt.date,
    run_id: str,
    stale_after: dt.timedelta = dt.timedelta(minutes=15),
    retry: RetryPolicy = RetryPolicy(),
) -> SendSummary:
    """The periodic settle: emails left `sending` for longer than `stale_after` (their sender
    died) are handed over again, or end `technical_failure` once their attempts are used up."""
    sender = EmailSender(
        engine,
        target=target,
        window=settings.opt_out_window,
        var_dir=settings.var_dir,
        logical_date=logical_date,
        run_id=run_id,
        scope=Scope(shard=None, include_created=False, stuck_before=_now() - stale_after),
        connections=settings.smtp_connections,
        rate_per_second=settings.smtp_rate_per_second,
        retry=retry,
    )
    return asyncio.run(sender.run())
