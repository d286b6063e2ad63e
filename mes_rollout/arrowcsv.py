"""A columnar reader for the pipeline's `;` CSV files, giving exactly the rows of `csvfile.read_records`.

`read_batches` reads the file in blocks of bytes. In a block, the lines that Python's csv module
splits exactly like `str.split` would ("plain" lines: no `"`, no NUL, no BOM, not blank, no `\\r`
except one just before the `\\n`, not longer than the csv module's field size limit) are parsed by
`pyarrow.csv` in one call, with quoting disabled. Every other line starts a record that Python's csv
reader parses, with read_records' dialect, from that line on, taking as many physical lines as the
record needs: quoted fields, doubled quotes, line breaks inside quotes and the quote kept literally
in `ab"c` mean what they mean to read_records.

Whatever the fast path cannot vouch for (pyarrow or the csv module fails, a field count is wrong, a
record stays open for megabytes) hands over to `read_records` itself: its error is raised, or its
rows are given from the first line of the block that failed onward. A row is never given twice nor
lost, and a file read_records fails on fails here with the same `InputFileError` (path, line, problem).
"""

from __future__ import annotations

import csv
import inspect
import io
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mes_rollout.csvfile import SEPARATOR, InputFileError, read_records, strict_reader

Batch = tuple[np.ndarray, pa.Table]
Records = Iterator[tuple[int, list[str]]]

_BOM = b"\xef\xbb\xbf"
_SLOW_BATCH_ROWS = 65_536
# pyarrow wants each row within one of its blocks: longer lines go to the csv module.
_PYARROW_BLOCK = 1 << 20
_LONG_LINE = _PYARROW_BLOCK // 2
# A record still open after this many bytes (or 4 blocks) is not re-parsed as the buffer grows:
# read_records takes over from there (it raises, or streams the rest).
_MIN_OPEN_RECORD = 1 << 20
_MAX_OFFSET = (1 << 31) - 1


class _NeedMore(Exception):
    """A record parsed by the csv module goes on past the end of the block."""


class _Fallback(Exception):
    """The fast path cannot vouch for this block: read_records takes over from its first line."""


def read_batches(
    path: Path,
    required: Iterable[str],
    optional: Iterable[str] = (),
    *,
    allow_extra: bool = False,
    block_bytes: int = 4 << 20,
    bytes_checked: bool = False,
) -> tuple[list[str], Iterator[Batch]]:
    """The header, and the rows in batches `(lines, table)`: the same rows as `read_records`.

    `lines` is an int64 array of the physical lines where the rows start (header = 1); `table` has
    the header's names as columns, all `pa.string()` without nulls (an empty field is ""), one row
    per entry of `lines`. Ordering all batches' rows by line gives exactly
    `list(read_records(path, ...)[1])`.

    A batch holds the rows of one block of about `block_bytes` bytes: first the rows pyarrow
    parsed, in line order, then those the csv module parsed, in line order. So rows are NOT in line
    order within a batch (sort by `lines` if needed), but every row of a batch comes after every
    row of the batches before it.

    The header's errors (and a forbidden byte anywhere: `csvfile.check_bytes`, skipped if the
    caller has run it, `bytes_checked`) are raised by this call, the rows' while iterating: the
    `InputFileError` read_records raises on the same file (same path, line and problem). Memory
    holds a few blocks (and the longest record), never the whole file.
    """
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be 1 or more, not {block_bytes}")
    path = Path(path)
    header, records = read_records(path, required, optional, allow_extra=allow_extra, bytes_checked=bytes_checked)
    return header, _batches(path, header, records, block_bytes)


def _batches(path: Path, header: list[str], records: Records, block_bytes: int) -> Iterator[Batch]:
    # `records` (read_records' rows, not started) is where the fast path hands over, if it must.
    try:
        resume_at = yield from _fast_batches(path, header, block_bytes)
        if resume_at is not None:
            yield from _slow_batches(records, header, resume_at)
    finally:
        _close_records(records)


def _close_records(records: Records) -> None:
    """Close read_records' generator and its file (closing one not yet started leaves the file open)."""
    if not inspect.isgenerator(records):
        return
    if inspect.getgeneratorstate(records) == inspect.GEN_CREATED:
        with suppress(InputFileError):
            next(records, None)
    records.close()


def _slow_batches(records: Records, header: list[str], first_line: int) -> Iterator[Batch]:
    """read_records' rows from `first_line` on (raising its error, wherever it is), in batches."""
    lines: list[int] = []
    rows: list[list[str]] = []
    for line, fields in records:
        if line < first_line:
            continue
        lines.append(line)
        rows.append(fields)
        if len(rows) >= _SLOW_BATCH_ROWS:
            yield np.array(lines, dtype=np.int64), _table(rows, header)
            lines, rows = [], []
    if rows:
        yield np.array(lines, dtype=np.int64), _table(rows, header)


