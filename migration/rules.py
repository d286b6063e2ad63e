"""The migration rules of DOMAIN.md as pure functions: what becomes of each document of a person's DMPs.

Precedence, first match wins (a document gets one outcome and one reason):

1. The whole DMP: created on or after 2021-07-01 (its own offset, read as a Europe/Paris date) ->
   every document held back DMP_AFTER_CUTOFF; NIR, birth date or sex not as in the register ->
   every document held back IDENTITY_MISMATCH.
2. status Deleted -> skipped DELETED.
3. The same unique_id as a document kept in another replacement chain of the same space (this run
   or an earlier one) -> skipped DUPLICATE. The first in the extract is kept.
4. The document's own metadata: UNKNOWN_TYPE_CODE, CLASS_TYPE_MISMATCH, BAD_CONFIDENTIALITY,
   DATE_IN_FUTURE, DATE_BEFORE_BIRTH.
5. Its replacement chain: CHAIN_CYCLE, CHAIN_MISSING_LINK (a `replaces` naming an entry not in
   the DMP), CHAIN_FORK (two versions replace the same one). Every version is held back.
6. Its content (checked while copying, `migration.content`): CONTENT_TOO_LARGE (declared or on
   disk above MES_MAX_DOCUMENT_BYTES), CONTENT_MISSING (also an empty or absolute path, or one
   climbing out of the extract with ..), CONTENT_LINK (the file or a folder on its path is a
   symbolic link), CONTENT_NOT_REGULAR (a FIFO, device, socket or folder), SIZE_MISMATCH,
   HASH_MISMATCH.
7. A chain is carried whole: when any version is held back by 4 or 6, the others are held back
   CHAIN_VERSION_HELD_BACK.

In a chain, deleted versions are skipped and the rest is carried: the newest version that is not
deleted is `current`, the older ones `superseded`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

from mes_rollout.constants import DocumentOutcome, DocumentStatus, HoldBackReason, SkipReason, VersionRole
from mes_rollout.dmp_codes import CONFIDENTIALITY_FLAGS, CONFIDENTIALITY_LEVELS, type_code_classes

PARIS = ZoneInfo("Europe/Paris")
DMP_CUTOFF = dt.date(2021, 7, 1)  # no DMP could be created from this day on
# Documents about pregnancy care exist before a person is born: a date up to this long before the
# birth date is plausible, earlier is not.
PRENATAL_TOLERANCE_YEARS = 1



@dataclass(frozen=True)
class Confidentiality:
    """A valid confidentiality value: exactly one level (N, R, V) and any of the three flags, once each."""

    level: str
    flags: frozenset[str]

    @classmethod
    def parse(cls, raw: str) -> Confidentiality:
        parts = raw.split("|")
        if len(set(parts)) != len(parts):
            raise ValueError("a code appears twice")
        levels = [part for part in parts if part in CONFIDENTIALITY_LEVELS]
        unknown = [part for part in parts if part not in CONFIDENTIALITY_LEVELS | CONFIDENTIALITY_FLAGS]
        if unknown:
            raise ValueError("unknown code")
        if len(levels) != 1:
            raise ValueError("exactly one of N, R, V is expected")
        return cls(levels[0], frozenset(parts) - CONFIDENTIALITY_LEVELS)


@lru_cache(maxsize=1024)
def is_valid_confidentiality(raw: str) -> bool:
    try:
        Confidentiality.parse(raw)
    except ValueError:
        return False
    return True


def paris_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(PARIS).date()


@lru_cache(maxsize=4096)
def earliest_plausible_date(birth: dt.date) -> dt.date:
    year = birth.year - PRENATAL_TOLERANCE_YEARS
    day = min(birth.day, 28) if birth.month == 2 else birth.day
    return dt.date(year, birth.month, day)


@dataclass(frozen=True, slots=True)
class Person:
    nir: str
    date_naissance: dt.date
    sexe: str


@dataclass(frozen=True, slots=True)
class SourceDmp:
    dmp_id: str
    nir: str
    date_naissance: dt.date | None
    sexe: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SourceDocument:
    entry_uuid: str
    unique_id: str
    dmp_id: str
    type_code: str
    class_code: str
    confidentiality: str
    creation_time: dt.datetime | None
    service_start_time: dt.datetime | None
    status: str
    replaces: str | None
    size: int
    hash: str
    content_path: str
    extract_dir: str
    line_no: int


@dataclass(slots=True)
class Decision:
    """What becomes of one source document. Documents to migrate get their store_key once copied."""

    entry_uuid: str
    dmp_id: str
    outcome: DocumentOutcome
    reason: str | None = None
    version_role: VersionRole | None = None
    chain_head: str | None = None
    store_key: str | None = None
    chain_key: str = ""  # which replacement chain it belongs to: dmp_id#n (not stored)

    def hold_back(self, reason: str) -> None:
        self.outcome, self.reason = DocumentOutcome.HELD_BACK, reason
        self.version_role = self.chain_head = None


def dmp_level_reason(dmp: SourceDmp, person: Person) -> HoldBackReason | None:
    """Why a whole DMP is held back, or None."""
    if paris_date(dmp.created_at) >= DMP_CUTOFF:
        return HoldBackReason.DMP_AFTER_CUTOFF
    if dmp.nir != person.nir or dmp.date_naissance != person.date_naissance or dmp.sexe != person.sexe:
        return HoldBackReason.IDENTITY_MISMATCH
    return None


def metadata_reason(document: SourceDocument, birth: dt.date, as_of: dt.date) -> HoldBackReason | None:
    """Why a document's own metadata holds it back (type, class, confidentiality, dates), or None."""
    expected_class = type_code_classes().get(document.type_code)
    if expected_class is None:
        return HoldBackReason.UNKNOWN_TYPE_CODE
    if document.class_code != expected_class:
        return HoldBackReason.CLASS_TYPE_MISMATCH
    if not is_valid_confidentiality(document.confidentiality):
        return HoldBackReason.BAD_CONFIDENTIALITY
    dates = [paris_date(moment) for moment in (document.creation_time, document.service_start_time) if moment]
    if any(day > as_of for day in dates):
        return HoldBackReason.DATE_IN_FUTURE
    if any(day < earliest_plausible_date(birth) for day in dates):
        return HoldBackReason.DATE_BEFORE_BIRTH
    return None


