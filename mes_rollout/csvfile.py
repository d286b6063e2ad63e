"""Reading the pipeline's input CSV files: `;`-separated UTF-8, strict, with physical line numbers.

A file that cannot be read (a forbidden byte, wrong header, undecodable bytes, broken quoting, a
row cut short) raises `InputFileError` naming the file and the line; callers run inside one
transaction so that nothing is applied.

The bytes a file may hold besides its text (`check_bytes`, run on the whole file when it is opened):
TAB, and CR and LF as line ends (a CR only right before a LF). A NUL, any other C0 control
character, DEL and the C1 controls (U+0080 to U+009F) fail the file: no name, address, identifier
or free text of the contracts holds one, PostgreSQL cannot store a NUL at all, and a control
character would reach letters and emails as it is. A UTF-8 byte-order mark at the start is allowed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SEPARATOR = ";"
_HASH_BLOCK = 1 << 20
# The byte check reads blocks of a few MiB: deleting the forbidden single bytes (bytes.translate) and
# looking for CR and \xc2 (memchr) run in C at several hundred MB/s; the regular expressions only
# run on a block that has a candidate.
_SCAN_BLOCK = 4 << 20
_CONTROL_BYTES = bytes(byte for byte in range(0x20) if byte not in (0x09, 0x0A, 0x0D)) + b"\x7f"
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LONE_CR = re.compile(rb"\r(?!\n)")
_C1_CONTROL = re.compile(rb"\xc2[\x80-\x9f]")  # U+0080-U+009F in UTF-8
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
# The column of a forbidden byte is found by parsing the file up to it, when it is this close to the start.
_LOCATE_COLUMN_BYTES = 64 << 20


class InputFileError(Exception):
    """The file as a whole cannot be read; nothing from it was applied."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Row:
    line_no: int  # physical line where the row starts (header = 1)
    values: dict[str, str | None]  # empty field = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def check_bytes(path: Path) -> None:
    """Raise InputFileError (the line of the first forbidden byte, its column when cheap to find)
    if the file holds a byte the contracts do not allow (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, None, "no such file")
    offset = 0
    with path.open("rb") as stream:
        while block := stream.read(_SCAN_BLOCK):
            # A CR or a \xc2 at the end of a block is judged with the byte after it.
            while block[-1:] in (b"\r", b"\xc2") and (following := stream.read(1)):
                block += following
            found = _first_forbidden(block)
            if found is not None:
                raise _forbidden_byte_error(path, offset + found[0], found[1])
            offset += len(block)


def _first_forbidden(block: bytes) -> tuple[int, str] | None:
    """(index, what it is) of the first forbidden byte of the block, if any."""
    candidates: list[re.Match[bytes]] = []
    if len(block.translate(None, _CONTROL_BYTES)) != len(block):
        candidates.append(_CONTROL_BYTE.search(block))  # type: ignore[arg-type]
    if b"\r" in block and (lone := _LONE_CR.search(block)):
        candidates.append(lone)
    if b"\xc2" in block and (c1 := _C1_CONTROL.search(block)):
        candidates.append(c1)
    if not candidates:
        return None
    first = min(candidates, key=lambda match: match.start())
    return first.start(), _describe(first.group())


def _describe(found: bytes) -> str:
    if found == b"\x00":
        return "NUL byte"
    if found == b"\r":
        return "carriage return (0x0D) not followed by a line feed"
    if found == b"\x7f":
        return "control character 0x7F (DEL)"
    if len(found) == 2:
        return f"control character U+{found[1]:04X}"
    return f"control character 0x{found[0]:02X}"


def _forbidden_byte_error(path: Path, offset: int, what: str) -> InputFileError:
    """The error for a forbidden byte at `offset`: its physical line, its byte in the line, and its
    column if the file up to it parses (and is not too long to parse again)."""
    line, line_start = 1, 0
    with path.open("rb") as stream:
        read = 0
        while read < offset:
            block = stream.read(min(_SCAN_BLOCK, offset - read))
            newlines = block.count(b"\n")
            if newlines:
                line += newlines
                line_start = read + block.rindex(b"\n") + 1
            read += len(block)
    column = _column_of(path, line) if offset < _LOCATE_COLUMN_BYTES else None
    where = f" in column {column}" if column else ""
    return InputFileError(path, line, f"{what}{where} (byte {offset - line_start} of the line)")


def _column_of(path: Path, line: int) -> str | None:
    """The name of the column whose field holds the first forbidden character of physical line
    `line` (the header itself: "the header"), or None when the file does not parse up to it."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="\n") as stream:
        reader = csv.reader(stream, delimiter=SEPARATOR, quotechar='"')
        try:
            header = [name.strip() for name in next(reader)]
            if reader.line_num >= line:
                return "the header"
            for fields in reader:
                if reader.line_num >= line:
                    for index, value in enumerate(fields):
                        if _FORBIDDEN_CHARACTER.search(value):
                            return header[index] if index < len(header) else None
                    return None
        except (csv.Error, StopIteration):
            return None
    return None


