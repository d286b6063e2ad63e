"""Reading the pipeline's input CSV files: `;`-separated UTF-8, strict, with physical line numbers.

A file that cannot be read (wrong header, undecodable bytes, broken quoting, a row cut short) raises
`InputFileError` naming the file and the line; callers run inside one transaction so that nothing
is applied.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SEPARATOR = ";"
_HASH_BLOCK = 1 << 20


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
    path: Path, required: Iterable[str], optional: Iterable[str] = (), *, allow_extra: bool = False
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header, and the rows as (physical line where the row starts, fields in header order).

    Fields are strings, empty where the file has nothing. This is the reader for files of millions
    of rows: decoding and splitting run in C (lines end at "\n" only, as in the file's bytes), and
    no dict is built per row. `read_rows` gives the same rows keyed by column name."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, None, "no such file")
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
    path: Path, required: Iterable[str], optional: Iterable[str] = (), *, allow_extra: bool = False
) -> Iterator[Row]:
    """The rows of a CSV file as dicts keyed by column name, checked against the expected header."""
    header, records = read_records(path, required, optional, allow_extra=allow_extra)
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