@dataclass
class Chain:
    """The versions of one document linked by `replaces`, oldest first when well formed."""

    members: list[SourceDocument]
    fault: HoldBackReason | None = None
    ordered: list[SourceDocument] = field(default_factory=list)


def build_chains(documents: Sequence[SourceDocument]) -> list[Chain]:
    """Group a DMP's documents (deleted ones included: they hold links) into replacement chains."""
    by_uuid = {document.entry_uuid: document for document in documents}
    parent = {uuid: uuid for uuid in by_uuid}

    def root(uuid: str) -> str:
        while parent[uuid] != uuid:
            parent[uuid] = parent[parent[uuid]]
            uuid = parent[uuid]
        return uuid

    for document in documents:
        if document.replaces in by_uuid:
            parent[root(document.entry_uuid)] = root(document.replaces)
    groups: dict[str, list[SourceDocument]] = defaultdict(list)
    for document in documents:
        groups[root(document.entry_uuid)].append(document)
    return [_shape(members, by_uuid) for members in groups.values()]


def _shape(members: list[SourceDocument], by_uuid: dict[str, SourceDocument]) -> Chain:
    chain = Chain(sorted(members, key=lambda document: document.line_no))
    oldest = [member for member in members if not member.replaces or member.replaces not in by_uuid]
    # Each version replaces at most one other: a linked group without an oldest version is a cycle.
    if not oldest:
        chain.fault = HoldBackReason.CHAIN_CYCLE
        return chain
    if any(member.replaces and member.replaces not in by_uuid for member in members):
        chain.fault = HoldBackReason.CHAIN_MISSING_LINK
        return chain
    replaced_by: dict[str, list[SourceDocument]] = defaultdict(list)
    for member in members:
        if member.replaces:
            replaced_by[member.replaces].append(member)
    if any(len(successors) > 1 for successors in replaced_by.values()):
        chain.fault = HoldBackReason.CHAIN_FORK
        return chain
    version = oldest[0]
    while True:
        chain.ordered.append(version)
        successors = replaced_by.get(version.entry_uuid)
        if not successors:
            return chain
        version = successors[0]


