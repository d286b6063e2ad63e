"""Letters: print batches (one PDF and one manifest per 5 000 letters) and their posting.

created -> printed (the batch's files are written, print_batch set) -> posted (the batch went to
the print provider: the letters' windows start) -> returned (feedback: NPAI). A letter whose
address cannot be printed is cancelled and its people left unreachable, with the reasons.

A batch is first claimed in the database (its number and its letters, under a lease, in one
transaction whose letters a concurrent run skips), then written under temporary names of its own,
renamed, and recorded: two runs at once never write the same batch. A crash before the record
leaves the letters `created` and claimed; once the claim's lease has passed, the next run writes
the same batch again, byte for byte (same letters in the same order, same batch number,
reportlab's invariant mode). The files are written with settings.file_mode in folders of
settings.dir_mode: they hold names and addresses. They are evidence (`mes_rollout.evidence`):
under `<print_dir>/<rollout_id>/<batch_id>/` (batch ids are unique only within one database),
written once (the same bytes again on a re-run; other bytes never replace them), recorded with
their SHA-256 and provenance in `evidence_files`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from enrolment.codes import wave_key
from enrolment.dao import mark_unreachable, start_windows
from mes_rollout import evidence
from mes_rollout.config import Settings
from mes_rollout.constants import (
    Channel,
    FileKind,
    NotificationStatus,
    PrintBatchState,
    UnreachableReason,
    WaveState,
)
from mes_rollout.csvfile import file_sha256
from mes_rollout.db import as_date, load_query
from mes_rollout.files import create_private, private_folder
from mes_rollout.postal_address import MAX_LINES, PostalAddress
from notifications import dao
from notifications.fallback import address_of
from notifications.french_dates import date_in_words
from notifications.letter_pdf import Letter, PrintFile
from notifications.render import Member, letter_paragraphs, message_content

log = logging.getLogger(__name__)

BATCH_SIZE = 5_000
MANIFEST_COLUMNS = ("reference", *(f"ligne{n}" for n in range(1, MAX_LINES + 1)), "page", "pages")
Status = NotificationStatus


@dataclass
class PrintSummary:
    batches: list[str] = field(default_factory=list)
    letters_printed: int = 0
    not_printable: int = 0
    not_needed: int = 0  # cancelled: everyone it was for activated, died or was told otherwise since

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _PendingLetter:
    notification_id: str
    reference: str
    shard: int
    wave_id: str
    recipient: Member
    address: PostalAddress
    address_returned: bool
    recipient_deceased: bool  # the person it is addressed to (a representative) died by the print day
    members: tuple[Member, ...]
    still_waiting: int  # how many of its people it still tells (notifications.dao.still_told)


def batch_id_for(print_date: dt.date, sequence: int) -> str:
    return f"{print_date:%Y%m%d}-{sequence:04d}"


@dataclass(frozen=True)
class _Claim:
    """A print batch this run holds: its number, its letters, the day it is dated."""

    batch_id: str
    print_date: dt.date
    sequence: int
    letters: list[_PendingLetter]


def print_letters(
    engine: Engine, settings: Settings, *, logical_date: dt.date, run_id: str, batch_size: int = BATCH_SIZE
) -> PrintSummary:
    """Print every due letter, in batches of at most `batch_size`, dated the run's logical date;
    first the batches a dead run claimed and never finished (their lease passed), written again
    as they were claimed. Two runs at once each write their own batches."""
    summary = PrintSummary()
    keys: dict[str, bytes] = {}
    printer = f"{run_id}/{uuid.uuid4().hex}"  # this run's claims
    lease = dt.timedelta(seconds=settings.send_lease_seconds)
    with engine.begin() as connection:
        dao.refresh_planner_statistics(connection)
    while (claim := _take_over_abandoned(engine, printer, lease)) is not None:
        if claim.letters:
            _write_and_record(engine, settings, claim, keys, printer, run_id)
            summary.batches.append(claim.batch_id)
            summary.letters_printed += len(claim.letters)
    after: tuple[int, str] = (-1, "")
    while True:
        with engine.begin() as connection:
            pending = _pending(connection, logical_date, batch_size, after=after)
            if not pending:
                return summary
            after = (pending[-1].shard, pending[-1].notification_id)
            unneeded = [p for p in pending if p.still_waiting == 0]
            if unneeded:
                _cancel(connection, unneeded, lambda _: _NOT_NEEDED, run_id)
                summary.not_needed += len(unneeded)
            needed = [p for p in pending if p.still_waiting > 0]
            # A dead representative cannot be written to: the people they stood for are unreachable
            # until the register names another (the weekly wave then tells them through that one).
            printable = [
                p for p in needed if not p.recipient_deceased and not p.address_returned and p.address.is_printable
            ]
            unprintable = [p for p in needed if p not in printable]
            if unprintable:
                _cancel_unprintable(connection, unprintable, run_id)
                summary.not_printable += len(unprintable)
            claim = _claim_batch(connection, printable, logical_date, printer, _now() + lease) if printable else None
        if claim is not None:
            _write_and_record(engine, settings, claim, keys, printer, run_id)
            summary.batches.append(claim.batch_id)
            summary.letters_printed += len(claim.letters)


def _pending(
    connection: Connection, logical_date: dt.date, limit: int, *, after: tuple[int, str] = (-1, ""),
    batch_id: str | None = None,
) -> list[_PendingLetter]:
    """The next letters no batch has claimed, after `after` (locked on PostgreSQL), or the
    letters claimed by `batch_id`."""
    which = (
        "AND n.print_batch IS NULL AND (n.shard, n.notification_id) > (:after_shard, :after_id)"
        if batch_id is None
        else "AND n.print_batch = :batch_id"
    )
    sql = load_query("notifications_pending_letters.sql", fill={"/* which letters */": which})
    if batch_id is None and connection.dialect.name == "postgresql":
        # Letters a concurrent run is claiming are passed over (SQLite: one writer at a time).
        sql += "\nFOR UPDATE OF n SKIP LOCKED"
    rows = connection.execute(
        text(sql),
        {
            "letter": Channel.LETTER.value,
            "created": Status.CREATED.value,
            "approved": WaveState.APPROVED.value,
            "logical_date": logical_date,
            "after_shard": after[0],
            "after_id": after[1],
            "batch_id": batch_id,
            "limit": limit,
        },
    ).all()
    ids = [row.notification_id for row in rows]
    members = dao.members_of(connection, ids)
    waiting = dao.still_told(connection, ids, logical_date)
    return [
        _PendingLetter(
            notification_id=row.notification_id,
            reference=row.reference,
            shard=int(row.shard),
            wave_id=row.wave_id,
            recipient=Member(row.recipient_nir, row.prenom, row.nom, row.sexe),
            address=address_of(row),
            address_returned=bool(row.address_returned),
            recipient_deceased=_died_by(as_date(row.recipient_died), logical_date),
            members=tuple(members.get(row.notification_id, ())),
            still_waiting=waiting.get(row.notification_id, 0),
        )
        for row in rows
    ]


def _died_by(death: dt.date | None, day: dt.date) -> bool:
    return death is not None and death <= day


_NOT_NEEDED = "nobody it was for still waits for it (space activated, death recorded or told otherwise since)"


def _cancel(
    connection: Connection, letters: list[_PendingLetter], reason: Callable[[_PendingLetter], str], run_id: str
) -> list[str]:
    """created -> cancelled, audited with each letter's reason; returns the ids moved."""
    return dao.transition(
        connection,
        [dao.Transition(letter.notification_id, reason=reason(letter)) for letter in letters],
        from_status=Status.CREATED,
        to_status=Status.CANCELLED,
        now=_now(),
        run_id=run_id,
    )