def _table(rows: list[list[str]], header: list[str]) -> pa.Table:
    columns: Iterable[Sequence[str]] = zip(*rows, strict=True) if rows else ([] for _ in header)
    return pa.Table.from_arrays([string_array(column) for column in columns], names=header)


# Arrays built from buffers: `pa.array` on a list or a numpy array imports pandas (a third of a
# second), which reading and checking files does not otherwise need.


def string_array(values: Sequence[str | None]) -> pa.Array | pa.ChunkedArray:
    """A `pa.string()` array of the values, None for null."""
    chunks = _string_chunks(values)
    return chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks, type=pa.string())


def int64_array(values: np.ndarray) -> pa.Array:
    return pa.Int64Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(np.ascontiguousarray(values, np.int64))])


def bool_array(values: np.ndarray) -> pa.Array:
    bits = np.packbits(np.asarray(values, bool), bitorder="little")
    return pa.BooleanArray.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _string_chunks(values: Sequence[str | None]) -> list[pa.Array]:
    encoded = [b"" if value is None else value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    if offsets[-1] > _MAX_OFFSET and len(values) > 1:  # over 2 GiB: halves
        return _string_chunks(values[: len(values) // 2]) + _string_chunks(values[len(values) // 2 :])
    offsets_buffer = pa.py_buffer(offsets.astype(np.int32))
    validity = None
    if any(value is None for value in values):
        present = np.fromiter((value is not None for value in values), dtype=bool, count=len(values))
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return [pa.StringArray.from_buffers(len(encoded), offsets_buffer, pa.py_buffer(b"".join(encoded)), validity)]


def _plain_header(raw: bytes, header: list[str]) -> bool:
    """Whether the first physical line is the whole header, and splitting it on `;` gives it."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw or any(byte in raw for byte in (b'"', b"\r", b"\n", b"\x00")) or len(raw) > _LONG_LINE:
        return False
    try:
        names = [name.strip() for name in raw.decode("utf-8").split(SEPARATOR)]
    except UnicodeDecodeError:
        return False
    return names == header


@dataclass
class _Block:
    """A block's rows before pyarrow has parsed its plain lines."""

    base: int  # physical line of the block's first byte
    plain: bytes | memoryview  # the plain lines, one after the other
    plain_lines: np.ndarray
    slow_lines: np.ndarray
    slow_rows: list[list[str]]


def _fast_batches(path: Path, header: list[str], block_bytes: int) -> Generator[Batch, None, int | None]:
    """The batches of the fast path; returns None at the end, or the line read_records resumes from.

    pyarrow parses a block's plain lines in a worker thread (it releases the GIL) while this thread
    splits the next block: at most two blocks are in hand."""
    parser = _BlockParser(header)
    blocks = _blocks(path, parser, block_bytes)
    in_flight: tuple[_Block, Future[pa.Table | None]] | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="arrowcsv") as pool:
            while True:
                block: _Block | None
                try:
                    block = next(blocks)
                except StopIteration as done:
                    block, resume_at = None, done.value
                parsing = pool.submit(parser.read_plain, block) if block is not None else None
                if in_flight is not None:  # the block before this one, parsed meanwhile
                    try:
                        batch = parser.batch(*in_flight)
                    except _Fallback:
                        return in_flight[0].base
                    if batch is not None:
                        yield batch
                if block is None or parsing is None:
                    return resume_at
                in_flight = block, parsing
    finally:
        blocks.close()


def _blocks(path: Path, parser: _BlockParser, block_bytes: int) -> Generator[_Block, None, int | None]:
    """The file's blocks, split; returns None at the end, or the line read_records resumes from."""
    open_record_limit = max(4 * block_bytes, _MIN_OPEN_RECORD)
    with path.open("rb") as stream:
        if not _plain_header(stream.readline(), header=parser.header):
            return 0
        base = 2
        carry = b""
        at_eof = False
        read_size = block_bytes
        while not at_eof:
            chunk = stream.read(read_size)
            # A block that ends before its first record or line does: read twice as much the next
            # time, so that a long record is parsed a few times, not once per block it spans.
            read_size *= 2
            if chunk:
                data = carry + chunk if carry else chunk
                end = data.rfind(b"\n") + 1
            elif carry:
                at_eof = True
                data = carry if carry.endswith(b"\n") else carry + b"\n"  # the last line may lack one
                end = len(data)
            else:
                break
            if end == 0:  # no whole line yet
                if len(data) > open_record_limit:
                    return base
                carry = data
                continue
            try:
                block, consumed, line_count = parser.split(data, end, base, at_eof)
            except _Fallback:
                return base
            if block is not None:
                yield block
            if line_count:
                read_size = block_bytes
            base += line_count
            carry = data[consumed:]
            if len(carry) > open_record_limit:
                return base
    return None


class _BlockParser:
    def __init__(self, header: list[str]) -> None:
        self.header = header
        self.width = len(header)
        names = [f"f{index}" for index in range(self.width)]
        self.read_options = pacsv.ReadOptions(
            column_names=names, autogenerate_column_names=False, block_size=_PYARROW_BLOCK, use_threads=False
        )
        self.parse_options = pacsv.ParseOptions(
            delimiter=SEPARATOR,
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=True,  # there are none: blank lines go to the csv module
        )
        self.convert_options = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,
        )

    def read_plain(self, block: _Block) -> pa.Table | None:
        """pyarrow's table of the block's plain lines (None if there are none)."""
        if not len(block.plain_lines):
            return None
        try:
            table = pacsv.read_csv(
                pa.BufferReader(block.plain),
                read_options=self.read_options,
                parse_options=self.parse_options,
                convert_options=self.convert_options,
            )
        except pa.ArrowException:
            raise _Fallback from None  # a wrong field count or bytes that are not UTF-8
        if table.num_rows != len(block.plain_lines):
            raise _Fallback
        return table.rename_columns(self.header)

    def batch(self, block: _Block, parsing: Future[pa.Table | None]) -> Batch | None:
        """The block's batch, once pyarrow is done (raises _Fallback if it failed)."""
        plain = parsing.result()
        lines: list[np.ndarray] = []
        tables: list[pa.Table] = []
        if plain is not None:
            lines.append(block.plain_lines)
            tables.append(plain)
        if block.slow_rows:
            lines.append(block.slow_lines)
            tables.append(_table(block.slow_rows, self.header))
        if not tables:
            return None
        if len(tables) == 1:
            return lines[0], tables[0]
        return np.concatenate(lines), pa.concat_tables(tables)

    def split(self, data: bytes, end: int, base: int, at_eof: bool) -> tuple[_Block | None, int, int]:
        """Split the whole lines of data[:end], whose first line is physical line `base`.

        The csv module parses the records starting on irregular lines; the rest, plain lines, are
        left for pyarrow. Returns the block (None if it has no line), the number of bytes and of lines
        split: all of them, unless a record the csv module parses runs past `end` (not at the end of
        the file), which is left for the next block."""
        array = np.frombuffer(data, dtype=np.uint8, count=end)
        newlines = np.flatnonzero(array == 10)
        line_count = len(newlines)
        bounds = np.empty(line_count + 1, dtype=np.int64)  # line i is data[bounds[i]:bounds[i + 1]]
        bounds[0] = 0
        bounds[1:] = newlines + 1
        irregular = self._irregular_lines(data, array, newlines, bounds)
        stop = line_count
        slow_rows: list[list[str]] = []
        if not len(irregular):
            plain_firsts, plain_stops = np.zeros(1, dtype=np.int64), np.full(1, line_count, dtype=np.int64)
            slow_lines = np.zeros(0, dtype=np.int64)
        elif (single := self._single_line_records(data, bounds, irregular)) is not None:
            slow_rows, kept = single
            slow_lines = base + irregular[kept]
            plain_firsts = np.concatenate(([0], irregular + 1))
            plain_stops = np.concatenate((irregular, [line_count]))
        else:
            plain_ranges, slow_taken, slow_rows, stop = self._walk(data, bounds, irregular.tolist(), at_eof)
            slow_lines = base + np.array(slow_taken, dtype=np.int64)
            plain_firsts = np.array([first for first, _ in plain_ranges], dtype=np.int64)
            plain_stops = np.array([last for _, last in plain_ranges], dtype=np.int64)
        if stop == 0:
            return None, 0, 0
        keep = plain_stops > plain_firsts
        plain_firsts, plain_stops = plain_firsts[keep], plain_stops[keep]

        counts = plain_stops - plain_firsts
        offsets = np.cumsum(counts) - counts
        plain_lines = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(
            base + plain_firsts - offsets, counts
        )
        view = memoryview(data)
        byte_firsts, byte_stops = bounds[plain_firsts].tolist(), bounds[plain_stops].tolist()
        plain: bytes | memoryview
        if len(byte_firsts) == 1:
            plain = view[byte_firsts[0] : byte_stops[0]]
        else:
            plain = b"".join([view[first:last] for first, last in zip(byte_firsts, byte_stops, strict=True)])
        block = _Block(base, plain, plain_lines, slow_lines, slow_rows)
        return block, int(bounds[stop]), stop

    def _irregular_lines(
        self, data: bytes, array: np.ndarray, newlines: np.ndarray, bounds: np.ndarray
    ) -> np.ndarray:
        """Indexes (sorted, in the block) of the lines that are not plain."""
        end = len(array)
        positions: list[np.ndarray] = []
        if data.find(b'"', 0, end) >= 0:
            positions.append(np.flatnonzero(array == ord('"')))
        if data.find(b"\x00", 0, end) >= 0:
            positions.append(np.flatnonzero(array == 0))
        if data.find(b"\r", 0, end) >= 0:
            # A "\r" just before the "\n" ends the line for both parsers; a line of "\r" alone is
            # blank to the csv module; any other "\r" is an error (or data, in quotes).
            returns = np.flatnonzero(array == 13)
            at_line_start = array[returns - 1] == 10  # at 0, array[-1] is the block's last "\n"
            positions.append(returns[(array[returns + 1] != 10) | at_line_start])
        if data.find(_BOM[:1], 0, end) >= 0:
            # pyarrow drops a BOM at the start of its input, the csv module keeps it in the field.
            leads = np.flatnonzero(array[: max(end - 2, 0)] == _BOM[0])
            positions.append(leads[(array[leads + 1] == _BOM[1]) & (array[leads + 2] == _BOM[2])])
        lines = [np.searchsorted(newlines, found) for found in positions if len(found)]
        lengths = np.diff(bounds) - 1
        # Blank lines carry no row; long lines may hold a field over the csv module's size limit.
        lines.append(np.flatnonzero((lengths == 0) | (lengths > min(csv.field_size_limit(), _LONG_LINE))))
        return np.unique(np.concatenate(lines))

    def _single_line_records(
        self, data: bytes, bounds: np.ndarray, irregular: np.ndarray
    ) -> tuple[list[list[str]], np.ndarray] | None:
        """The records of the irregular lines if each is a record of its own, else None.

        One csv reader parses these lines one after the other: it gives as many records as lines
        only if every record ends where its line ends (each takes one line or more, and all are
        taken). Returns the rows and the indexes, among `irregular`, of the lines that carry one
        (blank lines do not)."""
        view = memoryview(data)
        firsts, stops = bounds[irregular].tolist(), bounds[irregular + 1].tolist()
        joined = b"".join([view[first:last] for first, last in zip(firsts, stops, strict=True)])
        try:
            text = joined.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fallback from None  # read_records fails on any byte that is not UTF-8
        reader = strict_reader(io.StringIO(text, newline="\n"))
        try:
            records = list(reader)
        except csv.Error:
            return None  # maybe a record over several lines: the walk tells
        if len(records) != len(firsts):
            return None
        width = self.width
        if set(map(len, records)) == {width}:
            return records, np.arange(len(records))
        kept = []
        for index, fields in enumerate(records):
            if len(fields) == width:
                kept.append(index)
            elif fields:
                raise _Fallback  # read_records' error: wrong field count
        return [records[index] for index in kept], np.array(kept, dtype=np.int64)

    def _walk(
        self, data: bytes, bounds: np.ndarray, irregular: list[int], at_eof: bool
    ) -> tuple[list[tuple[int, int]], list[int], list[list[str]], int]:
        """Parse a record from each irregular line not taken by the record before, line by line.

        Returns the ranges [first, stop) of plain lines, the lines of the rows and the rows the csv
        module gave, and the index of the line where a record left open at the block's end starts
        (the block's line count if none)."""
        position = [0]
        starts: list[int] = bounds.tolist()
        line_count = len(starts) - 1

        def feed() -> Iterator[str]:
            while True:
                index = position[0]
                if index >= line_count:
                    if at_eof:
                        return
                    raise _NeedMore
                position[0] = index + 1
                yield data[starts[index] : starts[index + 1]].decode("utf-8")

        reader = strict_reader(feed())
        plain: list[tuple[int, int]] = []
        taken: list[int] = []
        rows: list[list[str]] = []
        width = self.width
        current = 0
        stop = line_count
        for first in irregular:
            if first < current:
                continue  # taken by the record before
            if first > current:
                plain.append((current, first))
            position[0] = first
            try:
                fields = next(reader)
            except _NeedMore:
                stop = current = first  # the lines before it are in `plain` already
                break
            except (csv.Error, UnicodeDecodeError, StopIteration):
                raise _Fallback from None
            current = position[0]
            if len(fields) == width:
                taken.append(first)
                rows.append(fields)
            elif fields:
                raise _Fallback  # read_records' error: wrong field count
        if current < stop:
            plain.append((current, stop))
        return plain, taken, rows, stop
