"""Bytes no input file may hold (csvfile.check_bytes): the file fails as a whole, naming its line and
column, before anything is written, in seconds, on SQLite and PostgreSQL; and a failure inside the
register's multi-connection intake leaves no connection behind."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, inspect, text

from enrolment.decisions import load_decisions
from enrolment.register import load_register
from mes_rollout import csvfile
from mes_rollout.arrowcsv import read_batches
from mes_rollout.config import load_settings
from mes_rollout.contracts import DMP_COLUMNS, DOCUMENT_COLUMNS, REGISTER_COLUMNS
from mes_rollout.csvfile import InputFileError, check_bytes, read_records, read_rows
from migration.intake import load_dmp_extract
from notifications.feedback import load_feedback
from tests.factories import make_nir, person_row, write_csv

T = TypeVar("T")
AS_OF = dt.date(2022, 1, 20)
HEADER = b"a;b;c\n"
# A load that takes longer than this has hung (they take well under a second here).
TIME_LIMIT_SECONDS = 60.0


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()`'s result or error, failing the test if it has not ended after `seconds`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: the load hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows of every table of the schema: what "nothing was written" is checked against."""
    with engine.connect() as connection:
        names = sorted(inspect(connection).get_table_names())
        return {name: connection.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one() for name in names}  # noqa: S608