def _why_unprintable(letter: _PendingLetter) -> str:
    if letter.recipient_deceased:
        return "the recipient (a representative) died"
    return "address returned (NPAI)" if letter.address_returned else "; ".join(letter.address.problems)


def _cancel_unprintable(connection: Connection, letters: list[_PendingLetter], run_id: str) -> None:
    """created -> cancelled, and the people left unreachable: the representative it was addressed to
    died, or the address cannot carry the letter."""
    now = _now()
    moved = set(_cancel(connection, letters, _why_unprintable, run_id))
    for letter in letters:
        if letter.notification_id in moved:
            unreachable = (
                UnreachableReason.RECIPIENT_DECEASED if letter.recipient_deceased else UnreachableReason.ADDRESS_NOT_PRINTABLE
            )
            mark_unreachable(connection, letter.notification_id, unreachable, run_id=run_id, now=now)


_NEXT_SEQUENCE = text(
    "SELECT COALESCE(MAX(sequence), 0) + 1 FROM ("
    " SELECT sequence FROM print_batches WHERE print_date = :day"
    " UNION ALL SELECT sequence FROM print_batch_claims WHERE print_date = :day) AS taken"
)
_CLAIM_NUMBER = text(
    "INSERT INTO print_batch_claims (batch_id, print_date, sequence, claimed_by, lease_until, claimed_at)"
    " VALUES (:batch_id, :day, :sequence, :printer, :until, :now)"
    " ON CONFLICT DO NOTHING RETURNING batch_id"
)


