"""The register intake's check of ordinary rows, a column at a time.

Most rows of a register extract are already in the form `enrolment.register.validate_row` would
give them: a NIR without spaces whose key, sex, year and month agree, names without extra
whitespace, a valid email, an address that surely prints. `sure_rows` finds those rows in a batch
of the file (Arrow columns, checked by Arrow's C++ kernels: RE2 expressions, integer arithmetic)
and gives their staged values. It never rejects nor warns: a row it is not sure of goes through
`validate_row`, which alone decides reasons and warnings. So this check may be stricter than the
rules (names outside Latin-1 and Latin Extended, say, go the general way), never looser:
tests/enrolment/test_register_columns.py checks, on faulty synthetic extracts and generated
variations, that every row it takes is one `validate_row` accepts unchanged and without warning.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from enrolment.register_fields import DEPARTEMENTS, EMAIL, PERSON_COLUMNS
from mes_rollout.arrowcsv import bool_array, int64_array, string_array
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.postal_address import KEPT_CHARACTER, POSTCODE_AREA

# Characters a name may hold unchanged: no whitespace of any kind (Python's str.split splits on
# more than ASCII spaces: NBSP, U+2028...); printable ASCII, Latin-1, Latin Extended. Quotes,
# semicolons and markup are data.
_NAME_CHARACTER = r"[!-~\x{a1}-\x{24f}]"
_NAME = rf"{_NAME_CHARACTER}+(?: {_NAME_CHARACTER}+)*"
# Address characters that survive normalisation without growing (no ß, Æ, æ, ¼, ½, ¾, nothing
# outside Latin-1), no whitespace but single spaces.
_ADDRESS_WORD = r"[!-~\x{a1}-\x{bb}\x{bf}-\x{c5}\x{c7}-\x{de}\x{e0}-\x{e5}\x{e7}-\x{ff}]+"
_ADDRESS_LINE = rf"^(?:{_ADDRESS_WORD}(?: {_ADDRESS_WORD})*)?$"
# Sex 1 or 2, year, month 01-12, then a département of birth and a commune (not 000), or an
# overseas département and territory; then the order number (not 000) and the key. RE2 has no
# lookahead: the two "not 000" are checked apart.
_NIR = (
    r"^[12][0-9]{2}(?:0[1-9]|1[0-2])"
    r"(?:(?:0[1-9]|1[0-9]|2[1-9AB]|[3-8][0-9]|9[0-59])[0-9]{3}|9[78][1-9][0-9]{2})[0-9]{5}$"
)
# A day of the calendar as YYYY-MM-DD, years 0001 to 9999 as Python's dates; 29 February in leap
# years only (divisible by 4, and by 400 for a century).
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
_PLACE = r"^(?:[0-9]{5}|2[AB][0-9]{3})?$"
_POSTCODE = r"^(?:[0-9]{5})?$"
# The postal address's own patterns (RE2 reads them as Python's re does).
_POSTCODE_AREA = POSTCODE_AREA.pattern
_KEPT_CHARACTER = KEPT_CHARACTER.pattern
_EMAIL_OR_NOTHING = rf"^(?:{EMAIL.pattern[1:-1]})?$"
_SEPARATOR = "\x01"
# Made once, when the module loads (making a pyarrow scalar loads pandas, a third of a second).
_NULL_STRING = pa.scalar(None, pa.string())
_SEXES = string_array(["M", "F"])
_DEPARTEMENTS = string_array(sorted(DEPARTEMENTS))
_NAMES = rf"^{_NAME}\x01(?:{_NAME})?\x01{_NAME}$"  # nom_naissance, nom_usage, prenoms
_ADDRESS_LINES = rf"^(?:{_ADDRESS_LINE[1:-1]}\x01){{4}}{_ADDRESS_LINE[1:-1]}$"  # lines 2 to 5, commune
# A kept character in one of lines 2 to 5, and in the commune.
_LINE_KEPT = rf"^(?:[^\x01]*\x01){{0,3}}[^\x01]*{_KEPT_CHARACTER}"
_COMMUNE_KEPT = rf"{_KEPT_CHARACTER}[^\x01]*$"
_ADDRESS_COLUMNS = ("adresse_ligne2", "adresse_ligne3", "adresse_ligne4", "adresse_ligne5")
_LINE_LENGTH = 38
_NO_ADDRESS = "no postal address"


def _matches(column: pa.Array, pattern: str) -> pa.Array:
    return pc.match_substring_regex(column, pattern)


def _slice(column: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.utf8_slice_codeunits(column, start=start, stop=stop)


def _all(*conditions: pa.Array) -> pa.Array:
    result = conditions[0]
    for condition in conditions[1:]:
        result = pc.and_(result, condition)
    return result


def _empty(column: pa.Array) -> pa.Array:
    return pc.equal(column, "")


def _or_null(column: pa.Array) -> pa.Array:
    return pc.if_else(_empty(column), _NULL_STRING, column)


def _joined(*columns: pa.Array) -> pa.Array:
    """Fields of a row joined by \x01, a character no field the check takes may hold: a pattern
    over the joined text checks them all in one pass."""
    return pc.binary_join_element_wise(*columns, _SEPARATOR)


def nir_numbers(nirs: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """For NIRs of the right shape (15 characters: digits, 2A or 2B at the 6th and 7th): the
    13-character number as an integer, 2A read as 19 and 2B as 18, and whether the key, the commune
    and the order number are right (97 - number mod 97 = key; commune and order not 000)."""
    count = len(nirs)
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    if isinstance(nirs, pa.ChunkedArray):
        nirs = nirs.combine_chunks()
    nirs = pc.take(nirs, int64_array(np.arange(count)))  # a fresh array: offsets from 0, one buffer
    offsets = np.frombuffer(nirs.buffers()[1], np.int32, count + 1)
    if offsets[0] != 0 or offsets[-1] != 15 * count:
        raise ValueError("nir_numbers takes NIRs of 15 ASCII characters")
    digits = np.frombuffer(nirs.buffers()[2], np.uint8, 15 * count).reshape(count, 15).astype(np.int64) - 48
    corsica = digits[:, 6] >= 10  # 'A' or 'B'
    digits[corsica, 5] = 1
    digits[:, 6] = np.where(corsica, 26 - digits[:, 6], digits[:, 6])  # A (17) reads 9, B (18) reads 8
    number = digits[:, :13] @ (10 ** np.arange(12, -1, -1, dtype=np.int64))
    key = digits[:, 13] * 10 + digits[:, 14]
    valid = (97 - number % 97 == key) & digits[:, 7:10].any(axis=1) & digits[:, 10:13].any(axis=1)
    return number, valid


def _valid_nirs(nirs: pa.Array) -> pa.Array:
    """Surely valid NIRs: the shape, then the key, commune and order number."""
    shaped = _matches(nirs, _NIR).to_numpy(zero_copy_only=False)
    where = np.flatnonzero(shaped)
    valid = np.zeros(len(nirs), bool)
    valid[where] = nir_numbers(pc.take(nirs, int64_array(where)))[1]
    return bool_array(valid)


def sure_rows(table: pa.Table, as_of: dt.date) -> tuple[pa.Array, pa.Table]:
    """(mask of the rows surely accepted unchanged and without warning, their staged values in
    PERSON_COLUMNS order, strings, None where the person has nothing). `table` holds the contract's
    columns as strings, "" for an empty field. When the mask is false the row must go through
    `validate_row`."""
    if table.column_names != list(REGISTER_COLUMNS):
        raise ValueError("sure_rows takes the contract's columns in the contract's order")
    if table.num_rows == 0:
        return bool_array(np.zeros(0, bool)), pa.table({name: string_array([]) for name in PERSON_COLUMNS})
    column = {name: table.column(name).combine_chunks() for name in REGISTER_COLUMNS}
    # NIRs written in groups ("1 84 05 23 006 971 59") are taken without their spaces: where the
    # result is a NIR, the text held only digits, A, B and spaces, and `normalise` does the same.
    for name in ("nir", "nir_representant"):
        column[name] = pc.replace_substring(column[name], " ", "")
    as_of_iso = as_of.isoformat()
    nir, birth, sexe = column["nir"], column["date_naissance"], column["sexe"]
    representative, death = column["nir_representant"], column["date_deces"]
    postcode = column["code_postal"]
    address = _joined(*[column[name] for name in _ADDRESS_COLUMNS], column["commune"])
    no_address = pc.and_(pc.equal(address, _SEPARATOR * 4), _empty(postcode))
    printable_address = _all(
        pc.less_equal(pc.add(pc.add(pc.utf8_length(postcode), 1), pc.utf8_length(column["commune"])), _LINE_LENGTH),
        _matches(postcode, _POSTCODE_AREA),
        _matches(address, _COMMUNE_KEPT),
        *[pc.less_equal(pc.utf8_length(column[name]), _LINE_LENGTH) for name in _ADDRESS_COLUMNS],
        _matches(address, _LINE_KEPT),
    )
    sure = _all(
        _valid_nirs(nir),
        _matches(_joined(column["nom_naissance"], column["nom_usage"], column["prenoms"]), _NAMES),
        _matches(birth, f"^{_DATE}$"),
        pc.less_equal(birth, as_of_iso),
        pc.is_in(sexe, _SEXES),
        pc.equal(pc.equal(_slice(nir, 0, 1), "1"), pc.equal(sexe, "M")),
        pc.equal(_slice(nir, 1, 3), _slice(birth, 2, 4)),
        pc.equal(_slice(nir, 3, 5), _slice(birth, 5, 7)),
        _matches(column["lieu_naissance"], _PLACE),
        _matches(column["email"], _EMAIL_OR_NOTHING),
        _matches(address, _ADDRESS_LINES),
        _matches(postcode, _POSTCODE),
        pc.or_(no_address, printable_address),
        pc.is_in(column["departement"], _DEPARTEMENTS),
        pc.or_(_empty(representative), pc.and_(_valid_nirs(representative), pc.not_equal(representative, nir))),
        _matches(death, f"^(?:{_DATE})?$"),
        pc.or_(_empty(death), pc.and_(pc.greater_equal(death, birth), pc.less_equal(death, as_of_iso))),
    )
    sure = pc.fill_null(sure, False)
    picked = {name: pc.filter(column[name], sure) for name in REGISTER_COLUMNS}
    prenoms = picked["prenoms"]
    staged_address_problem = pc.if_else(pc.filter(no_address, sure), _NO_ADDRESS, _NULL_STRING)
    staged = {
        "nir": picked["nir"],
        "nom_naissance": picked["nom_naissance"],
        "nom_usage": _or_null(picked["nom_usage"]),
        "prenom": pc.list_element(pc.split_pattern(prenoms, " ", max_splits=1), 0),
        "prenoms": prenoms,
        "date_naissance": picked["date_naissance"],
        "sexe": picked["sexe"],
        "lieu_naissance": _or_null(picked["lieu_naissance"]),
        "email": _or_null(picked["email"]),
        **{name: _or_null(picked[name]) for name in _ADDRESS_COLUMNS},
        "code_postal": _or_null(picked["code_postal"]),
        "commune": _or_null(picked["commune"]),
        "address_problem": staged_address_problem,
        "departement": picked["departement"],
        "nir_representant": _or_null(picked["nir_representant"]),
        "date_deces": _or_null(picked["date_deces"]),
    }
    assert tuple(staged) == PERSON_COLUMNS
    return sure, pa.table(staged)
