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
    # Added by the migration (the generator does not plant these): a chain must be carried whole.
    CHAIN_FORK = "CHAIN_FORK"  # two versions replace the same one: no single current version
    CHAIN_VERSION_HELD_BACK = "CHAIN_VERSION_HELD_BACK"  # another version of its chain was held back
    # Content that is not a plain file inside the extract is never read (hostile extracts).
    CONTENT_OUTSIDE_EXTRACT = "CONTENT_OUTSIDE_EXTRACT"  # an absolute path, or one climbing out with ..
    CONTENT_LINK = "CONTENT_LINK"  # the path or one of its folders is a symbolic link
    CONTENT_NOT_REGULAR = "CONTENT_NOT_REGULAR"  # a FIFO, a device, a socket or a folder
    CONTENT_TOO_LARGE = "CONTENT_TOO_LARGE"  # declared or actual size above MES_MAX_DOCUMENT_BYTES


class SkipReason(StrEnum):
    DELETED = "DELETED"
    DUPLICATE = "DUPLICATE"


class DocumentOutcome(StrEnum):
    MIGRATED = "migrated"
    HELD_BACK = "held_back"
    SKIPPED = "skipped"


class Channel(StrEnum):
    EMAIL = "email"
    LETTER = "letter"


class WaveState(StrEnum):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    DRY_RUN = "dry_run"  # counted only; nothing was written for the people
    APPROVED = "approved"
    REJECTED = "rejected"


class EnrolmentState(StrEnum):
    """Where a person is in the rollout; the absence of a row means: not yet in any wave."""

    PLANNED = "planned"  # a notification is created for them, not yet sent
    NOTIFIED = "notified"  # a message reached them (sent / posted): the opt-out window runs
    UNREACHABLE = "unreachable"  # no usable email nor printable address, or the letter came back
    OPPOSED = "opposed"  # opposition on or before the deadline
    LATE_OPPOSED = "late_opposed"  # opposition after the deadline, before a space existed
    CREATED = "created"  # the space exists (activation or automatic creation)
    CLOSED = "closed"  # opposition after creation: the space was closed
    CANCELLED_DECEASED = "cancelled_deceased"  # death recorded before creation


class NotificationStatus(StrEnum):
    """Email: created -> sending -> sent -> delivered | temporary_failure | permanent_failure |
    technical_failure. Letter: created -> printed -> posted -> returned."""

    CREATED = "created"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    TEMPORARY_FAILURE = "temporary_failure"
    PERMANENT_FAILURE = "permanent_failure"
    TECHNICAL_FAILURE = "technical_failure"
    PRINTED = "printed"
    POSTED = "posted"
    RETURNED = "returned"
    CANCELLED = "cancelled"  # never sent: the wave was rejected or everyone it was for died


