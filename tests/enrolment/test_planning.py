"""Wave planning on both databases: who is told, through whom, by which channel; shards, the cap,
codes, re-runs, rejection and the re-selection of unreachable people."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.codes import code_hash, notification_id, provisional_code, wave_key
from enrolment.dao import register_wave, reject_wave
from enrolment.planning import adult_born_by, dry_run_counts, plan_shard, select_cohort
from enrolment.waves import WaveRequest, WaveRequestError, load_wave
from tests.enrolment.builders import NOW, load_people, plan_wave, states
from tests.factories import make_nir, person_row

SEND = dt.date(2022, 1, 31)


def _messages(engine: Engine, wave_id: str) -> dict[str, tuple[str, str, frozenset[str]]]:
    """recipient -> (channel, notification id, people told)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT n.recipient_nir, n.channel, n.notification_id, m.nir FROM notifications n"
                " JOIN notification_members m ON m.notification_id = n.notification_id WHERE n.wave_id = :w"
            ),
            {"w": wave_id},
        ).all()
    messages: dict[str, tuple[str, str, frozenset[str]]] = {}
    for recipient, channel, message, nir in rows:
        _, _, told = messages.get(recipient, (channel, message, frozenset()))
        messages[recipient] = (channel, message, told | {nir})
    return messages


@pytest.fixture
def population(engine: Engine, tmp_path: Path) -> dict[str, str]:
    """A small register covering every routing rule (names -> NIRs)."""
    people = {
        "email": person_row(),
        "letter": person_row(email=""),
        "bounced": person_row(),  # email bounced, printable address: letter
        "nowhere": person_row(email="", adresse_ligne4="", code_postal="", commune=""),
        "parent": person_row(departement="02"),
        "far_parent": person_row(departement="03", email=""),
        "other_departement": person_row(departement="03"),
        "dead": person_row(date_deces="2022-01-10"),
        "dies_later": person_row(),  # a representative whose death is recorded after the load
    }
    people["child"] = person_row(date_naissance="2010-03-04", nir_representant=people["parent"]["nir"], email="")
    people["protected"] = person_row(departement="02", nir_representant=people["parent"]["nir"])
    people["child_far"] = person_row(date_naissance="2012-05-06", nir_representant=people["far_parent"]["nir"])
    people["orphan"] = person_row(date_naissance="2015-07-08", email="")  # a minor without representative
    people["child_of_dead"] = person_row(date_naissance="2011-01-02", nir_representant=people["dies_later"]["nir"])
    people["child_of_unknown"] = person_row(date_naissance="2013-01-02", email="")
    adult_by = adult_born_by(SEND)
    people["eighteen_today"] = person_row(date_naissance=adult_by.isoformat(), sexe="M")
    people["eighteen_tomorrow"] = person_row(date_naissance=(adult_by + dt.timedelta(days=1)).isoformat(), sexe="M")
    load_people(engine, people.values(), tmp_path / "register")
    with engine.begin() as connection:
        connection.execute(text("UPDATE persons SET email_bounced = TRUE WHERE nir = :n"), {"n": people["bounced"]["nir"]})
        connection.execute(text("UPDATE persons SET date_deces = :d WHERE nir = :n"), {"d": dt.date(2022, 1, 20), "n": people["dies_later"]["nir"]})
        connection.execute(
            text("UPDATE persons SET nir_representant = :r WHERE nir = :n"),
            {"r": make_nir("1", 1970, 1, "75056", 998), "n": people["child_of_unknown"]["nir"]},
        )
    return {name: row["nir"] for name, row in people.items()}


def test_each_person_is_told_once_through_the_right_recipient_and_channel(
    engine: Engine, population: dict[str, str], tmp_path: Path
) -> None:
    p = population
    counts = plan_wave(engine, tmp_path / "var", "W1", ["01", "02"], SEND, decide=False)
    messages = _messages(engine, "W1")
    assert messages[p["email"]][0] == "email" and messages[p["email"]][2] == {p["email"]}
    assert messages[p["letter"]][0] == "letter"
    assert messages[p["bounced"]][0] == "letter"
    # one message for the parent, listing their own code, the child's and the protected adult's
    assert messages[p["parent"]][2] == {p["parent"], p["child"], p["protected"]}
    # a representative outside the wave's départements is written to for the child of the wave
    assert messages[p["far_parent"]] == ("letter", messages[p["far_parent"]][1], frozenset({p["child_far"]}))
    assert messages[p["eighteen_today"]][2] == {p["eighteen_today"]}
    assert p["eighteen_tomorrow"] not in messages  # a minor on the send date; no representative: excluded
    told = set().union(*(people for _, _, people in messages.values()))
    assert p["far_parent"] not in told and p["other_departement"] not in told and p["dead"] not in told
    assert counts["recipients"] == {"email": 3, "letter": 3, "total": 6}
    assert counts["people"]["planned"] == len(told) == 8
    assert counts["people"]["told_through_representative"] == 3
    assert counts["people"]["unreachable"] == 1
    assert counts["excluded"] == {
        "REPRESENTATIVE_DECEASED": 1,
        "REPRESENTATIVE_MISSING": 2,
        "REPRESENTATIVE_UNKNOWN": 1,
    }
    assert counts["not_eligible"] == {"deceased": 2, "already_enrolled": 0}
    enrolled = states(engine)
    assert enrolled[p["nowhere"]] == "unreachable"
    assert {nir for nir, state in enrolled.items() if state == "planned"} == told
    for excluded in ("orphan", "eighteen_tomorrow", "child_of_dead", "child_of_unknown"):
        assert p[excluded] not in enrolled  # not enrolled: a later wave takes them once the register is fixed
    with engine.connect() as connection:
        assert load_wave(connection, "W1").state == "awaiting_approval"  # type: ignore[union-attr]


