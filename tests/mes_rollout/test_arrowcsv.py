"""`read_batches` gives exactly the rows of `read_records`, or raises exactly its error."""

from __future__ import annotations

import csv
import gc
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.synth import generate
from mes_rollout.arrowcsv import read_batches
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import InputFileError, read_records

COLUMNS = ["a", "b", "c"]
BLOCK_SIZES = [16, 64, 4096, 4 << 20]

# An outcome: ("rows", header, [(line, fields), ...]) or ("error", where, (path, line, problem)),
# `where` being "call" (the header) or "rows" (while iterating).
Outcome = tuple[str, object, object]


def _error(where: str, error: InputFileError) -> Outcome:
    return "error", where, (error.path, error.line, error.problem)


def reference(path: Path, columns: list[str] = COLUMNS, optional: tuple[str, ...] = ()) -> Outcome:
    try:
        header, records = read_records(path, columns, optional)
    except InputFileError as error:
        return _error("call", error)
    try:
        return "rows", header, list(records)
    except InputFileError as error:
        return _error("rows", error)


def checked_rows(
    header: list[str], batches: Iterator[tuple[np.ndarray, pa.Table]]
) -> list[tuple[int, list[str]]]:
    """All batches' rows ordered by line, checking the promises on each batch on the way."""
    rows: list[tuple[int, list[str]]] = []
    last_line = 0
    for lines, table in batches:
        assert isinstance(lines, np.ndarray) and lines.dtype == np.int64
        assert table.column_names == header
        assert all(column.type == pa.string() and column.null_count == 0 for column in table.columns)
        assert len(lines) == table.num_rows > 0
        assert len(set(lines.tolist())) == len(lines)
        # Rows within a batch may be in any order, but a batch comes after the batches before it.
        assert int(lines.min()) > last_line
        last_line = int(lines.max())
        columns = [column.to_pylist() for column in table.columns]
        rows.extend((int(line), [column[index] for column in columns]) for index, line in enumerate(lines))
    return sorted(rows, key=lambda row: row[0])


def batched(
    path: Path, block_bytes: int, columns: list[str] = COLUMNS, optional: tuple[str, ...] = ()
) -> Outcome:
    try:
        header, batches = read_batches(path, columns, optional, block_bytes=block_bytes)
    except InputFileError as error:
        return _error("call", error)
    try:
        return "rows", header, checked_rows(header, batches)
    except InputFileError as error:
        return _error("rows", error)


def assert_same(path: Path, block_sizes: list[int] = BLOCK_SIZES, columns: list[str] = COLUMNS) -> Outcome:
    expected = reference(path, columns)
    for block_bytes in block_sizes:
        assert batched(path, block_bytes, columns) == expected, block_bytes
    return expected


def write(folder: Path, content: bytes, name: str = "input.csv") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


