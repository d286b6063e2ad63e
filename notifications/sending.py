"""Sending emails: claim, render, hand to the relay, record; never more than a fixed number in flight.

The delivery guarantee (at least once, duplicates bounded, senders never overlap):

1. A message is marked `sending` with one more attempt and a lease (claimed_by: this sender's
   claim id; lease_until: now + MES_SEND_LEASE), and that is committed, BEFORE it is handed to
   the relay (`dao.claim_for_sending`). The claim picks its rows under row locks (PostgreSQL:
   FOR UPDATE SKIP LOCKED; SQLite: one writer, BEGIN IMMEDIATE), so two live senders never claim
   the same message: a second sender skips what the first holds. A sender renews the lease of
   what it holds while it runs, and gives it up when it stops.
2. It is marked `sent` (and the opt-out window of its people starts) only after the relay
   answered 250, in a later transaction, and only while this attempt still owns the row.
3. A crash between 1 and 2 leaves the message `sending`. Once its lease has passed, the next
   sender of the same shard, or the periodic settle task, hands it over again: nobody is
   skipped, and a message the relay had already accepted arrives twice. A message recorded
   `sent` is never handed over again, nor one whose sender's lease is still running.
   A sender that stops on an error (not killed) first records the answers it has, then gives
   back what it still holds at once. When it stopped because the relay could not be reached,
   what it gives back is marked so (`dao.RELAY_UNREACHABLE`): the next sender tries those again
   with a fresh count of attempts, never gives them up as a crash's leftovers, so an outage
   longer than the retries turns no email into a letter.
4. One sending process never holds more than `in_flight_limit(connections)` =
   connections x IN_FLIGHT_PER_CONNECTION messages in `sending` (claimed, not yet recorded): it
   claims the next chunk only when the chunk fits under that limit. So one crash duplicates at
   most that many messages (1 600 with the default 8 connections); k crashes, at most k times that.
   Every copy carries the same Message-ID and says the same (same codes, same deadline: the send
   date is fixed at the first claim), so a mail client shows one message. One exception: a message
   given back because the relay could not be reached is dated again by the claim that sends it,
   so that its window runs from the day it really left; should a copy have gone out before the
   outage, the one that counts only ever gives a later deadline.

Besides crashes, SMTP itself can duplicate: a connection lost after the end of DATA but before
the relay's answer is retried (the relay may have taken the message): one copy per such loss.
A sender stalled longer than its lease (a frozen process) can also be overtaken; the attempt
count fences its late answers out of the database, not its copy out of the mailbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from enrolment.codes import wave_key
from enrolment.dao import start_windows
from mes_rollout.config import Settings
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
# A task still running this long after it was cancelled is cancelled again (stop_tasks).
_CANCEL_AGAIN_AFTER = 0.5
Status = NotificationStatus


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and return once every one has ended. Python 3.11's asyncio.wait_for, which
    aiosmtplib's connect runs in, loses a cancellation that lands as the call it waits for ends
    (a refused connection, say): the worker then goes back to wait on its queue for ever, and the
    sender with it. A task still running a moment after its cancellation is cancelled again."""
    for task in tasks:
        task.cancel()
    running = set(tasks)
    while running:
        _, running = await asyncio.wait(running, timeout=_CANCEL_AGAIN_AFTER)
        for task in running:
            log.debug("a sending task outlived its cancellation; cancelling it again")
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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
    """Which emails one sender takes: those of one shard (or all); created ones too, or only
    those a dead sender left in `sending` (their lease passed)."""

    shard: int | None
    include_created: bool


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


# What an attempt ended in, as the status it moves the message to (and the outcome its
# sending_attempts row records). TEMPORARY_FAILURE is the one exception: the relay said "later",
# the message stays `sending` for its next attempt.
_RETRY = Status.TEMPORARY_FAILURE
_FINAL_FAILURES = {
    Status.PERMANENT_FAILURE: True,
    Status.TECHNICAL_FAILURE: False,
}  # status: address bounced?
_FAILURE_REASONS = {
    Status.PERMANENT_FAILURE: "email address refused by the relay",
    Status.TECHNICAL_FAILURE: "email could not be handed to the relay",
}