def classify_space(
    person: Person,
    dmps: Iterable[tuple[SourceDmp, Sequence[SourceDocument]]],
    as_of: dt.date,
    already_migrated: frozenset[str] = frozenset(),
) -> list[tuple[Decision, SourceDocument]]:
    """Decide every document of one person's DMPs, content aside.

    Documents returned with outcome `migrated` still need their content copied and verified
    (`finish_chains` then applies the whole-chain rule); `already_migrated` holds the unique_ids
    this person's space received in earlier runs.
    """
    decided: list[tuple[Decision, SourceDocument]] = []
    kept_unique_ids: dict[str, int] = {unique_id: -1 for unique_id in already_migrated}
    chain_no = 0
    for dmp, documents in dmps:
        whole = dmp_level_reason(dmp, person)
        if whole is not None:
            decided += [(Decision(d.entry_uuid, d.dmp_id, DocumentOutcome.HELD_BACK, whole), d) for d in documents]
            continue
        for chain in sorted(build_chains(documents), key=lambda chain: chain.members[0].line_no):
            chain_no += 1
            decided += _decide_chain(chain, chain_no, person, as_of, kept_unique_ids)
    return decided


def _decide_chain(
    chain: Chain, chain_no: int, person: Person, as_of: dt.date, kept_unique_ids: dict[str, int]
) -> list[tuple[Decision, SourceDocument]]:
    decisions: list[tuple[Decision, SourceDocument]] = []
    ordered = [document.entry_uuid for document in chain.ordered if document.status != DocumentStatus.DELETED]
    head = ordered[-1] if ordered else None
    version_held_back = False
    for document in chain.members:
        decision = Decision(
            document.entry_uuid, document.dmp_id, DocumentOutcome.MIGRATED, chain_key=f"{document.dmp_id}#{chain_no}"
        )
        decisions.append((decision, document))
        if document.status == DocumentStatus.DELETED:
            decision.outcome, decision.reason = DocumentOutcome.SKIPPED, SkipReason.DELETED
            continue
        owner = kept_unique_ids.setdefault(document.unique_id, chain_no)
        if owner != chain_no:
            decision.outcome, decision.reason = DocumentOutcome.SKIPPED, SkipReason.DUPLICATE
            continue
        reason = metadata_reason(document, person.date_naissance, as_of)
        if reason is not None:
            decision.hold_back(reason)
            version_held_back = True
        elif chain.fault is not None:
            decision.hold_back(chain.fault)
        else:
            decision.chain_head = head
            decision.version_role = VersionRole.CURRENT if document.entry_uuid == head else VersionRole.SUPERSEDED
    if version_held_back:
        finish_chains(decisions)
    return decisions


def finish_chains(decided: Sequence[tuple[Decision, SourceDocument]]) -> None:
    """A chain is carried whole: any version held back holds back the versions still to migrate."""
    held_chains = {
        decision.chain_key
        for decision, _ in decided
        if decision.outcome == DocumentOutcome.HELD_BACK
        and decision.chain_key
        and decision.reason != HoldBackReason.CHAIN_VERSION_HELD_BACK
    }
    for decision, _ in decided:
        if decision.outcome == DocumentOutcome.MIGRATED and decision.chain_key in held_chains:
            decision.hold_back(HoldBackReason.CHAIN_VERSION_HELD_BACK)
