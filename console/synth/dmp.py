"""dmp/: the legacy DMP extract (dmp.csv, documents.csv, content files) and the faults planted in it."""

from __future__ import annotations

import base64
import csv
import hashlib
import uuid
from bisect import bisect
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from pathlib import Path
from random import Random
from types import TracebackType
from xml.sax.saxutils import escape

from console.synth.faults import (
    CHAIN_FAULTS,
    DMP_FILE,
    DOCUMENT_FAULTS,
    DOCUMENTS_FILE,
    WHOLE_DMP_FAULTS,
    FaultDispenser,
    FaultLog,
    NaturalAnomalies,
)
from console.synth.output import CsvSink
from console.synth.people import ADULT_AGE, ROLLOUT_START, Person, age_on
from mes_rollout.contracts import DMP_COLUMNS, DOCUMENT_COLUMNS
from mes_rollout.dmp_codes import TYPE_CODES_FILE

TYPE_CODES_PATH = TYPE_CODES_FILE

DMP_CUTOFF = date(2021, 7, 1)  # no DMP could be created from this day on
DMP_SHARE = 0.15  # about 10 million DMPs for 68 million people
PDF = "application/pdf"
XML = "text/xml"
PATIENT_DOCUMENT = "DOCPAT01"

# Legitimate DMPs are created well clear of the cut-off, and late ones well after it, so that
# no timestamp offset can move one to the other side.
_FIRST_DMP = date(2011, 1, 3)
_DMP_RELAUNCH = date(2018, 11, 6)  # most DMPs date from the Assurance Maladie's relaunch
_LAST_LEGITIMATE_DMP = DMP_CUTOFF - timedelta(days=2)
_FIRST_LATE_DMP = DMP_CUTOFF + timedelta(days=1)
_RECENT_DMP = 0.8
_DOCUMENT_HISTORY = timedelta(days=4 * 365)  # documents may predate their DMP: uploaded history
_CLEAR_OF_EXTRACT = timedelta(days=2)
_DAY_STARTS, _DAY_ENDS = 7 * 3600, 20 * 3600  # timestamps fall in working hours

_LATE_DMP = 0.003
_CLOSED_AFTER_DEATH = 0.7
_DELETED = 0.015
_ARCHIVED = 0.03
_DUPLICATE = 0.01
_CHAIN = 0.06

_TYPE_WEIGHTS = {
    "11488-4": 18,
    "11490-0": 8,
    "34112-3": 6,
    "15507-7": 5,
    "34874-8": 3,
    "11502-2": 18,
    "18748-4": 12,
    "34133-9": 3,
    "60591-5": 5,
    "11369-6": 4,
    "87273-9": 5,
    "57833-6": 10,
    PATIENT_DOCUMENT: 3,
}
_HOSPITAL_TYPES = frozenset({"11490-0", "34112-3", "15507-7", "34874-8", "34133-9"})
_OFTEN_STRUCTURED = frozenset({"11502-2", "11369-6", "87273-9", "60591-5"})  # CDA documents, XML
_UNKNOWN_TYPE_CODES = ("11506-3", "28570-0", "34117-2", "DOCPAT99", "XX-DOC")
_BAD_CONFIDENTIALITIES = ("N|R", "", "X", "R|V|MASQUE_PS")
_LOCAL_OFFSETS = {
    "971": "-04:00",
    "972": "-04:00",
    "973": "-03:00",
    "974": "+04:00",
    "975": "-03:00",
    "976": "+03:00",
}


@dataclass(frozen=True)
class TypeCode:
    code: str
    label: str
    class_code: str


def load_type_codes(path: Path = TYPE_CODES_PATH) -> tuple[TypeCode, ...]:
    with path.open(encoding="utf-8", newline="") as stream:
        return tuple(
            TypeCode(row["type_code"], row["label"], row["class_code"])
            for row in csv.DictReader(stream, delimiter=";")
        )


@cache
def _summer_time(year: int) -> tuple[date, date]:
    """Paris summer time: from the last Sunday of March to the last Sunday of October."""
    march_end, october_end = date(year, 3, 31), date(year, 10, 31)
    return (
        march_end - timedelta(days=(march_end.weekday() + 1) % 7),
        october_end - timedelta(days=(october_end.weekday() + 1) % 7),
    )


