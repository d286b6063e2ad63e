"""Letters: print batches (one PDF and one manifest per 5 000 letters) and their posting.

created -> printed (the batch's files are written, print_batch set) -> posted (the batch went to
the print provider: the letters' windows start) -> returned (feedback: NPAI). A letter whose
address cannot be printed is cancelled and its people left unreachable, with the reasons.

A batch is written to a temporary name, then renamed, then recorded: a crash before the record
leaves the letters `created`, and the re-run writes the same batch again, byte for byte (same
letters in the same order, same batch number, reportlab's invariant mode).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from enrolment.codes import wave_key
from enrolment.window import mark_unreachable, start_windows
from mes_rollout.config import Settings
from mes_rollout.constants import Channel, NotificationStatus, PrintBatchState, UnreachableReason, WaveState
from mes_rollout.csvfile import file_sha256
from mes_rollout.db import load_query
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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _PendingLetter:
    notification_id: str
    shard: int
    wave_id: str
    recipient: Member
    address: PostalAddress
    address_returned: bool
    members: tuple[Member, ...]


def batch_id_for(print_date: dt.date, sequence: int) -> str:
    return f"{print_date:%Y%m%d}-{sequence:04d}"


def print_letters(
    engine: Engine, settings: Settings, *, logical_date: dt.date, run_id: str, batch_size: int = BATCH_SIZE
) -> PrintSummary:
    """Print every due letter, in batches of at most `batch_size`, dated the run's logical date."""
    summary = PrintSummary()
    keys: dict[str, bytes] = {}
    after: tuple[int, str] = (-1, "")
    with engine.begin() as connection:
        dao.refresh_planner_statistics(connection)
    while True:
        with engine.connect() as connection:
            pending = _pending(connection, logical_date, after, batch_size)
        if not pending:
            return summary
        after = (pending[-1].shard, pending[-1].notification_id)
        printable = [p for p in pending if not p.address_returned and p.address.is_printable]
        unprintable = [p for p in pending if p not in printable]
        if unprintable:
            with engine.begin() as connection:
                _cancel_unprintable(connection, unprintable, run_id)
            summary.not_printable += len(unprintable)
        if printable:
            batch_id = _write_and_record_batch(engine, settings, printable, keys, logical_date, run_id)
            summary.batches.append(batch_id)
            summary.letters_printed += len(printable)


def _pending(connection: Connection, logical_date: dt.date, after: tuple[int, str], limit: int) -> list[_PendingLetter]:
    rows = connection.execute(
        text(load_query("notifications_pending_letters.sql")),
        {
            "letter": Channel.LETTER.value,
            "created": Status.CREATED.value,
            "approved": WaveState.APPROVED.value,
            "logical_date": logical_date,
            "after_shard": after[0],
            "after_id": after[1],
            "limit": limit,
        },
    ).all()
    members = dao.members_of(connection, [row.notification_id for row in rows])
    return [
        _PendingLetter(
            notification_id=row.notification_id,
            shard=int(row.shard),
            wave_id=row.wave_id,
            recipient=Member(row.recipient_nir, row.prenom, row.nom),
            address=address_of(row),
            address_returned=bool(row.address_returned),
            members=tuple(members.get(row.notification_id, ())),
        )
        for row in rows
    ]


def _cancel_unprintable(connection: Connection, letters: list[_PendingLetter], run_id: str) -> None:
    now = _now()
    for letter in letters:
        reason = "address returned (NPAI)" if letter.address_returned else "; ".join(letter.address.problems)
        moved = dao.transition(
            connection,
            [dao.Transition(letter.notification_id, reason=reason)],
            from_status=Status.CREATED,
            to_status=Status.CANCELLED,
            now=now,
            run_id=run_id,
        )
        if moved:
            mark_unreachable(
                connection, letter.notification_id, UnreachableReason.ADDRESS_NOT_PRINTABLE, run_id=run_id, now=now
            )


def _write_and_record_batch(
    engine: Engine,
    settings: Settings,
    letters: list[_PendingLetter],
    keys: dict[str, bytes],
    logical_date: dt.date,
    run_id: str,
) -> str:
    with engine.connect() as connection:
        sequence = 1 + int(
            connection.execute(
                text("SELECT COALESCE(MAX(sequence), 0) FROM print_batches WHERE print_date = :day"),
                {"day": logical_date},
            ).scalar_one()
        )
    batch_id = batch_id_for(logical_date, sequence)
    folder = settings.print_dir / batch_id
    folder.mkdir(parents=True, exist_ok=True)
    pdf_path, manifest_path = folder / f"{batch_id}.pdf", folder / f"{batch_id}-manifest.csv"
    pages = write_batch_files(pdf_path, manifest_path, batch_id, letters, keys, settings, logical_date)
    pdf_sha, manifest_sha = file_sha256(pdf_path), file_sha256(manifest_path)
    now = _now()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO print_batches (batch_id, print_date, sequence, letters, pages, pdf_path, pdf_sha256,"
                " manifest_path, manifest_sha256, state, run_id, created_at, updated_at)"
                " VALUES (:id, :day, :sequence, :letters, :pages, :pdf, :pdf_sha, :manifest, :manifest_sha, :printed,"
                " :run_id, :now, :now)"
            ),
            {
                "id": batch_id,
                "day": logical_date,
                "sequence": sequence,
                "letters": len(letters),
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
        ids = [letter.notification_id for letter in letters]
        for part in dao.chunked(ids):
            connection.execute(
                text(
                    "UPDATE notifications SET print_batch = :batch, send_date = :day"
                    " WHERE notification_id = :id AND status = :created"
                ),
                [{"batch": batch_id, "day": logical_date, "id": i, "created": Status.CREATED.value} for i in part],
            )
        moved = dao.transition(
            connection,
            [dao.Transition(i, reason=f"batch {batch_id}") for i in ids],
            from_status=Status.CREATED,
            to_status=Status.PRINTED,
            now=now,
            run_id=run_id,
        )
        if len(moved) != len(ids):
            raise RuntimeError(f"print batch {batch_id}: {len(ids) - len(moved)} letters changed while printing")
    log.info("print batch %s: %d letters, %d pages", batch_id, len(letters), pages)
    return batch_id


def write_batch_files(
    pdf_path: Path,
    manifest_path: Path,
    batch_id: str,
    letters: list[_PendingLetter],
    keys: dict[str, bytes],
    settings: Settings,
    send_date: dt.date,
) -> int:
    """The batch's PDF and manifest, each written to a temporary name and renamed when complete."""
    pdf_temporary = pdf_path.with_suffix(".pdf.tmp")
    print_file = PrintFile(pdf_temporary, f"Mon espace santé - lot {batch_id}")
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
        )
        lines = letter.address.printable_lines(content.recipient_name)
        first_page, pages = print_file.add(
            Letter(letter.notification_id, lines, date_line, tuple(letter_paragraphs(content)))
        )
        writer.writerow([letter.notification_id, *lines, *[""] * (MAX_LINES - len(lines)), first_page, pages])
    print_file.close()
    manifest_temporary = manifest_path.with_suffix(".csv.tmp")
    manifest_temporary.write_bytes(manifest.getvalue().encode("utf-8"))
    os.replace(pdf_temporary, pdf_path)
    os.replace(manifest_temporary, manifest_path)
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