@dataclass(frozen=True)
class _Job:
    message: dao.PendingMessage  # as claimed: `attempts` is the count before this attempt
    send_date: dt.date
    claimed_at: dt.datetime
    last_attempt: int  # a temporary failure of this attempt is final (the relay unreachable: the run stops)

    @property
    def attempt(self) -> int:
        return self.message.attempts + 1


@dataclass(frozen=True)
class _Page:
    """The next messages of one status to read, after `after_id`, at most `limit`."""

    status: Status
    after_id: str
    limit: int


@dataclass(frozen=True)
class _Result:
    job: _Job
    outcome: Status  # SENT, PERMANENT_FAILURE, TECHNICAL_FAILURE, or _RETRY
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
    """One process sending the emails of a scope over `settings.smtp_connections` relay connections,
    holding what it claims under a lease of `settings.send_lease_seconds`."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        target: SmtpTarget,
        *,
        logical_date: dt.date,
        run_id: str,
        scope: Scope,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._engine = engine
        self._target = target
        self._window = settings.opt_out_window
        self._var_dir = settings.var_dir
        self._logical_date = logical_date
        self._run_id = run_id
        self._scope = scope
        self._connections = settings.smtp_connections
        self._rate = settings.smtp_rate_per_second
        self._retry = retry
        # Unique per sender (a retried task, a second run of the same day: each its own claim).
        self.claim_id = f"{run_id}/{'all' if scope.shard is None else scope.shard}/{uuid.uuid4().hex}"
        self._lease = dt.timedelta(seconds=settings.send_lease_seconds)
        # Renewed well before it passes: three renewals may fail or be late before anyone takes over.
        self._renew_every = settings.send_lease_seconds / 3
        self._renewed_at = time.monotonic()
        self.limit = in_flight_limit(self._connections)
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
            await stop_tasks(workers)
            await client.close()
            await asyncio.to_thread(self._release)
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
                await self._until(
                    lambda: self._room() >= self._claim_size or self._retry_due() or self._renewal_due()
                )
                if self._state.fatal:
                    return
                due = self._due_retries()
                room = min(self._claim_size, self._room()) - len(due)
                page = _Page(status, after, room) if room > 0 else None
                fetched = await self._step(due, page)
                if fetched is None:
                    return
                if page is not None and not fetched:
                    break  # nothing left of this status that no live sender holds
                if fetched:
                    after = fetched[-1].notification_id
        waited = 0.0
        while not self._state.fatal:
            due = self._due_retries()
            answers = len(self._state.results)
            if self._state.outstanding == 0 and not due and not answers:
                return
            if (
                due
                or self._renewal_due()
                or (
                    answers and (self._finals() >= self._state.outstanding or waited >= _RECORD_AT_MOST_AFTER)
                )
            ):
                await self._step(due, None)
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
        if result.outcome is not _RETRY:
            self._state.finals += 1

    def _room(self) -> int:
        """How many more messages may be claimed once the answers waiting are recorded."""
        return self.limit - self._state.outstanding + self._finals()

    def _retry_due(self) -> bool:
        retries = self._state.retries
        return bool(retries) and retries[0][0] <= asyncio.get_running_loop().time()

    def _renewal_due(self) -> bool:
        return self._state.outstanding > 0 and time.monotonic() - self._renewed_at >= self._renew_every

    def _due_retries(self) -> list[_Job]:
        now = asyncio.get_running_loop().time()
        due: list[_Job] = []
        retries = self._state.retries
        while retries and retries[0][0] <= now and len(due) < self._claim_size:
            due.append(heapq.heappop(retries)[2])
        return due

    async def _step(self, due: list[_Job], page: _Page | None) -> list[dao.PendingMessage] | None:
        """One transaction: record the answers so far, claim `due` retries and the next `page` of
        messages no live sender holds. Returns the page read (None: the run failed)."""
        answers, self._state.results, self._state.finals = self._state.results, [], 0
        try:
            recorded, fetched, claimed, claimed_at = await asyncio.to_thread(
                self._step_in_db, answers, due, page
            )
        except Exception as error:  # noqa: BLE001 - the run stops; its `sending` rows are re-sent later
            # Nothing of that transaction stayed: the answers wait for the last try to record them.
            self._state.results = answers + self._state.results
            self._state.finals += sum(1 for answer in answers if answer.outcome is not _RETRY)
            self._fail(error)
            return None
        for name, value in recorded.as_dict().items():
            setattr(self.summary, name, getattr(self.summary, name) + value)
        retried = {job.message.notification_id: job.last_attempt for job in due}
        new = [m for m in claimed if m.notification_id not in retried]
        # A retry was counted when first claimed; one that someone else moved meanwhile leaves the count.
        lost = len(due) - (len(claimed) - len(new))
        finals = sum(1 for answer in answers if answer.outcome is not _RETRY)
        self._state.outstanding += len(new) - lost - finals
        self.summary.resent_after_crash += sum(1 for m in new if m.status == Status.SENDING)
        for message in claimed:
            last = retried.get(message.notification_id) or self._last_attempt(message)
            self._queue.put_nowait(_Job(message, self._send_date(message), claimed_at, last))
        return fetched

    def _send_date(self, message: dao.PendingMessage) -> dt.date:
        """The day the message says it was sent and its window runs from: fixed at its first claim
        (every copy says the same), except for one given back because the relay was down, which
        reached nobody: that one is dated by the claim that sends it (as `dao.claim_for_sending`)."""
        if message.given_back or message.send_date is None:
            return self._logical_date
        return message.send_date

    def _last_attempt(self, message: dao.PendingMessage) -> int:
        """The attempt after which a temporary failure is final: the policy's last, counted from
        the first; for a message a sender gave back because the relay was down, counted afresh
        (an outage is not the message's fault)."""
        return message.attempts + self._retry.max_attempts if message.given_back else self._retry.max_attempts

    def _step_in_db(
        self, answers: list[_Result], due: list[_Job], page: _Page | None
    ) -> tuple[SendSummary, list[dao.PendingMessage], list[dao.PendingMessage], dt.datetime]:
        now = _now()
        lease = dao.Lease(self.claim_id, now + self._lease)
        with self._engine.begin() as connection:
            dao.size_page_cache(connection)
            if time.monotonic() - self._renewed_at >= self._renew_every:
                dao.renew_lease(connection, lease)
                self._renewed_at = time.monotonic()
            fetched = (
                dao.pending_emails(
                    connection,
                    logical_date=self._logical_date,
                    status=page.status,
                    after_id=page.after_id,
                    limit=page.limit,
                    now=now,
                    shard=self._scope.shard,
                )
                if page is not None
                else []
            )
            # Left `sending` by a dead sender with its attempts used up: no new try, a final failure.
            # Not one given back because the relay was down: that one is tried again.
            exhausted = [
                m
                for m in fetched
                if m.status == Status.SENDING and m.attempts >= self._retry.max_attempts and not m.given_back
            ]
            given_up = [
                _Result(
                    _Job(m, m.send_date or self._logical_date, now, m.attempts), Status.TECHNICAL_FAILURE, None,
                    claimed=False,
                )
                for m in exhausted
            ]  # fmt: skip
            recorded = self._record(connection, answers + given_up, now)
            to_claim = [job.message for job in due] + [m for m in fetched if m not in exhausted]
            claimed = (
                dao.claim_for_sending(
                    connection,
                    to_claim,
                    send_date=self._logical_date,
                    now=now,
                    run_id=self._run_id,
                    lease=lease,
                )
                if to_claim
                else []
            )
        return recorded, fetched, claimed, now

    def _release(self) -> None:
        """Record the answers not recorded yet and give up what this sender still holds (a run that
        stopped on an error), in one transaction: the next sender takes it over at once, and
        never sends again what the relay already took. Stopped because the relay could not be
        reached, the messages are given back marked so (dao.RELAY_UNREACHABLE): the next sender
        tries them again with a fresh count of attempts. A sender killed outright leaves its
        lease to run out instead."""
        answers, self._state.results, self._state.finals = self._state.results, [], 0
        detail = dao.RELAY_UNREACHABLE if isinstance(self._state.fatal, RelayUnreachableError) else None
        try:
            with self._engine.begin() as connection:
                now = _now()
                recorded = self._record(connection, answers, now)
                released = dao.release_lease(connection, self.claim_id, now, detail=detail)
        except Exception:  # noqa: BLE001 - the lease runs out by itself; the run's own error matters more
            log.warning(
                "could not give up the claim of a stopped sender; its lease will run out", exc_info=True
            )
            return
        for name, value in recorded.as_dict().items():
            setattr(self.summary, name, getattr(self.summary, name) + value)
        if released:
            log.info(
                "gave up %d messages still held in sending%s",
                released,
                " (relay unreachable)" if detail else "",
            )

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
                reference=message.reference,
            )
            raw = build_email(content, message.email or "", sender=self._target.sender, attempt=job.attempt)
        except UnsafeRecipientAddress:
            return _Result(job, Status.PERMANENT_FAILURE, None)
        except Exception as error:  # noqa: BLE001 - a message that cannot be rendered stops the run
            self._fail(error)
            return None
        try:
            await connection.send(message.email or "", raw)
        except PermanentEmailError as error:
            return _Result(job, Status.PERMANENT_FAILURE, error.smtp_code)
        except TemporaryEmailError as error:
            if job.attempt >= job.last_attempt:
                if isinstance(error, RelayUnreachableError):
                    # The relay, not the message: stop, and give it back `sending` for the next
                    # run rather than turn every email of an outage into a letter. This attempt
                    # is recorded (a temporary failure) when the sender stops.
                    self._fail(error)
                    return _Result(job, _RETRY, error.smtp_code)
                return _Result(job, Status.TECHNICAL_FAILURE, error.smtp_code)
            retry = _Job(
                dataclasses.replace(message, attempts=job.attempt, status=Status.SENDING.value), job.send_date,
                job.claimed_at, job.last_attempt,
            )  # fmt: skip
            # The backoff counts the tries of this message's budget (afresh after an outage).
            tries = job.attempt - (job.last_attempt - self._retry.max_attempts)
            due = asyncio.get_running_loop().time() + self._retry.delay(tries)
            heapq.heappush(self._state.retries, (due, next(self._sequence), retry))
            return _Result(job, _RETRY, error.smtp_code)
        except RelayConfigurationError as error:
            self._fail(error)
            return None
        except EmailClientError as error:
            return _Result(job, Status.TECHNICAL_FAILURE, error.smtp_code)
        return _Result(job, Status.SENT, 250)

    def _key(self, wave_id: str) -> bytes:
        if wave_id not in self._keys:
            self._keys[wave_id] = wave_key(self._var_dir, wave_id)
        return self._keys[wave_id]

    def _fail(self, error: BaseException) -> None:
        if self._state.fatal is None:
            self._state.fatal = error

    # -- recording -------------------------------------------------------------------------------

    def _record(self, connection: Any, batch: list[_Result], now: dt.datetime) -> SendSummary:
        summary = SendSummary(temporary_attempts=sum(1 for r in batch if r.outcome is _RETRY))
        if not batch:
            return summary
        dao.record_attempts(
            connection,
            [
                dao.Attempt(
                    r.job.message.notification_id,
                    r.job.attempt,
                    r.job.claimed_at,
                    r.outcome.value,
                    r.smtp_code,
                )
                for r in batch
                if r.claimed
            ],
            run_id=self._run_id,
            now=now,
        )
        sent = self._move(connection, batch, Status.SENT, now)
        for send_date in sorted({job.send_date for job in sent}):
            ids = [job.message.notification_id for job in sent if job.send_date == send_date]
            start_windows(connection, ids, send_date, self._window, run_id=self._run_id, now=now)
        summary.sent = len(sent)
        for status, bounced in _FINAL_FAILURES.items():
            moved = self._move(connection, batch, status, now)
            outcome = fallback.email_failed(
                connection,
                [job.message.notification_id for job in moved],
                bounced=bounced,
                reason=_FAILURE_REASONS[status],
                run_id=self._run_id,
                now=now,
            )
            summary.letters_queued += outcome.letters_queued
            summary.unreachable_messages += outcome.unreachable_messages
            if status is Status.PERMANENT_FAILURE:
                summary.permanent_failures = len(moved)
            else:
                summary.technical_failures = len(moved)
        return summary

    def _move(self, connection: Any, batch: list[_Result], status: Status, now: dt.datetime) -> list[_Job]:
        """`sending` -> `status` for the results that ended so, each only while its attempt owns the row."""
        results = [r for r in batch if r.outcome is status]
        jobs = {r.job.message.notification_id: r.job for r in results}
        moved = dao.transition(
            connection,
            [
                dao.Transition(
                    r.job.message.notification_id,
                    attempt=r.job.message.attempts + (1 if r.claimed else 0),
                    reason=f"SMTP {r.smtp_code}" if r.smtp_code and status is not Status.SENT else None,
                )
                for r in results
            ],
            from_status=Status.SENDING,
            to_status=status,
            now=now,
            run_id=self._run_id,
            sent=status is Status.SENT,
        )
        return [jobs[notification_id] for notification_id in moved]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextmanager
def relay(settings: Settings, airflow_connection: Any | None = None) -> Iterator[SmtpTarget]:
    """The relay to send through: the Airflow SMTP connection where there is one, else
    MES_SMTP_URL; 'embedded' starts a loopback relay keeping each message under the outbox. An
    SMTP exchange waits at most MES_SMTP_TIMEOUT seconds unless the connection names its own."""
    if airflow_connection is not None:
        yield SmtpTarget.from_airflow_connection(airflow_connection, settings.smtp_timeout_seconds)
    elif settings.is_embedded_smtp:
        with embedded_relay(settings) as target:
            yield target
    else:
        yield SmtpTarget.from_url(settings.smtp_url, settings.smtp_timeout_seconds)


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
    dead sender left (lease passed). Any number of senders may run at once, on the same shard or
    not: each claims under a lease what no live sender holds."""
    if shard is None:
        with engine.begin() as connection:
            dao.refresh_planner_statistics(connection)
            shards = dao.email_shards(connection, logical_date)
        total = SendSummary()
        for each in shards:
            part = send_emails(
                engine, settings, target, logical_date=logical_date, run_id=run_id, shard=each, retry=retry
            )
            for name, value in part.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total
    summary = _run_sender(
        engine, settings, target, logical_date, run_id, Scope(shard, include_created=True), retry
    )
    log.info("shard %s: %s", shard, summary.as_dict())
    return summary


def settle_stuck(
    engine: Engine,
    settings: Settings,
    target: SmtpTarget,
    *,
    logical_date: dt.date,
    run_id: str,
    retry: RetryPolicy = RetryPolicy(),
) -> SendSummary:
    """The periodic settle: emails left `sending` by a sender whose lease has passed (it died)
    are handed over again, or end `technical_failure` once their attempts are used up; those a
    sender gave back because the relay was down are handed over again, never given up. What a
    live sender holds is left to it."""
    return _run_sender(
        engine, settings, target, logical_date, run_id, Scope(None, include_created=False), retry
    )


def _run_sender(
    engine: Engine,
    settings: Settings,
    target: SmtpTarget,
    logical_date: dt.date,
    run_id: str,
    scope: Scope,
    retry: RetryPolicy,
) -> SendSummary:
    sender = EmailSender(
        engine, settings, target, logical_date=logical_date, run_id=run_id, scope=scope, retry=retry
    )
    return asyncio.run(sender.run())