def _decoded_lines(path: Path, counter: list[int]) -> Iterator[str]:
    # Decode line by line (a newline byte never occurs inside a UTF-8 sequence), so that an
    # undecodable byte is reported on its own physical line.
    with path.open("rb") as stream:
        for raw in stream:
            counter[0] += 1
            if counter[0] == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputFileError(path, counter[0], f"not UTF-8 ({error.reason} at byte {error.start})") from None


def _undecodable_line(path: Path) -> InputFileError:
    """The error naming the first line that is not UTF-8 (the fast reader only knows that one is not)."""
    try:
        for _ in _decoded_lines(path, [0]):
            pass
    except InputFileError as error:
        return error
    return InputFileError(path, None, "not UTF-8")


def strict_reader(lines: Iterable[str]) -> Any:
    """The csv reader of the pipeline's files: `;`, `"` doubled inside quotes, strict (a stray quote
    is an error). Every reader of these files parses with it, so that they agree field for field."""
    return csv.reader(lines, delimiter=SEPARATOR, quotechar='"', strict=True)


def read_records(
    path: Path,
    required: Iterable[str],
    optional: Iterable[str] = (),
    *,
    allow_extra: bool = False,
    bytes_checked: bool = False,
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header, and the rows as (physical line where the row starts, fields in header order).

    Fields are strings, empty where the file has nothing. This is the reader for files of millions
    of rows: decoding and splitting run in C (lines end at "\n" only, as in the file's bytes), and
    no dict is built per row. `read_rows` gives the same rows keyed by column name.

    The whole file's bytes are checked first (`check_bytes`), unless the caller says it has done so
    (`bytes_checked`, for an intake that checks before it opens its connections)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, None, "no such file")
    if not bytes_checked:
        check_bytes(path)
    stream = path.open(encoding="utf-8-sig", newline="\n")
    reader = strict_reader(stream)
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise InputFileError(path, 1, "empty file: a header row is expected") from None
        except csv.Error as error:
            raise InputFileError(path, reader.line_num, f"unreadable header ({error})") from None
        except UnicodeDecodeError:
            raise _undecodable_line(path) from None
        header = [name.strip() for name in header]
        required_set, known = set(required), set(required) | set(optional)
        missing = sorted(required_set - set(header))
        if missing:
            raise InputFileError(path, 1, f"missing column(s): {', '.join(missing)}")
        unknown = sorted(set(header) - known)
        if unknown and not allow_extra:
            raise InputFileError(path, 1, f"unknown column(s): {', '.join(unknown)}")
        if len(set(header)) != len(header):
            raise InputFileError(path, 1, "a column name appears twice")
    except BaseException:
        stream.close()
        raise
    return header, _records(path, stream, reader, len(header))


def _records(
    path: Path, stream: io.TextIOWrapper, reader: Any, width: int
) -> Iterator[tuple[int, list[str]]]:
    with stream:
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise InputFileError(path, start, f"broken quoting ({error})") from None
            except UnicodeDecodeError:
                raise _undecodable_line(path) from None
            if len(fields) != width:
                if not fields:
                    start = reader.line_num + 1
                    continue  # a blank line carries no row
                raise InputFileError(
                    path, start, f"{len(fields)} fields where the header has {width} (truncated or shifted row)"
                )
            yield start, fields
            start = reader.line_num + 1


def read_rows(
    path: Path,
    required: Iterable[str],
    optional: Iterable[str] = (),
    *,
    allow_extra: bool = False,
    bytes_checked: bool = False,
) -> Iterator[Row]:
    """The rows of a CSV file as dicts keyed by column name, checked against the expected header
    (and its bytes, as read_records says)."""
    header, records = read_records(path, required, optional, allow_extra=allow_extra, bytes_checked=bytes_checked)
    for line, fields in records:
        yield Row(line, {name: (value if value != "" else None) for name, value in zip(header, fields, strict=True)})


def chunks(rows: Iterator[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