def busy_connections(engine: Engine) -> list[tuple[str, str]]:
    """Other connections to the test's PostgreSQL database still in a transaction or a statement."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT state, left(query, 40) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'"
            )
        ).all()
    return [(str(state), str(query)) for state, query in rows]


def write(folder: Path, content: bytes, name: str = "input.csv") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def register_rows(count: int) -> list[dict[str, str]]:
    """`count` valid people with distinct NIRs."""
    return [
        person_row(nir=make_nir("2", 1982, 8, place=f"{1 + index // 999:02d}053", order=index % 999 + 1))
        for index in range(count)
    ]


# --- the byte check itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (HEADER + b"1;2;3\n4;x\x00y;6\n", 3, "NUL byte in column b (byte 3 of the line)"),
        (HEADER + b"1;2;3\n4;5;\x1b[31m\n", 3, "control character 0x1B in column c (byte 4 of the line)"),
        (HEADER + b"\x7f;2;3\n", 2, "control character 0x7F (DEL) in column a (byte 0 of the line)"),
        (HEADER + "1;2;3\n4;\x85;6\n".encode(), 3, "control character U+0085 in column b (byte 2 of the line)"),
        (HEADER + b"1;2\r;3\n", 2, "carriage return (0x0D) not followed by a line feed (byte 3 of the line)"),
        (HEADER + b'1;"two\rlines";3\n', 2, "carriage return (0x0D) not followed by a line feed in column b"),
        (HEADER + b'1;"two\nlines";\x0c\n', 3, "control character 0x0C in column c"),
        (b"a;b\x00;c\n1;2;3\n", 1, "NUL byte in column the header"),
    ],
)
def test_a_forbidden_byte_fails_the_file_with_its_line_and_column(
    tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputFileError) as raised:
        check_bytes(path)
    assert (raised.value.path, raised.value.line) == (str(path), line)
    assert raised.value.problem.startswith(problem)


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + HEADER + b"1;2;3\n",  # a byte-order mark at the start
        b"a;b;c\r\n1;2;3\r\n\r\n",  # CRLF line ends
        HEADER + b'1;"two\r\nlines";"three\nlines\n"\n',  # line ends inside quotes
        HEADER + b"1;\t2\t;3\n",  # TAB
        HEADER + "é;\u00a0«»°;\u00c2\u2028😀\n".encode(),  # \xc2 of ordinary characters, U+2028
        HEADER + b"1;2;3",  # no final line end
        b"",
    ],
)
def test_text_line_ends_tabs_and_a_bom_are_allowed(tmp_path: Path, content: bytes) -> None:
    check_bytes(write(tmp_path, content))


def test_a_pair_of_bytes_across_two_blocks_of_the_scan_is_judged_whole(tmp_path: Path) -> None:
    block = csvfile._SCAN_BLOCK
    filler = b"1;2;3\n" * (block // 6 + 1)
    # "\r\n" and "\xc2\xa0" whose first byte ends the first block: allowed.
    for pair in (b"\r\n", "\u00a0".encode()):
        prefix = (HEADER + filler)[: block - 3]
        path = write(tmp_path, prefix + b";;" + pair + b"x;y;z\n")
        assert (prefix + b";;" + pair).index(pair) == block - 1
        check_bytes(path)
    # "\r" then not "\n", and U+0085, across the same boundary: refused.
    for pair, problem in ((b"\rx", "carriage return"), ("\x85".encode(), "U+0085")):
        prefix = (HEADER + filler)[: block - 3]
        path = write(tmp_path, prefix + b";;" + pair + b";y;z\n")
        with pytest.raises(InputFileError) as raised:
            check_bytes(path)
        assert problem in raised.value.problem
        assert raised.value.line == prefix.count(b"\n") + 1


def test_the_error_never_carries_the_value(tmp_path: Path) -> None:
    row = person_row(nom_naissance="Dupont\x00Secret")
    path = write_csv(tmp_path / "register.csv", [row])
    with pytest.raises(InputFileError) as raised:
        check_bytes(path)
    assert "nom_naissance" in str(raised.value)
    assert "Secret" not in str(raised.value) and row["nir"] not in str(raised.value)


def test_every_reader_checks_the_whole_file_when_it_opens_it(tmp_path: Path) -> None:
    # The bad byte is far past what the readers parse before the first row is asked for.
    path = write(tmp_path, HEADER + b"1;2;3\n" * 200_000 + b"4;\x005;6\n")
    for open_file in (
        lambda: read_records(path, ["a", "b", "c"]),
        lambda: read_rows(path, ["a", "b", "c"]),  # a generator: the check runs at the first row
        lambda: read_batches(path, ["a", "b", "c"]),
    ):
        with pytest.raises(InputFileError) as raised:
            opened = open_file()
            next(iter(opened))  # type: ignore[call-overload]
        assert (raised.value.line, raised.value.problem) == (200_002, "NUL byte in column b (byte 2 of the line)")


# --- each intake, on SQLite and PostgreSQL ---------------------------------------------------


def assert_fails_on_line(engine: Engine, load: Callable[[], object], path: Path, line: int, column: str) -> None:
    before = table_counts(engine)
    with pytest.raises(InputFileError) as raised:
        within(TIME_LIMIT_SECONDS, load)
    assert raised.value.path == str(path)
    assert raised.value.line == line
    assert raised.value.problem.startswith(f"NUL byte in column {column}")
    assert table_counts(engine) == before
    assert busy_connections(engine) == []


def test_a_nul_in_a_register_fails_the_first_load_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    # Persons is empty: the first-load path (on PostgreSQL, COPY on two connections). A NUL near the
    # end used to leave one connection waiting in COPY and the load hanging for ever.
    rows = register_rows(5_000)
    rows[4_900]["nom_naissance"] = "Mar\x00tin"
    path = write_csv(tmp_path / "register.csv", rows)
    assert_fails_on_line(engine, lambda: load_register(engine, path, as_of=AS_OF), path, 4_902, "nom_naissance")
    # Nothing is left locked or half-done: the file without its NUL loads in full.
    rows[4_900]["nom_naissance"] = "Martin"
    summary = within(TIME_LIMIT_SECONDS, lambda: load_register(engine, write_csv(tmp_path / "fixed.csv", rows), as_of=AS_OF))
    assert (summary.read, summary.accepted) == (5_000, 5_000)


def test_a_nul_in_a_later_register_fails_the_upsert_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    rows = register_rows(3_000)
    load_register(engine, write_csv(tmp_path / "first.csv", rows[:10]), as_of=AS_OF)
    rows[2_950]["adresse_ligne4"] = "12 rue\x00 des Lilas"
    path = write_csv(tmp_path / "register.csv", rows)
    assert_fails_on_line(engine, lambda: load_register(engine, path, as_of=AS_OF), path, 2_952, "adresse_ligne4")


def test_a_nul_in_decisions_fails_the_file_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    columns = ("reference", "nir", "event", "received_at", "channel")
    rows = [
        {"reference": f"REF-{index}", "nir": make_nir(), "event": "opposition",
         "received_at": "2022-01-10T10:00:00+01:00", "channel": "web"}
        for index in range(2_000)
    ]  # fmt: skip
    rows[1_990]["channel"] = "w\x00eb"
    path = write_csv(tmp_path / "decisions.csv", rows, columns)
    assert_fails_on_line(
        engine, lambda: load_decisions(engine, path, as_of=AS_OF, run_id="decisions-nul"), path, 1_992, "channel"
    )


def test_a_nul_in_feedback_fails_the_file_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    columns = ("notification_id", "status", "occurred_at", "detail")
    rows = [
        {"notification_id": f"N-{index}", "status": "delivered", "occurred_at": "2022-02-01T10:00:00+01:00",
         "detail": "250 OK"}
        for index in range(2_000)
    ]  # fmt: skip
    rows[1_500]["detail"] = "550 \x00 mailbox unavailable"
    path = write_csv(tmp_path / "feedback.csv", rows, columns)
    window = load_settings().opt_out_window
    assert_fails_on_line(
        engine,
        lambda: load_feedback(engine, path, window=window, as_of=dt.date(2022, 2, 7), run_id="feedback-nul"),
        path,
        1_502,
        "detail",
    )


def dmp_extract(folder: Path, count: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    dmps = [
        {"dmp_id": f"DMP{index:08d}", "nir": make_nir(), "date_naissance": "1982-08-15", "sexe": "F",
         "created_at": "2019-03-04T10:15:00+01:00", "status": "active"}
        for index in range(count)
    ]  # fmt: skip
    documents = [
        {"entry_uuid": f"E{index:08d}", "unique_id": f"1.2.250.1.213.{index}", "dmp_id": dmp["dmp_id"],
         "type_code": "11488-4", "class_code": "10", "confidentiality": "N",
         "creation_time": "2019-03-04T10:15:00+01:00", "service_start_time": "", "author_role": "PS",
         "mime_type": "application/pdf", "size": "2048", "hash": "0" * 40, "status": "Approved", "replaces": "",
         "content_path": f"content/E{index:08d}.pdf", "title": "Compte rendu"}
        for index, dmp in enumerate(dmps)
    ]  # fmt: skip
    return dmps, documents


@pytest.mark.parametrize("damaged", ["dmp.csv", "documents.csv"])
def test_a_nul_in_a_dmp_extract_fails_the_extract_and_writes_nothing(
    engine: Engine, tmp_path: Path, damaged: str
) -> None:
    folder = tmp_path / "dmp"
    dmps, documents = dmp_extract(folder, 2_000)
    if damaged == "dmp.csv":
        dmps[1_800]["created_at"] = "2019-03-04T10:15:00\x00+01:00"
    else:
        documents[1_800]["title"] = "Compte\x00rendu"  # documents.csv is read after dmp.csv was staged
    write_csv(folder / "dmp.csv", dmps, DMP_COLUMNS)
    write_csv(folder / "documents.csv", documents, DOCUMENT_COLUMNS)
    column = "created_at" if damaged == "dmp.csv" else "title"
    assert_fails_on_line(
        engine, lambda: load_dmp_extract(engine, folder), (folder / damaged).resolve(), 1_802, column
    )


# --- a failure inside the register's multi-connection intake --------------------------------


def _refuse_a_name(engine: Engine, name: str) -> None:
    """A trigger that makes the database refuse a person named `name` as the row comes in."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_person() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_person BEFORE INSERT ON persons FOR EACH ROW"
                f" WHEN (NEW.nom_naissance = '{name}') EXECUTE FUNCTION refuse_person()"
            )
        else:
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_person BEFORE INSERT ON persons WHEN NEW.nom_naissance = '{name}'"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )


def test_a_database_error_in_a_writer_stops_every_connection(engine: Engine, tmp_path: Path) -> None:
    # The person's row goes straight into persons by COPY on the load's connection while the keys
    # stream into the other: the error comes out of one writer; before, the other was left in COPY
    # and the load waited for ever.
    _refuse_a_name(engine, "Refused")
    rows = register_rows(5_000)
    rows[4_000]["nom_naissance"] = "Refused"
    path = write_csv(tmp_path / "register.csv", rows)
    before = table_counts(engine)
    with pytest.raises(Exception, match="refused by the test"):
        within(TIME_LIMIT_SECONDS, lambda: load_register(engine, path, as_of=AS_OF))
    assert table_counts(engine) == before
    assert busy_connections(engine) == []
    rows[4_000]["nom_naissance"] = "Martin"
    summary = within(TIME_LIMIT_SECONDS, lambda: load_register(engine, write_csv(tmp_path / "b.csv", rows), as_of=AS_OF))
    assert summary.accepted == 5_000


def test_an_unreadable_row_late_in_a_first_load_stops_every_connection(engine: Engine, tmp_path: Path) -> None:
    # Broken quoting past the reader's first block: rows already stream into both connections.
    rows = register_rows(30_000)
    path = write_csv(tmp_path / "register.csv", rows)
    path.write_bytes(path.read_bytes() + b'"' + b";" * (len(REGISTER_COLUMNS) - 1) + b"\n")
    before = table_counts(engine)
    with pytest.raises(InputFileError) as raised:
        within(TIME_LIMIT_SECONDS, lambda: load_register(engine, path, as_of=AS_OF))
    assert raised.value.line == 30_002
    assert table_counts(engine) == before
    assert busy_connections(engine) == []