def _claim_batch(
    connection: Connection, letters: list[_PendingLetter], print_date: dt.date, printer: str, until: dt.datetime
) -> _Claim:
    """The next batch number of the day and these (locked) letters, claimed in the caller's
    transaction, before any file is written."""
    now = _now()
    while True:
        # A number another run claims at the same moment loses the insert (ON CONFLICT): take the next.
        sequence = int(connection.execute(_NEXT_SEQUENCE, {"day": print_date}).scalar_one())
        batch_id = batch_id_for(print_date, sequence)
        claimed = connection.execute(
            _CLAIM_NUMBER,
            {"batch_id": batch_id, "day": print_date, "sequence": sequence, "printer": printer, "until": until,
             "now": now},
        ).first()
        if claimed is not None:
            break
    ids = [letter.notification_id for letter in letters]
    for part in dao.chunked(ids):
        connection.execute(
            text(
                "UPDATE notifications SET print_batch = :batch, send_date = :day"
                " WHERE notification_id = :id AND status = :created AND print_batch IS NULL"
            ),
            [{"batch": batch_id, "day": print_date, "id": i, "created": Status.CREATED.value} for i in part],
        )
    return _Claim(batch_id, print_date, sequence, letters)


_WHOLE_BATCH = 1 << 31  # a claimed batch is read whole, whatever the batch size of the run that claimed it


def _take_over_abandoned(engine: Engine, printer: str, lease: dt.timedelta) -> _Claim | None:
    """A batch claimed by a run whose lease passed and never recorded, now claimed by this run
    (None: there is none). Its letters are the ones it claimed, in the same order."""
    now = _now()
    with engine.begin() as connection:
        for batch_id, print_date, sequence in connection.execute(
            text(
                "SELECT c.batch_id, c.print_date, c.sequence FROM print_batch_claims c"
                " WHERE c.lease_until < :now"
                " AND NOT EXISTS (SELECT 1 FROM print_batches b WHERE b.batch_id = c.batch_id)"
                " ORDER BY c.print_date, c.sequence"
            ),
            {"now": now},
        ).all():
            taken = connection.execute(
                text(
                    "UPDATE print_batch_claims SET claimed_by = :printer, lease_until = :until"
                    " WHERE batch_id = :batch_id AND lease_until < :now"
                ),
                {"printer": printer, "until": now + lease, "batch_id": batch_id, "now": now},
            ).rowcount
            if taken != 1:
                continue  # another run took it over first
            day = as_date(print_date)
            assert day is not None
            letters = _pending(connection, day, _WHOLE_BATCH, batch_id=batch_id)
            if not letters:  # its letters were cancelled meanwhile: nothing to print under that number
                connection.execute(text("DELETE FROM print_batch_claims WHERE batch_id = :b"), {"b": batch_id})
            log.info("print batch %s: taken over from a run that did not finish it", batch_id)
            return _Claim(batch_id, day, int(sequence), letters)
    return None


