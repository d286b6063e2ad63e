"""Laying letters out on A4 pages of one print file (reportlab), the address in the envelope window.

The envelope is a DL window envelope (220 x 110 mm) holding the A4 sheet folded in three. Its
window, as La Poste's standard DL window envelope places it, is 100 x 45 mm, 20 mm from the
RIGHT edge: on the sheet that is x 90-190 mm from the left, 45-90 mm from the top (WINDOW_MM).
The address is set in Courier 10 pt (38 characters are 80 mm wide, whatever the letters) at 5 mm
inside the window; above it, inside the window too, a small service line carries the letter's
reference (K7QX-M4RT-9, enrolment/references.py), so that a letter returned unopened (NPAI) can be
traced to its notification. The sender's return address (Settings.return_address, AFNOR lines)
stands at the top left, above the window's level, where La Poste looks for it to return a letter
it could not deliver.

The file is deterministic: reportlab's invariant mode fixes the creation date and the document
id, so the same letters give the same bytes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen.canvas import Canvas

from mes_rollout.postal_address import MAX_LINE_LENGTH, MAX_LINES

PAGE_WIDTH, PAGE_HEIGHT = A4
# (left, top, width, height) in mm from the sheet's left and top edges.
WINDOW_MM = (90.0, 45.0, 100.0, 45.0)
_ADDRESS_LEFT = (WINDOW_MM[0] + 5) * mm
_SERVICE_LINE_TOP = (WINDOW_MM[1] + 5) * mm
_ADDRESS_TOP = (WINDOW_MM[1] + 11) * mm
_ADDRESS_LEADING = 4.2 * mm
_RETURN_ADDRESS_TOP = 20 * mm  # 6 lines end at 40 mm: above the window (45 mm), left of it
_RETURN_ADDRESS_LEADING = 4 * mm
_MARGIN = 20 * mm
_BODY_WIDTH = PAGE_WIDTH - 2 * _MARGIN
_BODY_TOP_FIRST = 104 * mm
_BODY_TOP_NEXT = 25 * mm
_BODY_BOTTOM = 22 * mm
_CODE_LEFT = 125 * mm
_STYLES = {  # kind: (font, size, leading, space before)
    "heading": ("Helvetica-Bold", 11.5, 15.0, 6.0),
    "text": ("Helvetica", 10.5, 13.5, 4.0),
    "item": ("Helvetica", 10.5, 15.0, 0.0),
}


@dataclass(frozen=True)
class Letter:
    reference: str  # as printed: K7QX-M4RT-9
    address_lines: tuple[str, ...]
    date_line: str
    paragraphs: tuple[str, ...]  # '# ' heading, '- name : code' a person's code, else text


def pdf_safe(text: str) -> str:
    """Text the standard PDF fonts can show (Windows-1252): other letters lose their accents,
    what is left becomes '?'."""
    try:
        text.encode("cp1252")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for char in text:
        try:
            char.encode("cp1252")
            out.append(char)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(ord(c) < 128 for c in base) else "?")
    return "".join(out)


@lru_cache(maxsize=4096)
def _wrapped(text: str, font: str, size: float, width: float) -> tuple[str, ...]:
    # The fixed paragraphs come back letter after letter: wrap each once.
    return tuple(simpleSplit(text, font, size, width))


def _layout(paragraphs: tuple[str, ...]) -> list[list[tuple[str, str, float, str | None]]]:
    """Pages of (kind, text, y from the top, code) lines."""
    pages: list[list[tuple[str, str, float, str | None]]] = [[]]
    y = _BODY_TOP_FIRST
    for paragraph in paragraphs:
        code = None
        if paragraph.startswith("# "):
            kind, content = "heading", paragraph[2:]
        elif paragraph.startswith("- "):
            kind, content = "item", paragraph[2:]
            name, _, code = content.rpartition(" : ")
            content = name or content
        else:
            kind, content = "text", paragraph
        font, size, leading, before = _STYLES[kind]
        width = (_CODE_LEFT - _MARGIN - 8 * mm) if kind == "item" else _BODY_WIDTH
        lines = _wrapped(pdf_safe(content), font, size, width) or ("",)
        if kind == "item":
            lines = lines[:1]  # a name on one line, its code beside it
        y += before
        for index, line in enumerate(lines):
            if y + leading > PAGE_HEIGHT - _BODY_BOTTOM:
                pages.append([])
                y = _BODY_TOP_NEXT
            y += leading
            pages[-1].append((kind, line, y, code if index == 0 else None))
    return pages


class PrintFile:
    """One PDF of many letters; `add` returns where each letter starts and how many pages it has.
    `return_address`: the sender's AFNOR lines (Settings.return_address), at most 6 of 38 characters."""

    def __init__(self, path: Path, title: str, return_address: Sequence[str]) -> None:
        if not 1 <= len(return_address) <= MAX_LINES or any(len(line) > MAX_LINE_LENGTH for line in return_address):
            raise ValueError(f"a return address is 1 to {MAX_LINES} lines of at most {MAX_LINE_LENGTH} characters")
        self._return_address = tuple(pdf_safe(line) for line in return_address)
        self._canvas = Canvas(str(path), pagesize=A4, invariant=1, pageCompression=1)
        self._canvas.setTitle(title)
        self._canvas.setAuthor("L'Assurance Maladie")
        self._canvas.setCreator("mes-rollout")
        self._canvas.setSubject("Mon espace santé")
        self.pages = 0

    def add(self, letter: Letter) -> tuple[int, int]:
        pages = _layout(letter.paragraphs)
        first = self.pages + 1
        for number, lines in enumerate(pages, start=1):
            self._page(letter, lines, number, len(pages))
        self.pages += len(pages)
        return first, len(pages)

    def _page(self, letter: Letter, lines: list[tuple[str, str, float, str | None]], number: int, total: int) -> None:
        c = self._canvas
        top = PAGE_HEIGHT
        if number == 1:
            for index, line in enumerate(self._return_address):
                c.setFont("Helvetica-Bold" if index == 0 else "Helvetica", 9)
                c.drawString(_MARGIN, top - _RETURN_ADDRESS_TOP - index * _RETURN_ADDRESS_LEADING, line)
            c.setFont("Helvetica", 7)
            c.drawString(_ADDRESS_LEFT, top - _SERVICE_LINE_TOP, f"Réf. {letter.reference}")
            c.setFont("Courier", 10)
            for index, line in enumerate(letter.address_lines):
                c.drawString(_ADDRESS_LEFT, top - _ADDRESS_TOP - index * _ADDRESS_LEADING, line)
            c.setFont("Helvetica", 10)
            c.drawString(_MARGIN, top - 97 * mm, pdf_safe(letter.date_line))
        else:
            c.setFont("Helvetica", 8)
            c.drawString(_MARGIN, top - 15 * mm, "Mon espace santé (suite)")
        for kind, text, y, code in lines:
            font, size, _, _ = _STYLES[kind]
            c.setFont(font, size)
            c.drawString(_MARGIN + (5 * mm if kind == "item" else 0), top - y, text)
            if code:
                c.setFont("Courier-Bold", 11)
                c.drawString(_CODE_LEFT, top - y, code)
        c.setFont("Helvetica", 7)
        c.drawString(_MARGIN, 12 * mm, f"Référence à rappeler : {letter.reference} - page {number}/{total}")
        c.showPage()

    def close(self) -> None:
        self._canvas.save()
