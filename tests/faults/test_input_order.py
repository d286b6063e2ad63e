"""Inputs delivered twice or out of order: nothing lost, nothing done twice.

- The same input file delivered a second time, through its DAG (`dag.test()`), changes no table
  and reports the first delivery's counts, for each of the four inputs.
- A decisions file applied before the feedback it depends on, and after it, on the same data:
  the same end state, or where the domain makes the order matter, the rule's documented outcome,
  and no decision lost. (Register extracts out of order: tests/enrolment/test_register_order.py.)
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from console.dagrun import run_dag
from enrolment.dao import start_window
from enrolment.decisions import load_decisions
from enrolment.spaces import create_due_spaces
from mes_rollout.config import OptOutWindow, load_settings
from mes_rollout.db import as_datetime, get_engine
from mes_rollout.runday import business_day
from notifications.feedback import load_feedback
from notifications.letters import post_printed_batches, print_letters
from tests.enrolment.builders import decision, load_people, plan_wave, write_decisions
from tests.factories import person_row, write_csv
from tests.migration.factories import ExtractBuilder

SEND = dt.date(2022, 1, 31)  # the wave's send date
SENT_AT = dt.datetime(2022, 1, 31, 9, 0, tzinfo=dt.UTC)
FEEDBACK_COLUMNS = ("notification_id", "status", "occurred_at", "detail")
# Bookkeeping of the rollout pages: when and by which run the figures were last refreshed (a second
# delivery's run does refresh them; the figures themselves must not move).
NOT_SNAPSHOT = frozenset({"rollout_summary_refresh"})
NOT_SNAPSHOT_COLUMNS = frozenset({"refreshed_at"})


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the pipeline's database (but the refresh bookkeeping), in a
    stable order."""
    snapshot = {}
    with engine.connect() as connection:
        inspector = inspect(connection)
        for table in sorted(set(inspector.get_table_names()) - NOT_SNAPSHOT):
            columns = [
                c["name"] for c in inspector.get_columns(table) if c["name"] not in NOT_SNAPSHOT_COLUMNS
            ]
            query = f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608
            snapshot[table] = sorted((tuple(row) for row in connection.execute(text(query))), key=repr)
    return snapshot


def _send_emails(engine: Engine, wave_id: str, send_date: dt.date) -> dict[str, str]:
    """The wave's emails sent on send_date, as the sender records them (claimed on the day, taken by
    the relay, the window started); returns each recipient's message id."""
    with engine.begin() as connection:
        messages = dict(
            connection.execute(
                text(
                    "SELECT recipient_nir, notification_id FROM notifications WHERE wave_id = :w AND channel = 'email'"
                ),
                {"w": wave_id},
            ).all()
        )
        for notification_id in messages.values():
            start_window(connection, notification_id, send_date, OptOutWindow(), run_id="sender", now=SENT_AT)
        connection.execute(
            text(
                "UPDATE notifications SET status = 'sent', sent_at = :now, send_date = :day, attempts = 1"
                " WHERE wave_id = :w AND channel = 'email' AND status = 'created'"
            ),
            {"w": wave_id, "now": SENT_AT, "day": send_date},
        )
    return {str(nir): str(notification_id) for nir, notification_id in messages.items()}


def _second_delivery(first: Path, folder: Path) -> Path:
    """The same bytes delivered again, under another name."""
    folder.mkdir(parents=True, exist_ok=True)
    if first.is_dir():
        return Path(shutil.copytree(first, folder / first.name))
    return Path(shutil.copy2(first, folder / first.name))