def _write_and_record(
    engine: Engine, settings: Settings, claim: _Claim, keys: dict[str, bytes], printer: str, run_id: str
) -> None:
    with engine.begin() as connection:
        rollout = evidence.rollout_id(connection)
        origin = evidence.provenance(
            connection, engine.url.render_as_string(hide_password=False), run_id,
            input_kinds=(FileKind.REGISTER.value,),
        )  # fmt: skip
    origin["batch_id"] = claim.batch_id
    folder = private_folder(settings.print_dir / rollout / claim.batch_id, settings.dir_mode)
    pdf_path, manifest_path = folder / f"{claim.batch_id}.pdf", folder / f"{claim.batch_id}-manifest.csv"

    def publish(path: Path, content: bytes, kind: evidence.EvidenceKind) -> None:
        with engine.begin() as connection:
            evidence.write_once(
                path, content, kind=kind, run_id=run_id, provenance=origin, connection=connection, settings=settings
            )

    try:
        pages = write_batch_files(
            pdf_path, manifest_path, claim.batch_id, claim.letters, keys, settings, claim.print_date, publish=publish
        )
    except BaseException:
        _release(engine, claim, printer)
        raise
    pdf_sha, manifest_sha = file_sha256(pdf_path), file_sha256(manifest_path)
    now = _now()
    with engine.begin() as connection:
        held = connection.execute(
            text("UPDATE print_batch_claims SET lease_until = :now WHERE batch_id = :batch AND claimed_by = :printer"),
            {"now": now, "batch": claim.batch_id, "printer": printer},
        ).rowcount
        if held != 1:
            raise RuntimeError(f"print batch {claim.batch_id}: the claim passed to another run while writing")
        connection.execute(
            text(
                "INSERT INTO print_batches (batch_id, print_date, sequence, letters, pages, pdf_path, pdf_sha256,"
                " manifest_path, manifest_sha256, state, run_id, created_at, updated_at)"
                " VALUES (:id, :day, :sequence, :letters, :pages, :pdf, :pdf_sha, :manifest, :manifest_sha, :printed,"
                " :run_id, :now, :now)"
            ),
            {
                "id": claim.batch_id,
                "day": claim.print_date,
                "sequence": claim.sequence,
                "letters": len(claim.letters),
                "pages": pages,
                "pdf": str(pdf_path),
                "pdf_sha": pdf_sha,
                "manifest": str(manifest_path),
                "manifest_sha": manifest_sha,
                "printed": PrintBatchState.PRINTED.value,
                "run_id": run_id,
                "now": now,
            },
        )
        ids = [letter.notification_id for letter in claim.letters]
        moved = dao.transition(
            connection,
            [dao.Transition(i, reason=f"batch {claim.batch_id}") for i in ids],
            from_status=Status.CREATED,
            to_status=Status.PRINTED,
            now=now,
            run_id=run_id,
        )
        if len(moved) != len(ids):
            raise RuntimeError(f"print batch {claim.batch_id}: {len(ids) - len(moved)} letters changed while printing")
    log.info("print batch %s: %d letters, %d pages", claim.batch_id, len(claim.letters), pages)


def _release(engine: Engine, claim: _Claim, printer: str) -> None:
    """Writing failed: end the claim's lease now, so that the next run writes the batch at once."""
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE print_batch_claims SET lease_until = :now WHERE batch_id = :batch AND claimed_by = :printer"),
                {"now": _now(), "batch": claim.batch_id, "printer": printer},
            )
    except Exception:  # noqa: BLE001 - the lease runs out by itself; the writing error matters more
        log.warning("print batch %s: could not give up the claim; its lease will run out", claim.batch_id, exc_info=True)