def local_offset(day: date, departement: str) -> str:
    """The UTC offset of a timestamp written where the person lives."""
    if departement in _LOCAL_OFFSETS:
        return _LOCAL_OFFSETS[departement]
    start, end = _summer_time(day.year)
    return "+02:00" if start <= day < end else "+01:00"


def sha1_hex(content: bytes) -> str:
    return hashlib.sha1(content, usedforsecurity=False).hexdigest()


@dataclass(eq=False, slots=True)
class Document:
    """One document version of documents.csv, with its content and the fault it carries if any."""

    entry_uuid: str
    unique_id: str
    type_code: str
    class_code: str
    confidentiality: str
    creation_time: str
    service_start_time: str
    author_role: str
    mime_type: str
    content: bytes
    size: str
    hash: str
    content_path: str
    title: str
    status: str = "Approved"
    replaces: str = ""
    in_chain: bool = False
    is_copy: bool = False
    writes_content: bool = True
    fault: str | None = None

    def row(self, dmp_id: str) -> tuple[str, ...]:
        return (
            self.entry_uuid,
            self.unique_id,
            dmp_id,
            self.type_code,
            self.class_code,
            self.confidentiality,
            self.creation_time,
            self.service_start_time,
            self.author_role,
            self.mime_type,
            self.size,
            self.hash,
            self.status,
            self.replaces,
            self.content_path,
            self.title,
        )


@dataclass(frozen=True)
class _Patient:
    """What building one DMP needs to know of its person."""

    person: Person
    dmp_id: str
    is_minor: bool
    earliest: date  # documents are written in [earliest, latest]
    latest: date