HEADER = b"a;b;c\n"
SAME_ROWS = {
    "plain": HEADER + b"1;2;3\n4;5;6\n",
    "quoted separators": HEADER + b'1;"B\xc3\xa2timent A; escalier 3";3\n4;5;6\n"x;y";"";z\n',
    "doubled quotes": HEADER + b'1;"il dit ""bonjour""";3\n"""";"a""b";""""""\n',
    "line breaks in quotes": HEADER + b'1;"deux\nlignes";3\n4;"trois\n\nlignes ; ";6\n7;8;9\n',
    "a long quoted field over blocks": HEADER + b'1;"' + b"x;\n" * 200 + b'";3\n' + b"4;5;6\n" * 30,
    "quoted fields over blocks, one after the other": HEADER + (b'1;"' + b"x;\n" * 9 + b'";3\n4;5;6\n') * 30,
    "blank lines": HEADER + b"\n1;2;3\n\n\n4;5;6\n\n",
    "only blank lines": HEADER + b"\n\n\n",
    "bom": b"\xef\xbb\xbf" + HEADER + b"1;2;3\n",
    "a bom at the start of a data line": HEADER + b"\xef\xbb\xbf1;2;3\n\xef\xbb\xbf4;\xef\xbb\xbf;6\n",
    "no final newline": HEADER + b"1;2;3\n4;5;6",
    "no final newline after quotes": HEADER + b'1;2;3\n4;5;"6\n7"',
    "crlf": b"a;b;c\r\n1;2;3\r\n4;5;6\r\n\r\n7;8;\r\n",
    "crlf in quotes": HEADER + b'1;"a\r\nb";3\n4;"\r\n";6\n',
    "quote inside an unquoted field": HEADER + b'1;ab"c;3\n4;5;6\n7;"8;9";10\n12";13;14\n',
    "quote after a space": HEADER + b'1; "2";3\n',
    "non-ascii": HEADER + "é;😀;\u2028\n\u00a0;\u00a0ß;\xa0\n\u00c2;\t;\u202e\n".encode(),
    "markup": HEADER + b'<script>alert(1)</script>;<b>x</b>;"<a href=""y"">"\n',
    "empty fields": HEADER + b";;\n;;\n",
    "values that look like nulls": HEADER + b"NA;null;NaN\n;N/A;#N/A\nNone;nan;-\n",
    "only a header": HEADER,
    "only a header, no newline": b"a;b;c",
    "header with crlf": b"a;b;c\r\n1;2;3\n",
    "header with spaces": b" a ; b;c \n1;2;3\n",
    "quoted header": b'"a";"b";c\n1;2;3\n',
    "header over two lines": b'a;"b";"c\n"\n1;2;3\n',
    "header with a bom and quotes": b'\xef\xbb\xbf"a";b;c\n1;2;"3"\n',
}
SAME_ERROR = {
    # Bytes the contracts do not allow (csvfile.check_bytes): the whole file fails.
    "cr before crlf": HEADER + b"1;2;3\r\r\n4;5;6\n",
    "cr in quotes": HEADER + b'1;"a\rb";3\n4;"\r\n";6\n',
    "nul": HEADER + b"1;\x002;3\n\x00;;\x00\n",
    "c0 controls": HEADER + "é;😀;\u2028\n\x1c\x1d\x1e;\u00a0ß;x\n\x0b\x0c;\t;\u202e\n".encode(),
    "a c1 control": HEADER + "é;😀;\u2028\n\x85;ß;x\n".encode(),
    "lone cr": HEADER + b"1;2;3\n4\r5;6;7\n",
    "cr at a field's end": HEADER + b"1;2\r;3\n",
    "too few fields": HEADER + b"1;2;3\n4;5\n",
    "too many fields": HEADER + b"1;2;3\n4;5;6;7\n",
    "spaces only": HEADER + b"1;2;3\n   \n",
    "text after a closing quote": HEADER + b'1;"2"x;3\n',
    "unterminated quote at the end": HEADER + b'1;2;3\n4;5;"6\n7;8;9\n',
    "unterminated quote, no newline": HEADER + b'1;2;3\n4;5;"6',
    "quote inside a field then an open quote": HEADER + b'1;ab"c;3\n4;"5;6\n',
    "an open quote then rows over blocks": HEADER + b'1;"2;3\n' + b"4;5;6\n" * 30 + b'";3\n4;5;6\n' * 30,
    "not utf-8": HEADER + b"1;2;3\n4;\xff;6\n",
    "not utf-8 in quotes": HEADER + b'1;"\xc3";3\n',
    "surrogate": HEADER + b"1;\xed\xa0\x80;3\n",
    "overlong": HEADER + b"1;\xc0\xaf;3\n",
    "beyond U+10FFFF": HEADER + b"1;\xf4\x90\x80\x80;3\n",
    "truncated sequence": HEADER + b"1;\xe2\x82;3\n",
    "missing column": b"a;b\n1;2\n",
    "unknown column": b"a;b;c;d\n1;2;3;4\n",
    "duplicate column": b"a;b;c;a\n1;2;3;4\n",
    "empty file": b"",
    "broken header": b'a;"b"x;c\n1;2;3\n',
}


@pytest.mark.parametrize("name", sorted(SAME_ROWS))
def test_same_rows_as_read_records(tmp_path: Path, name: str) -> None:
    outcome = assert_same(write(tmp_path, SAME_ROWS[name]))
    assert outcome[0] == "rows"


@pytest.mark.parametrize("name", sorted(SAME_ERROR))
def test_same_error_as_read_records(tmp_path: Path, name: str) -> None:
    outcome = assert_same(write(tmp_path, SAME_ERROR[name]))
    assert outcome[0] == "error"