def write_batch_files(
    pdf_path: Path,
    manifest_path: Path,
    batch_id: str,
    letters: list[_PendingLetter],
    keys: dict[str, bytes],
    settings: Settings,
    send_date: dt.date,
    *,
    publish: Callable[[Path, bytes, evidence.EvidenceKind], None],
) -> int:
    """The batch's PDF and manifest, handed whole to `publish` (write once, as evidence); the PDF
    is drawn into a temporary file of its own (settings.file_mode, no other writer can share it),
    removed whatever happens."""
    unique = uuid.uuid4().hex
    pdf_temporary = pdf_path.with_name(f".{pdf_path.name}.{unique}.tmp")
    try:
        os.close(create_private(pdf_temporary, settings.file_mode))  # the PDF writer keeps the mode
        print_file = PrintFile(pdf_temporary, f"Mon espace santé - lot {batch_id}", settings.return_address)
        manifest = io.StringIO()
        writer = csv.writer(manifest, delimiter=";", lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        date_line = f"Le {date_in_words(send_date)}"
        for letter in letters:
            if letter.wave_id not in keys:
                keys[letter.wave_id] = wave_key(settings.var_dir, letter.wave_id)
            content = message_content(
                letter.notification_id,
                letter.recipient.nir,
                letter.recipient,
                letter.members,
                keys[letter.wave_id],
                send_date,
                settings.opt_out_window,
                reference=letter.reference,
            )
            lines = letter.address.printable_lines(content.recipient_name)
            first_page, pages = print_file.add(
                Letter(content.reference, lines, date_line, tuple(letter_paragraphs(content)))
            )
            writer.writerow([letter.notification_id, *lines, *[""] * (MAX_LINES - len(lines)), first_page, pages])
        print_file.close()
        publish(pdf_path, pdf_temporary.read_bytes(), evidence.EvidenceKind.PRINT_PDF)
        publish(manifest_path, manifest.getvalue().encode("utf-8"), evidence.EvidenceKind.PRINT_MANIFEST)
    finally:
        pdf_temporary.unlink(missing_ok=True)
    return print_file.pages


def post_printed_batches(engine: Engine, settings: Settings, *, logical_date: dt.date, run_id: str) -> list[str]:
    """Hand the printed batches to the print provider: their letters are posted on the run's
    logical date and the window of each person starts. (Embedded default: the provider is the
    print folder; a real hand-over, SFTP or API, replaces the file copy, not this bookkeeping.)"""
    with engine.begin() as connection:
        dao.refresh_planner_statistics(connection)
        batches = connection.execute(
            text("SELECT batch_id FROM print_batches WHERE state = :printed ORDER BY print_date, sequence"),
            {"printed": PrintBatchState.PRINTED.value},
        ).scalars().all()
    for batch_id in batches:
        now = _now()
        with engine.begin() as connection:
            ids = connection.execute(
                text("SELECT notification_id FROM notifications WHERE print_batch = :batch AND status = :printed"),
                {"batch": batch_id, "printed": Status.PRINTED.value},
            ).scalars().all()
            moved = dao.transition(
                connection,
                [dao.Transition(i, reason=f"batch {batch_id}") for i in ids],
                from_status=Status.PRINTED,
                to_status=Status.POSTED,
                now=now,
                run_id=run_id,
                sent=True,
            )
            start_windows(connection, moved, logical_date, settings.opt_out_window, run_id=run_id, now=now)
            connection.execute(
                text(
                    "UPDATE print_batches SET state = :posted, posted_on = :day, updated_at = :now"
                    " WHERE batch_id = :batch AND state = :printed"
                ),
                {
                    "posted": PrintBatchState.POSTED.value,
                    "printed": PrintBatchState.PRINTED.value,
                    "day": logical_date,
                    "now": now,
                    "batch": batch_id,
                },
            )
    return list(batches)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