class SpaceState(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"  # data archived for 10 years
    PURGE_SCHEDULED = "purge_scheduled"  # deletion requested: purged within 3 months
    DELETED = "deleted"


class SpaceCause(StrEnum):
    ACTIVATION = "activation"
    AUTOMATIC = "automatic"


class DecisionEvent(StrEnum):
    OPPOSITION = "opposition"
    ACTIVATION = "activation"
    CLOSURE = "closure"
    DELETION = "deletion"


# Airflow Assets (by URI) linking the DAGs: space creation -> DMP migration, wave approval -> sending.
SPACES_CREATED_ASSET = "mes-rollout://spaces/created"
WAVE_APPROVED_ASSET = "mes-rollout://waves/approved"


# --- DMP migration (owned by migration/) -------------------------------------------------------


class DmpIntakeReason(StrEnum):
    """Why a row of the DMP extract was quarantined at intake (it is not staged at all).

    Only rows that cannot be staged are quarantined here; a row that can be staged but breaks a
    migration rule is staged and later held back with a `HoldBackReason`.
    """

    MISSING_FIELD = "MISSING_FIELD"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"  # not ISO 8601 with an offset
    BAD_DATE = "BAD_DATE"  # date_naissance is not YYYY-MM-DD
    BAD_SIZE = "BAD_SIZE"  # size is not a whole number of bytes
    BAD_STATUS = "BAD_STATUS"  # not one of the statuses INPUTS.md lists
    DUPLICATE_DMP = "DUPLICATE_DMP"  # the same dmp_id earlier in dmp.csv: the first wins
    DUPLICATE_ENTRY = "DUPLICATE_ENTRY"  # the same entry_uuid earlier in documents.csv: the first wins
    UNKNOWN_DMP = "UNKNOWN_DMP"  # a document of a dmp_id that no DMP row (of this or an earlier extract) has


class VersionRole(StrEnum):
    CURRENT = "current"
    SUPERSEDED = "superseded"


class DmpStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class DocumentStatus(StrEnum):
    APPROVED = "Approved"
    DEPRECATED = "Deprecated"
    ARCHIVED = "Archived"
    DELETED = "Deleted"


class MigrationRunState(StrEnum):
    """classifying -> classified -> committing -> committed -> succeeded; stopped (quality gate) and
    failed (validation) end a run without it going further."""

    CLASSIFYING = "classifying"
    CLASSIFIED = "classified"
    STOPPED = "stopped"  # the hold-back rate passed the threshold: nothing was committed
    COMMITTING = "committing"
    COMMITTED = "committed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a validation that must pass did not


class MigrationBatchState(StrEnum):
    PLANNED = "planned"
    CLASSIFIED = "classified"
    COMMITTED = "committed"


class DeliveryErrorKind(StrEnum):
    """What an email client error means for the message (the caller decides from this, never from text)."""

    TEMPORARY = "temporary"  # 4xx, timeout, refused or dropped connection: retry with backoff
    PERMANENT = "permanent"  # 5xx on the recipient: the address is bad, a letter is queued instead
    TECHNICAL = "technical"  # the relay refuses the message itself (5xx outside RCPT): no retry, letter


class FeedbackStatus(StrEnum):
    """The statuses a feedback.csv line may carry (INPUTS.md)."""

    DELIVERED = "delivered"
    PERMANENT_FAILURE = "permanent_failure"
    TEMPORARY_FAILURE = "temporary_failure"
    RETURNED = "returned"


class FeedbackReason(StrEnum):
    """Why a feedback line was quarantined."""

    MISSING_FIELD = "MISSING_FIELD"
    BAD_STATUS = "BAD_STATUS"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"  # not ISO 8601 with an offset
    UNKNOWN_NOTIFICATION = "UNKNOWN_NOTIFICATION"
    IMPOSSIBLE_TRANSITION = "IMPOSSIBLE_TRANSITION"  # e.g. returned on an email, delivered after a bounce
    OCCURRED_IN_FUTURE = "OCCURRED_IN_FUTURE"  # after the end of the load's logical day


class UnreachableReason(StrEnum):
    """Why the people a message was for are left unreachable (enrolments.state_reason)."""

    EMAIL_FAILED_NO_ADDRESS = "EMAIL_FAILED_NO_ADDRESS"  # the email failed and no printable address
    ADDRESS_NOT_PRINTABLE = "ADDRESS_NOT_PRINTABLE"  # a letter was due but the address cannot be printed
    LETTER_RETURNED = "LETTER_RETURNED"  # NPAI: n'habite pas à l'adresse indiquée
    RECIPIENT_DECEASED = "RECIPIENT_DECEASED"  # the representative a letter was addressed to died before it went


class PrintBatchState(StrEnum):
    PRINTED = "printed"  # the PDF and the manifest are written
    POSTED = "posted"  # handed to the print provider: the letters' windows start


# The Airflow pool every SMTP-sending task takes a slot of: its size bounds the relay connections
# (slots x MES_SMTP_CONNECTIONS).
SMTP_RELAY_POOL = "smtp_relay"
SMTP_AIRFLOW_CONN_ID = "mes_smtp"


class WaveExclusion(StrEnum):
    """Why a person in a wave's scope, alive and not yet enrolled, gets no message in it (wave_cohort.reason)."""

    REPRESENTATIVE_MISSING = "REPRESENTATIVE_MISSING"  # a minor without a legal representative in the register
    REPRESENTATIVE_UNKNOWN = "REPRESENTATIVE_UNKNOWN"  # the representative's NIR is not in the register
    REPRESENTATIVE_DECEASED = "REPRESENTATIVE_DECEASED"  # the representative has died
    OVER_CAP = "OVER_CAP"  # the wave's cap on recipients was reached: left for a later wave
    NO_CONTACT = "NO_CONTACT"  # unreachable: the recipient has no usable email nor printable address


class DecisionChannel(StrEnum):
    """Where a decision was received (decisions.csv `channel`)."""

    WEB = "web"
    PHONE = "phone"
    CPAM = "cpam"
    MAIL = "mail"


class DecisionOutcome(StrEnum):
    """What an accepted decision did (decisions.outcome)."""

    OPPOSED = "opposed"  # opposition on or before the deadline (or, unreachable, with no deadline)
    LATE_OPPOSED = "late_opposed"  # opposition after the deadline, before a space existed
    WITHDRAWN = "withdrawn"  # opposition in time, loaded after the automatic creation: the space is withdrawn
    ACTIVATED = "activated"  # the space was created at once
    CLOSED = "closed"  # opposition or closure after creation: the space is closed, archived 10 years
    PURGE_SCHEDULED = "purge_scheduled"  # deletion: the space is purged within 3 months
    UNCHANGED = "unchanged"  # the person is already where the decision leads (e.g. a second opposition)


class DecisionReason(StrEnum):
    """Why a decisions.csv row was quarantined (nothing applied for it)."""

    MISSING_FIELD = "MISSING_FIELD"
    BAD_NIR = "BAD_NIR"
    BAD_EVENT = "BAD_EVENT"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"  # not ISO 8601 with an offset
    BAD_CHANNEL = "BAD_CHANNEL"
    RECEIVED_IN_FUTURE = "RECEIVED_IN_FUTURE"  # after the end of the run's logical day
    UNKNOWN_NIR = "UNKNOWN_NIR"  # not in the register
    NOT_ENROLLED = "NOT_ENROLLED"  # the person is in no wave yet: nothing to oppose, activate or close
    PERSON_DECEASED = "PERSON_DECEASED"  # activation of a deceased person, or any decision on a cancelled enrolment
    NO_SPACE = "NO_SPACE"  # closure or deletion of a space that does not exist
    SPACE_CLOSED = "SPACE_CLOSED"  # activation of a space already closed
    REFERENCE_CONFLICT = "REFERENCE_CONFLICT"  # a reference seen before, with other content
    BEFORE_MESSAGE = "BEFORE_MESSAGE"  # an opposition or activation received before the person's message was sent