def test_the_handcrafted_rows_are_what_the_csv_module_means(tmp_path: Path) -> None:
    # A check of the reference itself on the cases where a naive split would differ.
    outcome = reference(write(tmp_path, SAME_ROWS["quote inside an unquoted field"]))
    assert outcome == (
        "rows",
        COLUMNS,
        [(2, ["1", 'ab"c', "3"]), (3, ["4", "5", "6"]), (4, ["7", "8;9", "10"]), (5, ['12"', "13", "14"])],
    )
    outcome = reference(write(tmp_path, SAME_ROWS["crlf"]))
    assert outcome == ("rows", COLUMNS, [(2, ["1", "2", "3"]), (3, ["4", "5", "6"]), (5, ["7", "8", ""])])
    outcome = reference(write(tmp_path, SAME_ROWS["a bom at the start of a data line"]))
    assert outcome[2] == [(2, ["\ufeff1", "2", "3"]), (3, ["\ufeff4", "\ufeff", "6"])]


def test_a_single_column_file_with_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\nx\n\ny\n \n\n" + b"z\n" * 50 + b'"q\n"\n')
    outcome = assert_same(path, columns=["a"])
    assert outcome[0] == "rows" and len(outcome[2]) == 54  # type: ignore[arg-type]


def test_wrong_field_count_in_a_later_block(tmp_path: Path) -> None:
    lines = [b"%d;x;y\n" % n for n in range(2, 1600)]
    lines[1500 - 2] = b"1500;x\n"  # physical line 1500, after read_records' first 8 KiB
    path = write(tmp_path, HEADER + b"".join(lines))
    expected = assert_same(path)
    assert expected[:2] == ("error", "rows")
    assert expected[2] == (str(path), 1500, "2 fields where the header has 3 (truncated or shifted row)")


@pytest.mark.parametrize("line", [3, 1000])
def test_invalid_utf8_on_a_line(tmp_path: Path, line: int) -> None:
    lines = [b'%d;"caf\xc3\xa9";y\n' % n if n % 7 == 0 else b"%d;caf\xc3\xa9;y\n" % n for n in range(2, 1500)]
    lines[line - 2] = b"%d;caf\xe9;y\n" % line  # latin-1
    path = write(tmp_path, HEADER + b"".join(lines))
    expected = assert_same(path)
    # read_records decodes ahead of its parser: early in the file, the error comes with the header.
    assert expected[:2] == ("error", "call" if line == 3 else "rows")
    assert expected[2] == (
        str(path),
        line,
        f"not UTF-8 (invalid continuation byte at byte {len(str(line)) + 4})",
    )


def test_missing_column_is_raised_by_the_call(tmp_path: Path) -> None:
    path = write(tmp_path, b"a;c\n1;2\n")
    with pytest.raises(InputFileError) as raised:
        read_batches(path, COLUMNS)
    assert (raised.value.line, raised.value.problem) == (1, "missing column(s): b")
    assert reference(path) == _error("call", raised.value)


def test_broken_quoting_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"1;2;3\n" * 2000 + b'4;"5;6\n')
    expected = assert_same(path)
    assert expected == ("error", "rows", (str(path), 2002, "broken quoting (unexpected end of data)"))