def test_the_same_input_file_delivered_twice_through_its_dag_changes_nothing(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    delivered = tmp_path / "delivered"
    people = [person_row() for _ in range(6)]
    opposes, activates, closes, delivered_to, bounces, has_dmp = (person["nir"] for person in people)
    register = write_csv(delivered / "register.csv", people)
    builder = ExtractBuilder(delivered / "dmp")
    dmp_id = builder.add_dmp(people[5])
    builder.add_document(dmp_id)
    builder.add_document(dmp_id)
    builder.add_document("DMP-NOBODY")  # quarantined UNKNOWN_DMP
    extract = builder.write()
    decisions = write_decisions(
        delivered / "decisions.csv",
        [
            decision("D1", opposes, "opposition", "2022-02-03T10:00:00+01:00"),
            decision("D2", activates, "activation", "2022-02-04T10:00:00+01:00", "phone"),
            decision("D1", opposes, "opposition", "2022-02-03T10:00:00+01:00"),  # the same line: ignored
            decision("D3", closes, "closure", "2022-02-05T10:00:00+01:00"),  # no space: NO_SPACE
            decision("D4", "1" * 13 + "00", "opposition", "2022-02-05T10:00:00+01:00"),  # BAD_NIR
        ],
    )

    first: dict[str, dict[str, Any]] = {}
    result = run_dag(
        "register_intake",
        dt.date(2022, 1, 28),
        {"register_file": str(register), "extracted_on": "2022-01-25"},
    )
    first["register"] = result.xcom_returns["load_register"]
    engine = get_engine()
    plan_wave(engine, settings_env, "W1", ["01"], SEND)
    messages = _send_emails(engine, "W1", SEND)
    feedback = write_csv(
        delivered / "feedback.csv",
        [
            {"notification_id": messages[delivered_to], "status": "delivered", "occurred_at": "2022-01-31T10:00:00+01:00",
             "detail": "250 OK"},
            {"notification_id": messages[bounces], "status": "permanent_failure",
             "occurred_at": "2022-01-31T10:05:00+01:00", "detail": "550 5.1.1"},
            {"notification_id": "no-such-message", "status": "delivered", "occurred_at": "2022-01-31T10:00:00+01:00",
             "detail": ""},
        ],
        FEEDBACK_COLUMNS,
    )  # fmt: skip
    intake = run_dag("dmp_intake", dt.date(2022, 2, 1), {"extract_dir": str(extract)})
    first["dmp"] = intake.xcom_returns["load_extract"]
    first["decisions"] = run_dag(
        "decisions_intake", dt.date(2022, 2, 10), {"decisions_file": str(decisions)}
    ).xcom_returns["load_decisions"]
    first["feedback"] = run_dag(
        "delivery_feedback", dt.date(2022, 2, 10), {"feedback_file": str(feedback)}
    ).xcom_returns["load_feedback"]
    # What the first deliveries did (so that "nothing changes" below is not about nothing).
    register_counts = first["register"]
    assert (register_counts["read"], register_counts["accepted"], register_counts["changed_persons"]) == (6, 6, 6)
    assert first["register"]["extracted_on"] == "2022-01-25"
    assert (first["dmp"]["dmp"]["accepted"], first["dmp"]["documents"]["quarantined"]) == (1, 1)
    assert first["decisions"]["rows"] == {"read": 5, "accepted": 3, "quarantined": 2}
    assert (first["decisions"]["applied"], first["decisions"]["ignored_seen_before"]) == (2, 1)
    assert first["decisions"]["outcomes"] == {"activated": 1, "opposed": 1}
    assert first["decisions"]["spaces_created"] == 1
    feedback_counts = first["feedback"]
    assert (feedback_counts["read"], feedback_counts["quarantined"], feedback_counts["applied"]) == (3, 1, 2)

    redelivered = tmp_path / "redelivered"
    runs = {
        "register": ("register_intake", "load_register", {"register_file": str(_second_delivery(register, redelivered))}),
        "dmp": ("dmp_intake", "load_extract", {"extract_dir": str(_second_delivery(extract, redelivered))}),
        "decisions": ("decisions_intake", "load_decisions", {"decisions_file": str(_second_delivery(decisions, redelivered))}),
        "feedback": ("delivery_feedback", "load_feedback", {"feedback_file": str(_second_delivery(feedback, redelivered))}),
    }  # fmt: skip
    for name, (dag_id, task_id, conf) in runs.items():
        before = _snapshot(engine)
        # Delivered again a few days later: the time passed changes nothing either.
        second = run_dag(dag_id, dt.date(2022, 2, 14), conf).xcom_returns[task_id]
        after = _snapshot(engine)
        changed = {table: (before[table], after[table]) for table in before if before[table] != after[table]}
        assert not changed, f"the second delivery of the {name} file changed {changed}"
        assert name == "feedback" or second["already_loaded"] is True, name
        if name == "register":
            assert second == {**first[name], "already_loaded": True, "changed_persons": 0}
        elif name == "dmp":
            assert second == {**first[name], "already_loaded": True}
        elif name == "decisions":
            # The first delivery's counts; what it caused (a space) is not caused again.
            assert second == {**first[name], "already_loaded": True, "spaces_created": 0, "file": conf["decisions_file"],
                              "day": "2022-02-14"}  # fmt: skip
        else:
            assert second == first[name]


# --- decisions and the feedback they depend on, in either order --------------------------------

LOADED_ON = dt.date(2022, 3, 1)  # both files are loaded that day, in one order or the other
NEXT_SENDING = dt.date(2022, 3, 2)  # the next sending run posts the fallback letters
RESENT_ON = dt.date(2022, 3, 3)  # the source system sends again what was quarantined BEFORE_MESSAGE
CREATION_DAY = dt.date(2022, 4, 5)  # a creation run after every deadline (the latest: 2 April)
ORDERS = {
    "decisions_then_feedback": ("decisions", "feedback"),
    "feedback_then_decisions": ("feedback", "decisions"),
}


class _World:
    """One wave sent on 31 January 2022 (one-month window: last day 28 February) to people whose
    fate depends on both files:

    - bounced_opposes: email bounced on the 31st; opposed on 3 February (in time either way)
    - bounced_opposes_late: email bounced; opposed on 1 March, after the email's deadline but
      within the fallback letter's window (the email's window never ran)
    - returned_opposes: letter returned (NPAI) on 7 February; opposed on 10 February
    - returned_opposes_late: letter returned; opposed on 1 March (the letter's window never ran)
    - bounced_activates: email bounced; activated by phone on 4 February
    - delivered: email delivered, no answer: an automatic space after the deadline
    - bounced_silent: email bounced, no answer: the fallback letter tells them, then a space
    """

    ROLES = (
        "bounced_opposes", "bounced_opposes_late", "returned_opposes", "returned_opposes_late", "bounced_activates",
        "delivered", "bounced_silent",
    )  # fmt: skip
    LETTERS = ("returned_opposes", "returned_opposes_late")

    def __init__(self, engine: Engine, var: Path, folder: Path) -> None:
        self.engine, self.folder = engine, folder
        rows = {role: person_row(email="") if role in self.LETTERS else person_row() for role in self.ROLES}
        self.nir = {role: row["nir"] for role, row in rows.items()}
        load_people(engine, rows.values(), folder / "register")
        plan_wave(engine, var, "W1", ["01"], SEND)
        emails = _send_emails(engine, "W1", SEND)
        settings = load_settings()
        print_letters(engine, settings, logical_date=SEND, run_id="print-1")
        post_printed_batches(engine, settings, logical_date=SEND, run_id="post-1")
        with engine.connect() as connection:
            letters = dict(
                connection.execute(
                    text("SELECT recipient_nir, notification_id FROM notifications WHERE channel = 'letter'")
                ).all()
            )
        message = {role: emails.get(nir) or str(letters[nir]) for role, nir in self.nir.items()}
        bounce = "2022-01-31T10:05:00+01:00"
        self.feedback = write_csv(
            folder / "feedback.csv",
            [
                {"notification_id": message["delivered"], "status": "delivered", "occurred_at": "2022-01-31T10:00:00+01:00", "detail": ""},
                *[
                    {"notification_id": message[role], "status": "permanent_failure", "occurred_at": bounce, "detail": "550 5.1.1"}
                    for role in ("bounced_opposes", "bounced_opposes_late", "bounced_activates", "bounced_silent")
                ],
                *[
                    {"notification_id": message[role], "status": "returned", "occurred_at": "2022-02-07T09:00:00+01:00", "detail": "NPAI"}
                    for role in self.LETTERS
                ],
            ],
            FEEDBACK_COLUMNS,
        )  # fmt: skip
        self.decision_rows = [
            decision("R-A", self.nir["bounced_opposes"], "opposition", "2022-02-03T10:00:00+01:00"),
            decision(
                "R-B", self.nir["bounced_opposes_late"], "opposition", "2022-03-01T10:00:00+01:00", "phone"
            ),
            decision("R-C", self.nir["returned_opposes"], "opposition", "2022-02-10T10:00:00+01:00", "mail"),
            decision(
                "R-D", self.nir["bounced_activates"], "activation", "2022-02-04T10:00:00+01:00", "phone"
            ),
            decision(
                "R-E", self.nir["returned_opposes_late"], "opposition", "2022-03-01T09:00:00+01:00", "cpam"
            ),
        ]
        self.decisions = write_decisions(folder / "decisions.csv", self.decision_rows)

    def play(self, order: tuple[str, ...]) -> dict[str, Any]:
        """Both files on 1 March in `order`, then the days after: the fallback letters posted, the
        decisions quarantined BEFORE_MESSAGE sent again by their source, a creation run."""
        engine, settings = self.engine, load_settings()
        moment = dt.datetime(2022, 3, 1, 18, 0, tzinfo=dt.UTC)
        summaries: dict[str, Any] = {}
        for kind in order:
            if kind == "decisions":
                summaries[kind] = load_decisions(
                    engine, self.decisions, as_of=LOADED_ON, run_id="decisions-1", now=moment
                )
            else:
                summaries[kind] = load_feedback(
                    engine,
                    self.feedback,
                    window=settings.opt_out_window,
                    as_of=LOADED_ON,
                    run_id="feedback-1",
                    now=moment,
                )
        print_letters(engine, settings, logical_date=NEXT_SENDING, run_id="print-2")
        post_printed_batches(engine, settings, logical_date=NEXT_SENDING, run_id="post-2")
        with engine.connect() as connection:
            held = (
                connection.execute(
                    text(
                        "SELECT q.line_no FROM quarantine q JOIN input_files f ON f.id = q.input_file_id"
                        " WHERE f.kind = 'decisions' AND q.reason_code = 'BEFORE_MESSAGE' ORDER BY q.line_no"
                    )
                )
                .scalars()
                .all()
            )
        summaries["held"] = [self.decision_rows[line - 2]["reference"] for line in held]
        if held:
            again = write_decisions(
                self.folder / "decisions-again.csv", [self.decision_rows[line - 2] for line in held]
            )
            summaries["again"] = load_decisions(
                engine,
                again,
                as_of=RESENT_ON,
                run_id="decisions-2",
                now=dt.datetime(2022, 3, 3, 18, 0, tzinfo=dt.UTC),
            )
        create_due_spaces(
            engine, CREATION_DAY, run_id="creation", now=dt.datetime(2022, 4, 5, 6, 0, tzinfo=dt.UTC)
        )
        return summaries

    def end_state(self) -> dict[str, dict[str, Any]]:
        """Per role: enrolment state, deadline (day in Paris), space, the decisions recorded for them,
        the letters posted to them."""
        role_of = {nir: role for role, nir in self.nir.items()}
        state: dict[str, dict[str, Any]] = {
            role: {"decisions": [], "letters_posted": 0, "space": None} for role in self.ROLES
        }
        with self.engine.connect() as connection:
            for nir, enrolment, deadline in connection.execute(
                text("SELECT nir, state, opt_out_deadline FROM enrolments")
            ):
                moment = as_datetime(deadline)
                state[role_of[nir]].update(state=enrolment, deadline=business_day(moment) if moment else None)
            for nir, space, cause in connection.execute(
                text("SELECT nir, state, creation_cause FROM spaces")
            ):
                state[role_of[nir]]["space"] = (space, cause)
            for nir, reference, outcome in connection.execute(
                text("SELECT nir, reference, outcome FROM decisions")
            ):
                state[role_of[nir]]["decisions"].append((reference, outcome))
            for (nir,) in connection.execute(
                text(
                    "SELECT recipient_nir FROM notifications WHERE channel = 'letter' AND status IN ('posted', 'returned')"
                )
            ):
                state[role_of[nir]]["letters_posted"] += 1
        return state


@pytest.mark.parametrize("order", list(ORDERS))
def test_decisions_and_the_feedback_they_depend_on_give_the_same_end_in_either_order(
    engine: Engine, settings_env: Path, tmp_path: Path, order: str
) -> None:
    world = _World(engine, settings_env, tmp_path)
    summaries = world.play(ORDERS[order])
    end = world.end_state()

    # The same end in either order: who opposed has no space and is `opposed` (an opposition judged
    # late against a message that did not reach them was in time: its window never ran); the
    # activation's space exists; who did not answer gets their space once their window closed.
    assert {role: end[role]["state"] for role in world.ROLES} == {
        "bounced_opposes": "opposed",
        "bounced_opposes_late": "opposed",
        "returned_opposes": "opposed",
        "returned_opposes_late": "opposed",
        "bounced_activates": "created",
        "delivered": "created",
        "bounced_silent": "created",
    }
    assert {role: end[role]["space"] for role in world.ROLES} == {
        "bounced_opposes": None, "bounced_opposes_late": None, "returned_opposes": None, "returned_opposes_late": None,
        "bounced_activates": ("active", "activation"), "delivered": ("active", "automatic"),
        "bounced_silent": ("active", "automatic"),
    }  # fmt: skip
    # Nothing lost, nothing twice: every decision is recorded once, each silent person has one
    # space, the fallback letter of whoever still waited for a message went once.
    assert sorted(reference for role in world.ROLES for reference, _ in end[role]["decisions"]) == [
        "R-A", "R-B", "R-C", "R-D", "R-E",
    ]  # fmt: skip
    assert end["delivered"]["deadline"] == dt.date(2022, 2, 28)
    assert end["bounced_silent"]["deadline"] == dt.date(2022, 4, 2)  # the fallback letter's, posted 2 March
    assert end["bounced_silent"]["letters_posted"] == 1
    assert end["returned_opposes"]["letters_posted"] == end["returned_opposes_late"]["letters_posted"] == 1

    # Where the order shows, it is the documented one (docs/rules/decisions.md, "Decisions and
    # feedback in either order").
    outcomes = {role: dict(end[role]["decisions"]) for role in world.ROLES}
    if order == "decisions_then_feedback":
        # Decided against the email's deadline before the bounce was known: recorded as they were
        # applied (late_opposed); the feedback then makes the opposition one in time.
        assert summaries["held"] == []
        assert outcomes["bounced_opposes_late"] == {"R-B": "late_opposed"}
        assert outcomes["returned_opposes_late"] == {"R-E": "late_opposed"}
        assert summaries["feedback"].late_oppositions_in_time == 2
        # Nobody who had decided waits for a message: only the silent one gets a fallback letter.
        assert [
            end[role]["letters_posted"]
            for role in ("bounced_opposes", "bounced_opposes_late", "bounced_activates")
        ] == [0, 0, 0]
        assert (
            end["bounced_opposes"]["deadline"]
            == end["bounced_opposes_late"]["deadline"]
            == dt.date(2022, 2, 28)
        )
    else:
        # After the bounce, the answers of people whose fallback letter was not posted yet are held
        # (quarantined BEFORE_MESSAGE, counted), then applied when their source sends them again
        # once the letter is out: judged against the first message, the bounced email.
        assert summaries["held"] == ["R-A", "R-B", "R-D"]
        assert summaries["decisions"].reasons == {"BEFORE_MESSAGE": 3}
        assert summaries["again"].applied == 3 and summaries["again"].quarantined == 0
        assert outcomes["bounced_opposes_late"] == {"R-B": "opposed"}
        assert outcomes["returned_opposes_late"] == {"R-E": "opposed"}  # no window ran: in time
        assert summaries["feedback"].late_oppositions_in_time == 0
        # Their fallback letters had gone before their answers were applied.
        assert [
            end[role]["letters_posted"]
            for role in ("bounced_opposes", "bounced_opposes_late", "bounced_activates")
        ] == [1, 1, 1]
        assert (
            end["bounced_opposes"]["deadline"]
            == end["bounced_opposes_late"]["deadline"]
            == dt.date(2022, 4, 2)
        )
    assert outcomes["bounced_opposes"] == {"R-A": "opposed"} and outcomes["returned_opposes"] == {
        "R-C": "opposed"
    }
    assert outcomes["bounced_activates"] == {"R-D": "activated"}