class DmpExtract:
    """Writes DMPs of people whose register row is clean: dmp.csv, documents.csv, content files.

    Faults and natural anomalies (deleted documents, duplicates, late DMPs) only go to living people,
    who will be loaded and get a space; a DMP held back as a whole carries no other anomaly.
    """

    def __init__(
        self, folder: Path, seed: int, reference_date: date, faults: FaultDispenser, log: FaultLog
    ) -> None:
        self._folder = folder
        self._dmps = CsvSink(folder / "dmp.csv", DMP_COLUMNS)
        self._documents = CsvSink(folder / "documents.csv", DOCUMENT_COLUMNS)
        self._rng = Random(f"{seed}/dmp")
        self._natural = NaturalAnomalies(Random(f"{seed}/dmp-natural"))
        self._faults = faults
        self._log = log
        self._reference_date = reference_date
        self._last_document_day = reference_date - _CLEAR_OF_EXTRACT
        self._last_late_dmp = reference_date - timedelta(days=3)
        self._type_codes = load_type_codes()
        self._type_cumulative = tuple(
            accumulate(_TYPE_WEIGHTS.get(code.code, 5) for code in self._type_codes)
        )
        self._class_codes = tuple(sorted({code.class_code for code in self._type_codes}))
        self._sequence = 0
        self.content_files = 0
        self.content_bytes = 0

    @property
    def dmps(self) -> int:
        return self._dmps.rows

    @property
    def documents(self) -> int:
        return self._documents.rows

    def force_missing(self) -> None:
        self._natural.force_missing()

    def consider(self, person: Person) -> None:
        """Give the person (whose register row is clean) a DMP, with the usual probability."""
        if self._rng.random() < DMP_SHARE:
            self._add(person)

    def close(self) -> None:
        self._dmps.close()
        self._documents.close()

    def __enter__(self) -> DmpExtract:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # One DMP ------------------------------------------------------------------------------------

    def _add(self, person: Person) -> None:
        rng = self._rng
        earliest = max(_FIRST_DMP, person.birth + timedelta(days=1))
        latest = _LAST_LEGITIMATE_DMP
        if person.death is not None:
            latest = min(latest, person.death - timedelta(days=1))
        if earliest > latest:
            return  # born after the cut-off, or died before DMPs existed
        alive = person.death is None
        whole_fault: str | None = None
        if alive:
            can_be_late = person.birth < _FIRST_LATE_DMP
            if can_be_late and self._natural.due("DMP_AFTER_CUTOFF", _LATE_DMP):
                whole_fault = "DMP_AFTER_CUTOFF"
            else:
                whole_fault = self._faults.take(WHOLE_DMP_FAULTS if can_be_late else ("IDENTITY_MISMATCH",))
        if whole_fault == "DMP_AFTER_CUTOFF":
            created = self._day_between(_FIRST_LATE_DMP, self._last_late_dmp)
        else:
            recent = max(earliest, _DMP_RELAUNCH)
            created = self._day_between(
                recent if recent <= latest and rng.random() < _RECENT_DMP else earliest, latest
            )
        dmp_id = self._uuid()
        patient = _Patient(
            person=person,
            dmp_id=dmp_id,
            is_minor=age_on(person.birth, ROLLOUT_START) < ADULT_AGE,
            earliest=max(person.birth + timedelta(days=1), created - _DOCUMENT_HISTORY),
            latest=min(self._last_document_day, person.death or self._last_document_day),
        )
        dmp_row = [
            dmp_id,
            person.nir,
            person.birth.isoformat(),
            person.sex,
            self._timestamp(created, person.departement),
            "closed" if not alive and rng.random() < _CLOSED_AFTER_DEATH else "active",
        ]
        if whole_fault == "IDENTITY_MISMATCH":
            self._mistake_identity(person, dmp_row)
        documents = self._documents_of(patient, anomalies=alive and whole_fault is None)
        if whole_fault is not None:
            for document in documents:
                document.fault = whole_fault
        line = self._dmps.write(dmp_row)
        if whole_fault is not None:
            self._log.add(DMP_FILE, line, dmp_id, whole_fault)
        self._write_documents(dmp_id, documents)

    def _mistake_identity(self, person: Person, dmp_row: list[str]) -> None:
        """The DMP knows the patient with another birth date or sex than the register."""
        rng = self._rng
        birth = person.birth
        if rng.random() < 0.4:
            dmp_row[3] = "F" if person.sex == "M" else "M"
        elif birth.day <= 12 and birth.day != birth.month:
            dmp_row[2] = date(birth.year, birth.day, birth.month).isoformat()  # day and month swapped
        else:
            dmp_row[2] = (birth + timedelta(days=rng.choice((-1, 1)) * rng.randint(1, 30))).isoformat()

    def _documents_of(self, patient: _Patient, anomalies: bool) -> list[Document]:
        """5 to 20 document versions (8 on average), ordered as an extract lists them."""
        rng = self._rng
        count = min(20, 5 + int(rng.expovariate(1 / 3)))
        documents: list[Document] = []
        copies: list[tuple[Document, Document]] = []
        while len(documents) + len(copies) < count:
            remaining = count - len(documents) - len(copies)
            added = self._slot(patient, remaining, anomalies, documents, copies)
            for _ in range(added):
                self._faults.tick()
        rng.shuffle(documents)
        # A duplicate comes after the document it copies, so that the first one read is kept.
        for original, copy in copies:
            position = next(index for index, document in enumerate(documents) if document is original)
            documents.insert(rng.randint(position + 1, len(documents)), copy)
        return documents

    def _slot(
        self,
        patient: _Patient,
        remaining: int,
        anomalies: bool,
        documents: list[Document],
        copies: list[tuple[Document, Document]],
    ) -> int:
        """Add the next document, or chain of versions, or duplicate; returns how many rows it adds."""
        rng = self._rng
        if anomalies:
            chain_fault = self._faults.take(CHAIN_FAULTS) if remaining >= 2 else None
            if chain_fault is not None:
                versions = self._chain(patient, min(remaining, rng.choice((2, 3))), chain_fault)
                documents.extend(versions)
                return len(versions)
            document_fault = self._faults.take(DOCUMENT_FAULTS)
            if document_fault is not None:
                documents.append(self._faulty_single(patient, document_fault))
                return 1
            copied = {id(original) for original, _ in copies}
            originals = [
                document
                for document in documents
                if document.fault is None and not document.in_chain and id(document) not in copied
            ]
            if originals and self._natural.due("DUPLICATE", _DUPLICATE):
                original = rng.choice(originals)
                copies.append((original, self._copy(original)))
                return 1
            if self._natural.due("DELETED", _DELETED):
                deleted = self._single(patient)
                deleted.status = "Deleted"
                deleted.fault = "DELETED"
                documents.append(deleted)
                return 1
        if remaining >= 2 and rng.random() < _CHAIN:
            versions = self._chain(patient, min(remaining, rng.choice((2, 3))), None)
            documents.extend(versions)
            return len(versions)
        single = self._single(patient)
        if rng.random() < _ARCHIVED:
            single.status = "Archived"
        documents.append(single)
        return 1

    def _write_documents(self, dmp_id: str, documents: list[Document]) -> None:
        if any(document.writes_content and not document.is_copy for document in documents):
            (self._folder / "content" / dmp_id[:2] / dmp_id).mkdir(parents=True, exist_ok=True)
        for document in documents:
            line = self._documents.write(document.row(dmp_id))
            if document.fault is not None:
                self._log.add(DOCUMENTS_FILE, line, document.entry_uuid, document.fault)
            if document.writes_content and not document.is_copy:
                (self._folder / document.content_path).write_bytes(document.content)
                self.content_files += 1
                self.content_bytes += len(document.content)

    # Documents ----------------------------------------------------------------------------------

    def _single(self, patient: _Patient, day: date | None = None) -> Document:
        return self._document(
            patient, self._type_code(), day or self._day_between(patient.earliest, patient.latest)
        )

    def _faulty_single(self, patient: _Patient, fault: str) -> Document:
        """A stand-alone document that breaks exactly the rule `fault` names."""
        rng = self._rng
        day: date | None = None
        if fault == "DATE_IN_FUTURE":
            day = self._reference_date + timedelta(days=rng.randint(730, 3000))
        elif fault == "DATE_BEFORE_BIRTH":
            day = patient.person.birth - timedelta(days=rng.randint(400, 4000))
        document = self._single(patient, day)
        document.fault = fault
        if fault == "UNKNOWN_TYPE_CODE":
            document.type_code = rng.choice(_UNKNOWN_TYPE_CODES)
        elif fault == "CLASS_TYPE_MISMATCH":
            document.class_code = rng.choice(
                [code for code in self._class_codes if code != document.class_code]
            )
        elif fault == "BAD_CONFIDENTIALITY":
            document.confidentiality = rng.choice(_BAD_CONFIDENTIALITIES)
        elif fault == "HASH_MISMATCH":
            content = document.content
            document.hash = sha1_hex(content[:-1] + bytes([content[-1] ^ 0x01]))
        elif fault == "SIZE_MISMATCH":
            document.size = str(len(document.content) + rng.choice((-1, 1)) * rng.randint(1, 64))
        elif fault == "CONTENT_MISSING":
            document.writes_content = False
        return document

    def _chain(self, patient: _Patient, length: int, fault: str | None) -> list[Document]:
        """Versions of one document, each replacing the previous; a fault breaks the chain."""
        type_code = self._type_code()
        days = sorted(self._day_between(patient.earliest, patient.latest) for _ in range(length))
        versions = [
            self._document(patient, type_code, day, version) for version, day in enumerate(days, start=1)
        ]
        for older, newer in zip(versions, versions[1:], strict=False):
            newer.replaces = older.entry_uuid
            older.status = "Deprecated"
        if fault == "CHAIN_MISSING_LINK":
            versions[0].replaces = self._uuid()  # a version the extract does not carry
        elif fault == "CHAIN_CYCLE":
            versions[0].replaces = versions[-1].entry_uuid
        for version in versions:
            version.in_chain = True
            version.fault = fault
        return versions

    def _copy(self, original: Document) -> Document:
        """The same document (same unique_id, same content) listed again under a new entry_uuid."""
        copy = Document(
            entry_uuid=self._uuid(),
            unique_id=original.unique_id,
            type_code=original.type_code,
            class_code=original.class_code,
            confidentiality=original.confidentiality,
            creation_time=original.creation_time,
            service_start_time=original.service_start_time,
            author_role=original.author_role,
            mime_type=original.mime_type,
            content=original.content,
            size=original.size,
            hash=original.hash,
            content_path=original.content_path,
            title=original.title,
            status=original.status,
        )
        copy.is_copy = True
        copy.fault = "DUPLICATE"
        return copy

    def _document(self, patient: _Patient, type_code: TypeCode, day: date, version: int = 1) -> Document:
        rng = self._rng
        person = patient.person
        self._sequence += 1
        entry_uuid = self._uuid()
        unique_id = f"1.2.250.1.213.1.1.9.{self._sequence}"
        service_day = day - timedelta(days=rng.randint(0, 60))
        if day > person.birth >= service_day:
            service_day = day  # care starts after birth
        author_role = self._author_role(type_code.code)
        title = f"{type_code.label} du {service_day:%d/%m/%Y}"
        if version > 1:
            title += f" (version {version})"
        mime_type = XML if type_code.code in _OFTEN_STRUCTURED and rng.random() < 0.4 else PDF
        content = self._content(mime_type, type_code.code, unique_id, title)
        extension = "xml" if mime_type == XML else "pdf"
        on_server = author_role == "SYSTEME"  # written by a server in UTC
        creation_second = self._second_of_day()
        # Care starts before the document about it is written, on the same day too.
        service_second = self._second_of_day(creation_second if service_day == day else None)
        return Document(
            entry_uuid=entry_uuid,
            unique_id=unique_id,
            type_code=type_code.code,
            class_code=type_code.class_code,
            confidentiality=self._confidentiality(type_code.code, patient.is_minor),
            creation_time=self._timestamp(day, person.departement, creation_second, utc=on_server),
            service_start_time=self._timestamp(
                service_day, person.departement, service_second, utc=on_server
            ),
            author_role=author_role,
            mime_type=mime_type,
            content=content,
            size=str(len(content)),
            hash=sha1_hex(content),
            content_path=f"content/{patient.dmp_id[:2]}/{patient.dmp_id}/{entry_uuid}.{extension}",
            title=title,
        )

    def _type_code(self) -> TypeCode:
        draw = self._rng.random() * self._type_cumulative[-1]
        return self._type_codes[bisect(self._type_cumulative, draw)]

    def _author_role(self, type_code: str) -> str:
        draw = self._rng.random()
        if type_code == PATIENT_DOCUMENT:
            return "PATIENT"
        if type_code in _HOSPITAL_TYPES:
            return "ETABLISSEMENT" if draw < 0.6 else "PS"
        if type_code == "11369-6":  # the vaccination history is compiled by the information system
            return "SYSTEME" if draw < 0.5 else "PS"
        return "PS" if draw < 0.95 else "ETABLISSEMENT"

    def _confidentiality(self, type_code: str, is_minor: bool) -> str:
        rng = self._rng
        draw = rng.random()
        codes = ["N" if draw < 0.9 else "R" if draw < 0.98 else "V"]
        if rng.random() < 0.03:
            codes.append("MASQUE_PS")
        if type_code != PATIENT_DOCUMENT and rng.random() < 0.015:
            codes.append("INVISIBLE_PATIENT")
        if rng.random() < (0.04 if is_minor else 0.005):
            codes.append("INVISIBLE_REPRESENTANTS_LEGAUX")
        return "|".join(codes)

    def _content(self, mime_type: str, type_code: str, unique_id: str, title: str) -> bytes:
        """A small fake PDF or CDA document: a few hundred bytes to a few KB, from the seed."""
        rng = self._rng
        if mime_type == PDF:
            payload = rng.randbytes(rng.randint(200, 3000))
            return (
                b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
                b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
                b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
                + f"3 0 obj\n<< /Length {len(payload)} /Filter /FlateDecode >>\nstream\n".encode()
                + payload
                + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
            )
        body = base64.b64encode(rng.randbytes(rng.randint(150, 2000))).decode()
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ClinicalDocument xmlns="urn:hl7-org:v3">\n'
            f'  <id root="{unique_id}"/>\n'
            f'  <code code="{type_code}" codeSystem="2.16.840.1.113883.6.1"/>\n'
            f"  <title>{escape(title)}</title>\n"
            f'  <component><nonXMLBody><text representation="B64">{body}</text></nonXMLBody></component>\n'
            "</ClinicalDocument>\n"
        ).encode()

    # Identifiers and dates ----------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _day_between(self, first: date, last: date) -> date:
        return first + timedelta(days=self._rng.randint(0, max(0, (last - first).days)))

    def _second_of_day(self, latest: int | None = None) -> int:
        """A time of day within working hours (in seconds), no later than `latest`."""
        return self._rng.randint(_DAY_STARTS, _DAY_ENDS if latest is None else latest)

    def _timestamp(self, day: date, departement: str, seconds: int | None = None, utc: bool = False) -> str:
        if seconds is None:
            seconds = self._second_of_day()
        offset = "+00:00" if utc else local_offset(day, departement)
        return f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{offset}"