def test_a_field_over_the_csv_size_limit(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    too_long = write(tmp_path, HEADER + b"1;2;3\n4;" + b"x" * (limit + 1) + b";6\n7;8;9\n", "long.csv")
    assert assert_same(too_long, [64, 4 << 20])[0] == "error"
    # At the limit in characters but over it in bytes: read_records takes it.
    at_limit = write(tmp_path, HEADER + b"1;2;3\n4;" + "é".encode() * limit + b";6\n7;8;9\n", "limit.csv")
    assert assert_same(at_limit, [64, 4 << 20])[0] == "rows"


def test_a_record_open_over_megabytes_hands_over_without_losing_a_row(tmp_path: Path) -> None:
    # A quoted field of 3 MB (the csv module's limit raised to take it). With 64 KiB blocks the fast
    # reader gives up on it and read_records gives the rows from its line on; with 4 MiB blocks the
    # fast reader takes it, over two blocks.
    previous = csv.field_size_limit(8 << 20)
    try:
        big = b'"' + b"abc;\n" * 600_000 + b'"'
        path = write(tmp_path, HEADER + b"1;2;3\n" * 20_000 + b"4;" + big + b";6\n" + b"7;8;9\n" * 20_000)
        outcome = assert_same(path, [64 << 10, 4 << 20])
        assert outcome[0] == "rows" and len(outcome[2]) == 40_001  # type: ignore[arg-type]
        header, batches = read_batches(path, COLUMNS, block_bytes=64 << 10)
        sizes = [len(lines) for lines, _ in batches]
        # Blocks of 64 KiB hold about 11,000 short rows: the 20,001 rows from the big one on come in
        # one batch from read_records, and the ones before it from the fast path.
        assert sizes[-1] == 20_001 and len(sizes) > 2
    finally:
        csv.field_size_limit(previous)


def test_the_files_are_closed(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"1;2;3\n" * 5000 + b'4;"5";6\n')
    gc.collect()  # what earlier tests of this process left unclosed warns now, not below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header, batches = read_batches(path, COLUMNS, block_bytes=1024)
        assert sum(len(lines) for lines, _ in batches) == 5001
        header, batches = read_batches(path, COLUMNS, block_bytes=1024)
        next(batches)
        batches.close()  # type: ignore[attr-defined]
        del header, batches
        gc.collect()
    # An unclosed file warns with its name; sockets or event loops other code left behind do not count.
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning) and str(path) in str(w.message)]
    assert not leaked


def test_a_synthetic_register(tmp_path: Path) -> None:
    generate(20_000, 5, tmp_path, dirty=0.05, with_dmp=False)
    path = tmp_path / "register.csv"
    expected = assert_same(path, [64 << 10, 1 << 20, 4 << 20], columns=list(REGISTER_COLUMNS))
    assert expected[0] == "rows"
    rows: list[tuple[int, list[str]]] = expected[2]  # type: ignore[assignment]
    assert len(rows) > 20_000
    # The extract has what the fast path must leave to the csv module.
    assert any('"' in line for line in path.read_text(encoding="utf-8").splitlines())
    assert any(second - first > 1 for (first, _), (second, _) in zip(rows, rows[1:], strict=False))


# Generated files: fields rich in what matters to a CSV parser.
_FIELD = st.text(alphabet=st.sampled_from(list('a;"\n\r é😀\t\x00\ufeff\u2028')), max_size=6)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A file and its header: rows written by csv.writer, blank lines, and in some files one kind of
    damage (rows written without quoting, rows one field short, bytes that are not UTF-8)."""
    width = draw(st.integers(min_value=1, max_value=4))
    header = COLUMNS_BY_WIDTH[width]
    damage = draw(st.sampled_from(["none", "none", "unquoted", "short", "encoding"]))
    terminator = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", lineterminator=terminator, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in draw(st.lists(st.lists(_FIELD, min_size=width, max_size=width), max_size=40)):
        how = draw(st.sampled_from(["csv", "csv", "csv", "blank", "damaged"]))
        if how == "blank":
            out.write(terminator)
        if how != "damaged" or damage in ("none", "encoding"):
            writer.writerow(row)
        elif damage == "unquoted":  # broken, or not, as it happens
            out.write(";".join(row) + terminator)
        else:
            writer.writerow(row[:-1] if width > 1 else [*row, "x"])
    text = out.getvalue()
    if draw(st.booleans()) and text.endswith(terminator):
        text = text[: -len(terminator)]
    raw = (("\ufeff" if draw(st.booleans()) else "") + text).encode("utf-8")
    if damage == "encoding":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = (
            raw[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"])) + raw[at:]
        )
    return raw, header


COLUMNS_BY_WIDTH = {width: [f"k{index}" for index in range(width)] for width in range(1, 5)}


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=csv_files(), block_bytes=st.integers(min_value=16, max_value=4096))
def test_generated_files_give_the_same_rows_or_the_same_error(
    tmp_path: Path, file: tuple[bytes, list[str]], block_bytes: int
) -> None:
    content, columns = file
    path = write(tmp_path, content)
    assert batched(path, block_bytes, columns) == reference(path, columns)