def test_codes_are_stored_only_as_salted_hashes_and_ids_are_reproducible(
    engine: Engine, population: dict[str, str], tmp_path: Path
) -> None:
    var = tmp_path / "var"
    plan_wave(engine, var, "W1", ["01", "02"], SEND, decide=False)
    key = wave_key(var, "W1")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT nir, recipient_nir, code_hash, notification_id FROM enrolments WHERE state = 'planned'")).all()
        dump = " ".join(str(value) for row in connection.execute(text("SELECT * FROM enrolments")) for value in row)
    for nir, recipient, stored_hash, message in rows:
        code = provisional_code(key, nir)
        assert stored_hash == code_hash(nir, code) and code not in dump
        assert message == notification_id(key, "W1", recipient)
    assert len({row[2] for row in rows}) == len(rows)


def test_a_wave_fans_out_over_shards_and_a_rerun_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    parent = person_row()
    people = [parent, *(person_row(date_naissance=f"201{i}-02-03", nir_representant=parent["nir"]) for i in range(3))]
    people += [person_row() for _ in range(7)]
    load_people(engine, people, tmp_path / "register")
    var = tmp_path / "var"
    request = WaveRequest.from_params({"wave_id": "W1", "departements": ["01"]}, SEND)
    with engine.begin() as connection:
        register_wave(connection, request, run_id="r", now=NOW)
    shards = select_cohort(engine, "W1", var_dir=var, shard_size=3, run_id="r", now=NOW)
    assert len(shards) >= 3
    for shard in shards:
        plan_shard(engine, "W1", shard, var_dir=var, run_id="r", now=NOW)

    def snapshot() -> tuple[object, ...]:
        with engine.connect() as connection:
            return tuple(
                connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()  # noqa: S608
                for table in ("enrolments", "notifications", "notification_members", "wave_cohort", "wave_shards", "audit_trail")
            )

    before = snapshot()
    assert select_cohort(engine, "W1", var_dir=var, shard_size=3, run_id="again", now=NOW) == shards
    for shard in shards:
        assert plan_shard(engine, "W1", shard, var_dir=var, run_id="again", now=NOW).get("already_planned") == 1
    assert snapshot() == before
    with engine.connect() as connection:
        # a family is planned in one shard, in one message
        family_shards = connection.execute(
            text("SELECT COUNT(DISTINCT shard) FROM wave_cohort WHERE recipient_nir = :p"), {"p": parent["nir"]}
        ).scalar_one()
        per_shard = connection.execute(text("SELECT shard, people FROM wave_shards ORDER BY shard")).all()
    assert family_shards == 1
    assert sum(count for _, count in per_shard) == len(people)


def test_the_cap_leaves_the_rest_for_a_later_wave(engine: Engine, tmp_path: Path) -> None:
    load_people(engine, [person_row() for _ in range(5)] + [person_row(departement="02") for _ in range(2)], tmp_path / "r")
    var = tmp_path / "var"
    counts = plan_wave(engine, var, "W1", ["01", "02"], SEND, cap=4)
    assert counts["recipients"]["total"] == 4 and counts["excluded"] == {"OVER_CAP": 3}
    with engine.connect() as connection:
        over = connection.execute(text("SELECT departement FROM wave_cohort WHERE reason = 'OVER_CAP' ORDER BY 1")).scalars().all()
    assert over == ["01", "02", "02"]  # recipients are taken in département order
    later = plan_wave(engine, var, "W2", ["01", "02"], SEND + dt.timedelta(days=1))
    assert later["recipients"]["total"] == 3 and later["not_eligible"]["already_enrolled"] == 4


def test_a_dry_run_counts_like_the_wave_and_writes_nothing_for_the_people(
    engine: Engine, population: dict[str, str], tmp_path: Path
) -> None:
    request = WaveRequest.from_params({"wave_id": "W1", "departements": ["01", "02"], "dry_run": True}, SEND)
    with engine.begin() as connection:
        wave = register_wave(connection, request, run_id="r", now=NOW)
    dry = dry_run_counts(engine, wave, shard_size=10_000, run_id="r", now=NOW)
    with engine.connect() as connection:
        written = [
            connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()  # noqa: S608
            for table in ("enrolments", "notifications", "notification_members", "wave_cohort")
        ]
    assert written == [0, 0, 0, 0]
    real = plan_wave(engine, tmp_path / "var", "W1", ["01", "02"], SEND, decide=False)  # the real run takes the id over
    assert dry["recipients"] == real["recipients"]
    assert dry["people"]["to_notify"] == real["people"]["planned"]
    assert dry["excluded"] == real["excluded"]


