"""Every state, status and reason code of the pipeline, named once."""

from __future__ import annotations

from enum import StrEnum


class FileKind(StrEnum):
    REGISTER = "register"
    DECISIONS = "decisions"
    FEEDBACK = "feedback"
    DMP = "dmp"
    DMP_DOCUMENTS = "dmp_documents"


class RegisterReason(StrEnum):
    """Why a register row was quarantined (the person is not loaded)."""

    NIR_LENGTH = "NIR_LENGTH"
    NIR_SHAPE = "NIR_SHAPE"
    NIR_SEX = "NIR_SEX"
    NIR_MONTH = "NIR_MONTH"
    NIR_PLACE = "NIR_PLACE"
    NIR_ORDER = "NIR_ORDER"
    NIR_KEY = "NIR_KEY"
    NIR_MISMATCH = "NIR_MISMATCH"  # the NIR's sex or birth year disagrees with sexe / date_naissance
    MISSING_FIELD = "MISSING_FIELD"
    BAD_DATE = "BAD_DATE"  # not a real calendar date
    BIRTH_IN_FUTURE = "BIRTH_IN_FUTURE"
    DEATH_BEFORE_BIRTH = "DEATH_BEFORE_BIRTH"
    BAD_SEX = "BAD_SEX"
    BAD_DEPARTEMENT = "BAD_DEPARTEMENT"
    BAD_BIRTH_PLACE = "BAD_BIRTH_PLACE"  # lieu_naissance is not a 5-character INSEE code
    DUPLICATE_IN_FILE = "DUPLICATE_IN_FILE"  # the same NIR earlier in the same file: the first wins
    BAD_REPRESENTATIVE_NIR = "BAD_REPRESENTATIVE_NIR"
    SELF_REPRESENTATIVE = "SELF_REPRESENTATIVE"
    UNKNOWN_REPRESENTATIVE = "UNKNOWN_REPRESENTATIVE"
    DECEASED_REPRESENTATIVE = "DECEASED_REPRESENTATIVE"


class RegisterWarning(StrEnum):
    """A problem that keeps the person but drops or flags a field."""

    EMAIL_INVALID = "EMAIL_INVALID"  # the email is dropped
    ADDRESS_INVALID = "ADDRESS_INVALID"  # the address is kept, flagged unusable for letters


class HoldBackReason(StrEnum):
    """Why a DMP document was held back from migration (quarantined, not copied)."""

    DMP_AFTER_CUTOFF = "DMP_AFTER_CUTOFF"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
    UNKNOWN_TYPE_CODE = "UNKNOWN_TYPE_CODE"
    CLASS_TYPE_MISMATCH = "CLASS_TYPE_MISMATCH"
    BAD_CONFIDENTIALITY = "BAD_CONFIDENTIALITY"
    DATE_IN_FUTURE = "DATE_IN_FUTURE"
    DATE_BEFORE_BIRTH = "DATE_BEFORE_BIRTH"
    CHAIN_CYCLE = "CHAIN_CYCLE"
    CHAIN_MISSING_LINK = "CHAIN_MISSING_LINK"
    CONTENT_MISSING = "CONTENT_MISSING"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    HASH_MISMATCH = "HASH_MISMATCH"


class SkipReason(StrEnum):
    DELETED = "DELETED"
    DUPLICATE = "DUPLICATE"


class DocumentOutcome(StrEnum):
    MIGRATED = "migrated"
    HELD_BACK = "held_back"
    SKIPPED = "skipped"
