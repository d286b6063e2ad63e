"""The expectation suites of the DMP migration, built in code (one definition, versioned with the rules).

- `dmp_extract_staged`: the staged extract of a run's scope. Shape guaranteed by intake is critical;
  data quality (type codes, classes, confidentiality, hash format) is a warning with `mostly` set
  to 1 - the hold-back threshold: the quality gate is what stops a run, this page shows where.
- `dmp_migrated_documents`: the documents carried into spaces. Everything is critical: metadata
  exactly as in the source, content address, size and SHA-1 as declared, stored content present.
- `dmp_reconciliation` / `dmp_reconciliation_totals`: per DMP and in total, source documents =
  migrated + held back + skipped. Critical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mes_rollout.constants import DocumentStatus, VersionRole
from mes_rollout.dmp_codes import CONFIDENTIALITY_FLAGS, type_code_classes

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

STAGED_SUITE = "dmp_extract_staged"
MIGRATED_SUITE = "dmp_migrated_documents"
RECONCILIATION_SUITE = "dmp_reconciliation"
TOTALS_SUITE = "dmp_reconciliation_totals"
AUTHOR_ROLES = ("PS", "PATIENT", "ETABLISSEMENT", "SYSTEME")
_FLAG = "(?:" + "|".join(sorted(CONFIDENTIALITY_FLAGS)) + ")"
# One level among N, R, V and flags around it, each separated by '|'. Repeated codes are caught by
# the rule itself (migration.rules.Confidentiality); the regex documents the shape.
CONFIDENTIALITY_REGEX = rf"^(?:{_FLAG}\|)*[NRV](?:\|{_FLAG})*$"
SHA1_REGEX = r"^[0-9a-fA-F]{40}$"
STORE_KEY_REGEX = r"^[0-9a-f]{64}$"


def type_class_pairs() -> list[str]:
    """The (type_code, class_code) pairs of the table as "type/class" (checked with a vectorised isin)."""
    return sorted(f"{type_code}/{class_code}" for type_code, class_code in type_code_classes().items())


def staged_extract_suite(holdback_threshold: float) -> ExpectationSuite:
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    warning = FailureSeverity.WARNING
    quality = max(0.0, 1.0 - holdback_threshold)
    return gx.ExpectationSuite(
        name=STAGED_SUITE,
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="entry_uuid"),
            gxe.ExpectColumnValuesToBeUnique(column="entry_uuid"),
            gxe.ExpectColumnValuesToNotBeNull(column="unique_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="dmp_id"),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=[status.value for status in DocumentStatus]),
            gxe.ExpectColumnValuesToBeBetween(column="size", min_value=0),
            gxe.ExpectColumnValuesToBeInSet(
                column="type_code", value_set=sorted(type_code_classes()), mostly=quality, severity=warning
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="type_class", value_set=type_class_pairs(), mostly=quality, severity=warning
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="confidentiality", regex=CONFIDENTIALITY_REGEX, mostly=quality, severity=warning
            ),
            gxe.ExpectColumnValuesToMatchRegex(column="hash", regex=SHA1_REGEX, mostly=quality, severity=warning),
            gxe.ExpectColumnValuesToBeInSet(
                column="author_role", value_set=list(AUTHOR_ROLES), mostly=quality, severity=warning
            ),
        ],
    )


def migrated_documents_suite() -> ExpectationSuite:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name=MIGRATED_SUITE,
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="entry_uuid"),
            gxe.ExpectColumnValuesToBeUnique(column="entry_uuid"),
            gxe.ExpectColumnValuesToBeInSet(column="duplicate_in_space", value_set=[False]),
            gxe.ExpectColumnValuesToBeInSet(column="type_code", value_set=sorted(type_code_classes())),
            gxe.ExpectColumnValuesToBeInSet(column="type_class", value_set=type_class_pairs()),
            gxe.ExpectColumnValuesToMatchRegex(column="confidentiality", regex=CONFIDENTIALITY_REGEX),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="confidentiality", column_B="source_confidentiality"),
            gxe.ExpectColumnValuesToNotBeInSet(column="source_status", value_set=[DocumentStatus.DELETED.value]),
            gxe.ExpectColumnValuesToBeInSet(column="version_role", value_set=[role.value for role in VersionRole]),
            gxe.ExpectColumnValuesToBeInSet(column="head_is_current", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="chain_currents", value_set=[1]),
            gxe.ExpectColumnValuesToMatchRegex(column="store_key", regex=STORE_KEY_REGEX),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="sha1", column_B="source_hash"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="size", column_B="source_size"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="stored_size", column_B="size"),
        ],
    )


def reconciliation_suite() -> ExpectationSuite:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name=RECONCILIATION_SUITE,
        expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="dmp_id"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="source", column_B="accounted"),
            gxe.ExpectColumnValuesToBeBetween(column="migrated", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="held_back", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="skipped", min_value=0),
        ],
    )


def totals_suite(source_documents: int, source_dmps: int) -> ExpectationSuite:
    """One row: the sums of the per-DMP frame beside the scope counted straight from the extract."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name=TOTALS_SUITE,
        expectations=[
            gxe.ExpectTableRowCountToEqual(value=1),
            gxe.ExpectColumnValuesToBeBetween(
                column="source", min_value=source_documents, max_value=source_documents
            ),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="source", column_B="accounted"),
            gxe.ExpectColumnValuesToBeBetween(column="dmps", min_value=source_dmps, max_value=source_dmps),
        ],
    )