def test_a_rejected_wave_cancels_its_messages_and_releases_its_people(
    engine: Engine, population: dict[str, str], tmp_path: Path
) -> None:
    var = tmp_path / "var"
    plan_wave(engine, var, "W1", ["01"], SEND, decide=False)
    with engine.begin() as connection:
        released = reject_wave(connection, "W1", by="operator", comment="wrong date", run_id="r", now=NOW)
        statuses = connection.execute(text("SELECT DISTINCT status FROM notifications")).scalars().all()
        decided = connection.execute(text("SELECT state, decided_by, decision_comment FROM waves")).one()
    assert released["released_people"] == 7 and statuses == ["cancelled"]
    assert tuple(decided) == ("rejected", "operator", "wrong date")
    assert states(engine) == {}
    counts = plan_wave(engine, var, "W2", ["01"], SEND + dt.timedelta(days=1))
    assert counts["people"]["planned"] == 6 + 1  # the same people, and one who turned 18 in between


def test_unreachable_people_are_taken_again_once_the_register_gives_them_a_contact(
    engine: Engine, tmp_path: Path
) -> None:
    nowhere = person_row(email="", adresse_ligne4="", code_postal="", commune="")
    still_nowhere = person_row(email="", adresse_ligne4="", code_postal="", commune="", sexe="M")
    load_people(engine, [nowhere, still_nowhere], tmp_path / "r")
    var = tmp_path / "var"
    plan_wave(engine, var, "W1", ["01"], SEND)
    assert set(states(engine).values()) == {"unreachable"}
    load_people(engine, [{**nowhere, "email": "found@example.fr"}], tmp_path / "r", as_of=dt.date(2022, 2, 15))
    counts = plan_wave(engine, var, "W2", ["01"], dt.date(2022, 2, 16))
    assert counts["recipients"] == {"email": 1, "letter": 0, "total": 1}
    # Still without a contact: not taken again, so not counted, moved nor audited by W2; their
    # enrolment stays with W1, the wave that found them unreachable.
    assert counts["people"]["unreachable"] == 0
    assert states(engine) == {nowhere["nir"]: "planned", still_nowhere["nir"]: "unreachable"}
    with engine.connect() as connection:
        waves = dict(connection.execute(text("SELECT nir, wave_id FROM enrolments")).all())
        cohort = connection.execute(text("SELECT nir FROM wave_cohort WHERE wave_id = 'W2'")).scalars().all()
        audited = connection.execute(
            text("SELECT COUNT(*) FROM audit_trail WHERE entity = 'enrolment' AND entity_id = :nir"),
            {"nir": still_nowhere["nir"]},
        ).scalar_one()
    assert waves == {nowhere["nir"]: "W2", still_nowhere["nir"]: "W1"}
    assert cohort == [nowhere["nir"]]
    assert audited == 1
    # A third wave: still nothing for them, still one audit row.
    plan_wave(engine, var, "W3", ["01"], dt.date(2022, 2, 23))
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT COUNT(*) FROM audit_trail WHERE entity = 'enrolment' AND entity_id = :nir"),
            {"nir": still_nowhere["nir"]},
        ).scalar_one() == 1


def test_wave_requests_are_checked(engine: Engine) -> None:
    day = SEND
    assert WaveRequest.from_params({"wave_id": "W", "departements": "1, 2a,974"}, day).departements == ("01", "2A", "974")
    assert WaveRequest.from_params({"wave_id": "W", "departements": ["02", "01"]}, day).send_date == day
    for bad in (
        {"wave_id": "", "departements": ["01"]},
        {"wave_id": "a b", "departements": ["01"]},
        {"wave_id": "W", "departements": ["20"]},
        {"wave_id": "W", "departements": []},
        {"wave_id": "W", "departements": ["01"], "send_date": "31/01/2022"},
        {"wave_id": "W", "departements": ["01"], "recipient_cap": 0},
    ):
        with pytest.raises(WaveRequestError):
            WaveRequest.from_params(bad, day)
    with engine.begin() as connection:
        register_wave(connection, WaveRequest.from_params({"wave_id": "W", "departements": ["01"]}, day), run_id="r", now=NOW)
        again = register_wave(connection, WaveRequest.from_params({"wave_id": "W", "departements": ["01"]}, day), run_id="r", now=NOW)
        assert again.state == "planning"
        with pytest.raises(WaveRequestError, match="other parameters"):
            register_wave(connection, WaveRequest.from_params({"wave_id": "W", "departements": ["02"]}, day), run_id="r", now=NOW)
        with pytest.raises(WaveRequestError, match="dry run comes before"):
            register_wave(
                connection, WaveRequest.from_params({"wave_id": "W", "departements": ["01"], "dry_run": True}, day), run_id="r", now=NOW
            )
