"""Print batches: the PDF read back (pages, text, the address inside the DL window), the manifest,
the SHA-256 recorded, the same bytes on a re-run, unprintable addresses, and posting."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import Engine, text

from enrolment.codes import formatted, provisional_code, wave_key
from enrolment.references import grouped
from enrolment.window import opt_out_deadline
from mes_rollout.config import ConfigError, load_settings
from mes_rollout.db import as_date, as_datetime
from mes_rollout.evidence import rollout_id
from mes_rollout.postal_address import MAX_LINE_LENGTH, MAX_LINES
from notifications.letter_pdf import WINDOW_MM
from notifications.letters import MANIFEST_COLUMNS, post_printed_batches, print_letters
from tests.notifications.factories import adult, create_notification, create_wave, family, fetch, load_people

SEND_DAY = dt.date(2022, 1, 31)
MM = 72 / 25.4
RETURN_ADDRESS = ("ASSURANCE MALADIE", "MON ESPACE SANTE", "TSA 12345", "75000 PARIS CEDEX")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _letters_wave(engine: Engine, var_dir: Path, folder: Path) -> tuple[str, dict[str, list[dict[str, str]]]]:
    single = adult(email="", nom_naissance="Lefèvre")
    cedex = adult(email="", adresse_ligne4="", adresse_ligne5="BP 90231", code_postal="75381", commune="Paris Cedex 08")
    hostile = adult(email="", prenoms="<b>Zoé</b>", nom_naissance="O'Brien\nX")
    load_people(engine, folder, [single, cedex, hostile])
    parent, kids = family(folder, engine, children=2, email="")
    wave = create_wave(engine, var_dir)
    people = {}
    for recipient, members in ((single, [single]), (cedex, [cedex]), (hostile, [hostile]),
                               (parent, [parent, *kids])):
        notification_id = create_notification(engine, var_dir, wave, recipient, members, channel="letter")
        people[notification_id] = members
    return wave, people


def _rollout(engine: Engine) -> str:
    with engine.begin() as connection:
        return rollout_id(connection)


def _positions(page: Any) -> list[tuple[str, float, float]]:
    """(text, x, y from the top) of each string drawn on a page, in mm."""
    found: list[tuple[str, float, float]] = []

    def visit(text_: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        if text_.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            found.append((text_.strip(), x / MM, (float(page.mediabox.height) - y) / MM))

    page.extract_text(visitor_text=visit)
    return found


def test_a_print_batch_reads_back_with_every_code_and_the_address_in_the_window(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    wave, people = _letters_wave(engine, settings_env, tmp_path)

    summary = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1", batch_size=3)

    assert summary.batches == ["20220131-0001", "20220131-0002"] and summary.letters_printed == 4
    batches = {row.batch_id: row for row in fetch(engine, "SELECT * FROM print_batches ORDER BY sequence")}
    key = wave_key(settings_env, wave)
    shown = {row.notification_id: grouped(row.reference) for row in fetch(engine, "SELECT * FROM notifications")}
    seen_references: set[str] = set()
    for batch in batches.values():
        pdf, manifest = Path(batch.pdf_path), Path(batch.manifest_path)
        assert batch.pdf_sha256 == hashlib.sha256(pdf.read_bytes()).hexdigest()
        assert batch.manifest_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
        reader = PdfReader(pdf)
        assert len(reader.pages) == batch.pages
        assert reader.pages[0].mediabox.width == 595.2756 or abs(float(reader.pages[0].mediabox.width) - 595.28) < 0.1
        rows = list(csv.DictReader(io.StringIO(manifest.read_text(encoding="utf-8")), delimiter=";"))
        assert tuple(rows[0].keys()) == MANIFEST_COLUMNS and len(rows) == batch.letters
        for row in rows:
            reference = row["reference"]
            seen_references.add(reference)
            first = int(row["page"])
            pages = [reader.pages[first - 1 + n] for n in range(int(row["pages"]))]
            content = "\n".join(page.extract_text() for page in pages)
            assert "3422" in content and "lundi 28 février 2022" in content
            # The short reference, grouped for reading aloud (K7QX-M4RT-9), and never a UUID.
            assert re.fullmatch(r"[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]", shown[reference])
            assert f"Référence à rappeler : {shown[reference]} - page 1/" in content
            assert reference not in content and not _UUID.search(content)
            for person in people[reference]:
                assert formatted(provisional_code(key, person["nir"])) in content
                assert person["nir"] not in content
            address = [row[f"ligne{n}"] for n in range(1, 7) if row[f"ligne{n}"]]
            placed = {text_: (x, y) for text_, x, y in _positions(pages[0])}
            left, top, width, height = WINDOW_MM
            for line in address:
                x, y = placed[line]
                assert left <= x and x + len(line) * 6 / MM <= left + width, line  # Courier 10 pt: 6 pt a letter
                assert top <= y - 3.5 and y <= top + height, line
            assert any(text_ == f"Réf. {shown[reference]}" and top <= y <= top + height for text_, x, y in
                       _positions(pages[0]))
            # The return address at the top left, above the window's level: AFNOR lines, as set.
            sender = [(text_, x, y) for text_, x, y in _positions(pages[0]) if x < left and y < top]
            assert [text_ for text_, _, _ in sender] == list(RETURN_ADDRESS)
            assert len(sender) <= MAX_LINES and all(len(text_) <= MAX_LINE_LENGTH for text_, _, _ in sender)
            assert all(abs(x - 20) < 0.5 and 15 <= y <= 41 for _, x, y in sender)
            if len(people[reference]) > 1:  # the family's mother
                assert "dont vous êtes la représentante légale." in " ".join(content.split())
    assert seen_references == set(people)
    cedex_row = next(row for row in fetch(engine, "SELECT notification_id FROM notifications") if
                     people[row.notification_id][0]["code_postal"] == "75381")
    manifests = "".join(Path(b.manifest_path).read_text(encoding="utf-8") for b in batches.values())
    assert f"{cedex_row.notification_id};" in manifests and "BP 90231;75381 PARIS CEDEX 08" in manifests
    assert "&lt;" not in manifests and "<b>" not in manifests  # names are normalised, not escaped
    statuses = fetch(engine, "SELECT status, print_batch, send_date FROM notifications")
    assert {(row.status, as_date(row.send_date)) for row in statuses} == {("printed", SEND_DAY)}
    assert {row.print_batch for row in statuses} == set(batches)


def test_printing_again_after_a_crash_gives_the_same_bytes(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    settings = load_settings()
    _letters_wave(engine, settings_env, tmp_path)
    first = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")
    [batch] = fetch(engine, "SELECT * FROM print_batches")
    kept = tmp_path / "first.pdf"
    shutil.copy(batch.pdf_path, kept)
    # The crash: batch claimed and files written, nothing recorded; then the claim's lease passed.
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM print_batches"))
        connection.execute(text("UPDATE notifications SET status = 'created'"))
        connection.execute(text("UPDATE print_batch_claims SET lease_until = :passed"),
                           {"passed": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
    Path(batch.pdf_path).unlink()

    again = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-2")

    [rerun] = fetch(engine, "SELECT * FROM print_batches")
    assert again.batches == first.batches and rerun.batch_id == batch.batch_id
    assert Path(rerun.pdf_path).read_bytes() == kept.read_bytes()
    assert (rerun.pdf_sha256, rerun.manifest_sha256) == (batch.pdf_sha256, batch.manifest_sha256)


def test_unprintable_or_returned_addresses_are_not_printed_and_leave_people_unreachable(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    good = adult(email="")
    returned = adult(email="")
    load_people(engine, tmp_path, [good, returned])
    wave = create_wave(engine, settings_env)
    printed = create_notification(engine, settings_env, wave, good, channel="letter")
    cancelled = create_notification(engine, settings_env, wave, returned, channel="letter")
    with engine.begin() as connection:
        connection.execute(text("UPDATE persons SET address_returned = TRUE WHERE nir = :nir"), {"nir": returned["nir"]})

    summary = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")

    assert summary.letters_printed == 1 and summary.not_printable == 1
    statuses = dict(fetch(engine, "SELECT notification_id, status FROM notifications"))
    assert statuses == {printed: "printed", cancelled: "cancelled"}
    states = dict(fetch(engine, "SELECT nir, state FROM enrolments"))
    assert states[returned["nir"]] == "unreachable" and states[good["nir"]] == "planned"


def test_posting_a_batch_starts_the_window_of_each_person(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    settings = load_settings()
    _, people = _letters_wave(engine, settings_env, tmp_path)
    print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")

    posted = post_printed_batches(engine, settings, logical_date=SEND_DAY, run_id="post-1")

    assert posted == ["20220131-0001"]
    assert {row.status for row in fetch(engine, "SELECT status FROM notifications")} == {"posted"}
    [batch] = fetch(engine, "SELECT state, posted_on FROM print_batches")
    assert (batch.state, as_date(batch.posted_on)) == ("posted", SEND_DAY)
    deadline = opt_out_deadline(SEND_DAY, settings.opt_out_window)
    enrolments = fetch(engine, "SELECT state, opt_out_deadline FROM enrolments")
    assert len(enrolments) == sum(len(members) for members in people.values())
    assert {(row.state, as_datetime(row.opt_out_deadline)) for row in enrolments} == {("notified", deadline)}
    assert post_printed_batches(engine, settings, logical_date=SEND_DAY, run_id="post-2") == []


def test_a_batch_claimed_by_a_live_run_is_left_to_it(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    settings = load_settings()
    _letters_wave(engine, settings_env, tmp_path)
    print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")
    # Another run claimed the batch and is still writing it (its lease runs): nothing to print.
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM print_batches"))
        connection.execute(text("UPDATE notifications SET status = 'created'"))
        connection.execute(text("UPDATE print_batch_claims SET lease_until = :running"),
                           {"running": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)})

    again = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-2")

    assert (again.batches, again.letters_printed) == ([], 0)
    assert fetch(engine, "SELECT * FROM print_batches") == []
    assert {row.print_batch for row in fetch(engine, "SELECT print_batch FROM notifications")} == {"20220131-0001"}


def test_print_files_are_owner_only_and_no_temporary_file_is_left(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    _letters_wave(engine, settings_env, tmp_path)
    old_umask = os.umask(0o022)  # a usual umask: files would come out 0644, folders 0755
    try:
        summary = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1", batch_size=3)
    finally:
        os.umask(old_umask)

    assert summary.batches == ["20220131-0001", "20220131-0002"]
    assert stat.S_IMODE(settings.print_dir.stat().st_mode) == 0o700
    written = sorted(path for path in settings.print_dir.rglob("*"))
    rollout = _rollout(engine)  # batch ids are unique per database: its rollout's folder holds them
    assert [path.relative_to(settings.print_dir).as_posix() for path in written] == [
        rollout,
        f"{rollout}/20220131-0001", f"{rollout}/20220131-0001/20220131-0001-manifest.csv",
        f"{rollout}/20220131-0001/20220131-0001.pdf",
        f"{rollout}/20220131-0002", f"{rollout}/20220131-0002/20220131-0002-manifest.csv",
        f"{rollout}/20220131-0002/20220131-0002.pdf",
    ]
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in written if path.is_dir()} == {"0o700"}
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in written if path.is_file()} == {"0o600"}


def test_a_failed_write_leaves_no_temporary_file_and_the_next_run_prints_the_batch(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    _letters_wave(engine, settings_env, tmp_path)
    # A folder where the manifest should go: its rename fails after both files were written.
    blocked = settings.print_dir / _rollout(engine) / "20220131-0001" / "20220131-0001-manifest.csv"
    blocked.mkdir(parents=True)
    (blocked / "keep").write_text("x")

    with pytest.raises(OSError):
        print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")

    leftovers = [path.name for path in blocked.parent.iterdir() if path.name.endswith(".tmp")]
    assert leftovers == []
    assert fetch(engine, "SELECT * FROM print_batches") == []
    shutil.rmtree(blocked)
    again = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-2")
    # The claim was given up on the failure: the next run writes the same batch at once.
    assert again.batches == ["20220131-0001"] and again.letters_printed == 4
    assert {row.status for row in fetch(engine, "SELECT status FROM notifications")} == {"printed"}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_printing_runs_at_once_write_distinct_batches_of_distinct_letters(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    wave = create_wave(engine, settings_env)
    people = [adult(email="") for _ in range(40)]
    load_people(engine, tmp_path, people)
    for person in people:
        create_notification(engine, settings_env, wave, person, channel="letter")
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        barrier.wait()
        try:
            results[name] = print_letters(engine, settings, logical_date=SEND_DAY, run_id=name, batch_size=5)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[name] = error

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not any(isinstance(result, BaseException) for result in results.values()), results
    batches = results["a"].batches + results["b"].batches
    assert sorted(batches) == [f"20220131-{n:04d}" for n in range(1, 9)]
    assert results["a"].letters_printed + results["b"].letters_printed == 40
    recorded = fetch(engine, "SELECT batch_id, letters, run_id FROM print_batches ORDER BY batch_id")
    assert [row.letters for row in recorded] == [5] * 8
    assert {row.run_id for row in recorded} == {"a", "b"}
    in_batches = fetch(engine, "SELECT print_batch, COUNT(*) AS n FROM notifications GROUP BY print_batch")
    assert sorted((row.print_batch, row.n) for row in in_batches) == [(batch, 5) for batch in sorted(batches)]
    manifests = [Path(path).read_text(encoding="utf-8") for path in
                 [row[0] for row in fetch(engine, "SELECT manifest_path FROM print_batches")]]
    references = [line.split(";")[0] for text_ in manifests for line in text_.splitlines()[1:]]
    assert len(references) == len(set(references)) == 40  # no letter in two batches
    assert [path.name for path in settings.print_dir.rglob("*.tmp")] == []


def test_the_return_address_is_set_and_checked_as_a_postal_address() -> None:
    assert load_settings({}).return_address == RETURN_ADDRESS
    custom = load_settings({"MES_RETURN_ADDRESS": "Assurance Maladie|CPAM de l'Ain|Service Mon espace santé|TSA 70001"
                                                  "|01012 Bourg-en-Bresse Cedex"})
    assert custom.return_address == (
        "ASSURANCE MALADIE", "CPAM DE L AIN", "SERVICE MON ESPACE SANTE", "TSA 70001", "01012 BOURG EN BRESSE CEDEX"
    )
    for wrong, problem in (
        ("Assurance Maladie|TSA 12345", "postcode is not 5 digits"),
        ("Assurance Maladie|75000 PARIS CEDEX", "no delivery line"),
        ("Assurance Maladie|A|B|C|D|E|75000 PARIS", "more than 6 lines"),
        ("Assurance Maladie|TSA 12345|00000 PARIS", "postcode area does not exist"),
        ("Assurance Maladie de la Sécurité sociale du Grand Est|TSA 1|75000 PARIS", "the first line"),
    ):
        with pytest.raises(ConfigError, match=problem):
            load_settings({"MES_RETURN_ADDRESS": wrong})


def test_a_queued_letter_that_tells_nobody_any_more_is_cancelled_not_printed(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    """Between a letter's queueing (a wave's plan, or an email's fallback) and its printing, its
    people may activate their space or have their death recorded: a letter nobody still waits
    for is cancelled; one that still tells somebody is printed."""
    settings = load_settings()
    waiting, activated = adult(email=""), adult(email="")
    died_on_the_day, died_the_day_after = adult(email=""), adult(email="")
    load_people(engine, tmp_path, [waiting, activated, died_on_the_day, died_the_day_after])
    parent, kids = family(tmp_path, engine, children=2, email="")
    widowed_parent, [orphan] = family(tmp_path, engine, children=1, email="")
    wave = create_wave(engine, settings_env)
    letters = {
        name: create_notification(engine, settings_env, wave, recipient, members, channel="letter")
        for name, recipient, members in (
            ("waiting", waiting, [waiting]),
            ("activated", activated, [activated]),
            ("died on the day", died_on_the_day, [died_on_the_day]),
            ("died the day after", died_the_day_after, [died_the_day_after]),
            ("family, one child activated", parent, [parent, *kids]),
            ("to a representative who died", widowed_parent, [orphan]),
        )
    }
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE enrolments SET state = 'created' WHERE nir IN (:a, :b)"),
            {"a": activated["nir"], "b": kids[0]["nir"]},
        )
        # Deaths a later register extract recorded (the print day is 31 January 2022).
        for person, died in (
            (died_on_the_day, "2022-01-31"), (died_the_day_after, "2022-02-01"), (widowed_parent, "2022-01-30"),
        ):
            connection.execute(
                text("UPDATE persons SET date_deces = :died WHERE nir = :nir"),
                {"died": dt.date.fromisoformat(died), "nir": person["nir"]},
            )

    summary = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-1")

    assert summary.not_needed == 2 and summary.letters_printed == 3 and summary.not_printable == 1
    statuses = dict(fetch(engine, "SELECT notification_id, status FROM notifications"))
    assert {name: statuses[letter] for name, letter in letters.items()} == {
        "waiting": "printed",
        "activated": "cancelled",
        "died on the day": "cancelled",
        "died the day after": "printed",
        "family, one child activated": "printed",
        "to a representative who died": "cancelled",
    }
    audit = fetch(
        engine,
        "SELECT entity_id, from_state, to_state, reason FROM audit_trail WHERE entity = 'notification'"
        " AND to_state = 'cancelled' ORDER BY entity_id",
    )
    reasons = {row.entity_id: row.reason for row in audit}
    assert sorted(reasons) == sorted([letters["activated"], letters["died on the day"], letters["to a representative who died"]])
    assert all(row.from_state == "created" for row in audit)
    assert reasons[letters["activated"]].startswith("nobody it was for still waits")
    assert reasons[letters["died on the day"]].startswith("nobody it was for still waits")
    assert reasons[letters["to a representative who died"]] == "the recipient (a representative) died"
    # The child whose representative died waits, unreachable, for the register to name another.
    [orphaned] = fetch(engine, "SELECT state, state_reason FROM enrolments WHERE nir = :nir", nir=orphan["nir"])
    assert (orphaned.state, orphaned.state_reason) == ("unreachable", "RECIPIENT_DECEASED")
    # The people are left as they were: the creation run cancels the enrolment of the dead.
    states = dict(fetch(engine, "SELECT nir, state FROM enrolments"))
    assert states[died_on_the_day["nir"]] == "planned" and states[activated["nir"]] == "created"
    # A second run prints nothing and cancels nothing more.
    again = print_letters(engine, settings, logical_date=SEND_DAY, run_id="print-2")
    assert (again.letters_printed, again.not_needed, again.batches) == (0, 0, [])
