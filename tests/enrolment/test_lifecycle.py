"""The enrolment state machine, property-based: first the pure rules, then the same sequences through
the real decisions intake and space creation on a database, which must agree with the rules."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from enrolment.decisions import load_decisions
from enrolment.lifecycle import (
    PersonState,
    after,
    after_automatic_creation,
    automatic_creation_due,
    decide,
)
from enrolment.spaces import create_due_spaces
from enrolment.window import PARIS, opt_out_deadline, start_of_day
from mes_rollout.config import OptOutWindow
from mes_rollout.constants import (
    DecisionEvent,
    DecisionOutcome,
    DecisionReason,
    EnrolmentState,
    SpaceCause,
    SpaceState,
)
from mes_rollout.db import make_engine, upgrade
from tests.enrolment.builders import decision, load_people, write_decisions
from tests.factories import person_row

SEND = dt.date(2022, 1, 31)
DEADLINE = opt_out_deadline(SEND, OptOutWindow())  # 2022-02-28 23:59:59.999999 Paris
SENT_AT = dt.datetime(2022, 1, 31, 11, tzinfo=dt.UTC)  # notified_at of a message sent on SEND: noon in Paris
LAST_DAY = dt.date(2022, 2, 28)


@dataclass(frozen=True)
class Decision:
    event: DecisionEvent
    received_at: dt.datetime


@dataclass(frozen=True)
class CreationRun:
    day: dt.date


# Decisions received from 10 days before to 10 days after the deadline, often right at it.
received_times = st.one_of(
    st.integers(min_value=-10 * 24, max_value=10 * 24).map(lambda hours: DEADLINE + dt.timedelta(hours=hours)),
    st.sampled_from([DEADLINE, DEADLINE + dt.timedelta(microseconds=1), DEADLINE - dt.timedelta(seconds=1)]),
)
decisions = st.builds(Decision, st.sampled_from(list(DecisionEvent)), received_times)
creation_runs = st.builds(CreationRun, st.dates(min_value=LAST_DAY - dt.timedelta(days=5), max_value=LAST_DAY + dt.timedelta(days=5)))
# Inputs in the order they are processed: a decision may be loaded long after it was received.
input_sequences = st.lists(st.one_of(decisions, creation_runs), max_size=8)
starting_states = st.sampled_from(
    [EnrolmentState.PLANNED, EnrolmentState.NOTIFIED, EnrolmentState.UNREACHABLE]
)


def _start(start: EnrolmentState) -> PersonState:
    """Notified on SEND, or planned (no message sent yet), or unreachable (no message could reach them)."""
    if start == EnrolmentState.NOTIFIED:
        return PersonState(start, DEADLINE, notified_on=SEND)
    return PersonState(start)


def _run_model(start: EnrolmentState, inputs: list[Decision | CreationRun]) -> tuple[PersonState, list[DecisionOutcome | None]]:
    state = _start(start)
    outcomes: list[DecisionOutcome | None] = []
    for item in inputs:
        if isinstance(item, CreationRun):
            if automatic_creation_due(state, start_of_day(item.day)):
                state = after_automatic_creation(state)
            continue
        transition = decide(state, item.event, item.received_at)
        outcomes.append(transition.outcome)
        state = after(state, transition)
    return state, outcomes


def _opposed_in_time(start: EnrolmentState, inputs: list[Decision | CreationRun]) -> bool:
    """An opposition on or before the deadline, after the message (a planned person's message is
    not sent yet: their answers are quarantined BEFORE_MESSAGE, and their state never moves)."""
    if start == EnrolmentState.PLANNED:
        return False
    deadline = DEADLINE if start == EnrolmentState.NOTIFIED else None
    return any(
        isinstance(item, Decision)
        and item.event == DecisionEvent.OPPOSITION
        and (deadline is None or item.received_at <= deadline)
        for item in inputs
    )


@settings(max_examples=1000)
@given(starting_states, input_sequences)
def test_no_sequence_of_inputs_gives_a_space_to_someone_who_opposed_in_time(
    start: EnrolmentState, inputs: list[Decision | CreationRun]
) -> None:
    state, outcomes = _run_model(start, inputs)
    activated = DecisionOutcome.ACTIVATED in outcomes
    if _opposed_in_time(start, inputs) and not activated:
        assert state.space != SpaceState.ACTIVE
        assert state.enrolment in (EnrolmentState.OPPOSED, EnrolmentState.CLOSED)


@settings(max_examples=500)
@given(starting_states, input_sequences)
def test_the_state_machine_keeps_enrolment_and_space_consistent(
    start: EnrolmentState, inputs: list[Decision | CreationRun]
) -> None:
    state, _ = _run_model(start, inputs)
    assert (state.enrolment == EnrolmentState.CREATED) == (state.space == SpaceState.ACTIVE)
    if state.space in (SpaceState.CLOSED, SpaceState.PURGE_SCHEDULED):
        assert state.enrolment == EnrolmentState.CLOSED
    if state.enrolment in (EnrolmentState.UNREACHABLE, EnrolmentState.PLANNED):
        assert state.space is None  # only the person's own activation could have given them one


@settings(max_examples=300)
@given(input_sequences)
def test_a_person_whose_message_is_not_sent_yet_cannot_answer(inputs: list[Decision | CreationRun]) -> None:
    state, outcomes = _run_model(EnrolmentState.PLANNED, inputs)
    assert state == PersonState(EnrolmentState.PLANNED)
    for item in inputs:
        if isinstance(item, Decision) and item.event in (DecisionEvent.OPPOSITION, DecisionEvent.ACTIVATION):
            assert decide(state, item.event, item.received_at).reason == DecisionReason.BEFORE_MESSAGE
    assert set(outcomes) <= {None}


@given(st.lists(st.one_of(decisions, creation_runs), max_size=8), decisions)
def test_the_last_word_of_a_person_who_activates_is_theirs(inputs: list[Decision | CreationRun], last: Decision) -> None:
    state, _ = _run_model(EnrolmentState.NOTIFIED, [*inputs, Decision(DecisionEvent.ACTIVATION, last.received_at)])
    if state.enrolment != EnrolmentState.CLOSED:  # a closed space is not reopened by an activation
        assert state.space == SpaceState.ACTIVE


@pytest.mark.parametrize(
    ("state", "event", "received_at", "outcome", "reason"),
    [
        (PersonState(EnrolmentState.NOTIFIED, DEADLINE), DecisionEvent.OPPOSITION, DEADLINE, DecisionOutcome.OPPOSED, None),
        (
            PersonState(EnrolmentState.NOTIFIED, DEADLINE),
            DecisionEvent.OPPOSITION,
            DEADLINE + dt.timedelta(microseconds=1),
            DecisionOutcome.LATE_OPPOSED,
            None,
        ),
        # Before the message: still planned, or received on a day (Paris) before the send day.
        (PersonState(EnrolmentState.PLANNED), DecisionEvent.OPPOSITION, DEADLINE, None, DecisionReason.BEFORE_MESSAGE),
        (PersonState(EnrolmentState.PLANNED), DecisionEvent.ACTIVATION, DEADLINE, None, DecisionReason.BEFORE_MESSAGE),
        (
            PersonState(EnrolmentState.NOTIFIED, DEADLINE, notified_on=SEND),
            DecisionEvent.OPPOSITION,
            dt.datetime(2022, 1, 30, 22, 59, 59, tzinfo=dt.UTC),  # 30 January 23:59:59 in Paris
            None,
            DecisionReason.BEFORE_MESSAGE,
        ),
        (
            PersonState(EnrolmentState.NOTIFIED, DEADLINE, notified_on=SEND),
            DecisionEvent.OPPOSITION,
            dt.datetime(2022, 1, 30, 23, 0, tzinfo=dt.UTC),  # 31 January 00:00 in Paris: the send day
            DecisionOutcome.OPPOSED,
            None,
        ),
        (
            PersonState(EnrolmentState.OPPOSED, DEADLINE, notified_on=SEND),
            DecisionEvent.ACTIVATION,
            dt.datetime(2022, 1, 20, 10, tzinfo=dt.UTC),
            None,
            DecisionReason.BEFORE_MESSAGE,
        ),
        (
            PersonState(EnrolmentState.CREATED, DEADLINE, SpaceState.ACTIVE, SpaceCause.AUTOMATIC, notified_on=SEND),
            DecisionEvent.CLOSURE,
            dt.datetime(2022, 1, 20, 10, tzinfo=dt.UTC),
            DecisionOutcome.CLOSED,
            None,
        ),  # a closure concerns the space: judged by the space alone
        # Unreachable: no message could reach them, none is waiting: their answer stands.
        (PersonState(EnrolmentState.UNREACHABLE), DecisionEvent.OPPOSITION, DEADLINE, DecisionOutcome.OPPOSED, None),
        (PersonState(EnrolmentState.UNREACHABLE), DecisionEvent.ACTIVATION, DEADLINE, DecisionOutcome.ACTIVATED, None),
        (
            PersonState(EnrolmentState.CREATED, DEADLINE, SpaceState.ACTIVE, SpaceCause.AUTOMATIC),
            DecisionEvent.OPPOSITION,
            DEADLINE - dt.timedelta(hours=1),
            DecisionOutcome.WITHDRAWN,
            None,
        ),
        (
            PersonState(EnrolmentState.CREATED, DEADLINE, SpaceState.ACTIVE, SpaceCause.AUTOMATIC),
            DecisionEvent.OPPOSITION,
            DEADLINE + dt.timedelta(days=2),
            DecisionOutcome.CLOSED,
            None,
        ),
        (
            PersonState(EnrolmentState.CREATED, DEADLINE, SpaceState.ACTIVE, SpaceCause.ACTIVATION),
            DecisionEvent.OPPOSITION,
            DEADLINE - dt.timedelta(days=2),
            DecisionOutcome.CLOSED,
            None,
        ),
        (PersonState(EnrolmentState.OPPOSED, DEADLINE), DecisionEvent.ACTIVATION, DEADLINE, DecisionOutcome.ACTIVATED, None),
        (PersonState(None), DecisionEvent.OPPOSITION, DEADLINE, None, DecisionReason.NOT_ENROLLED),
        (PersonState(EnrolmentState.NOTIFIED, DEADLINE), DecisionEvent.CLOSURE, DEADLINE, None, DecisionReason.NO_SPACE),
        (PersonState(EnrolmentState.NOTIFIED, DEADLINE), DecisionEvent.DELETION, DEADLINE, None, DecisionReason.NO_SPACE),
        (
            PersonState(EnrolmentState.NOTIFIED, DEADLINE, deceased=True),
            DecisionEvent.ACTIVATION,
            DEADLINE,
            None,
            DecisionReason.PERSON_DECEASED,
        ),
        (PersonState(EnrolmentState.CANCELLED_DECEASED), DecisionEvent.OPPOSITION, DEADLINE, None, DecisionReason.PERSON_DECEASED),
        (
            PersonState(EnrolmentState.CLOSED, DEADLINE, SpaceState.CLOSED, SpaceCause.AUTOMATIC),
            DecisionEvent.ACTIVATION,
            DEADLINE,
            None,
            DecisionReason.SPACE_CLOSED,
        ),
        (
            PersonState(EnrolmentState.CLOSED, DEADLINE, SpaceState.CLOSED, SpaceCause.AUTOMATIC),
            DecisionEvent.DELETION,
            DEADLINE,
            DecisionOutcome.PURGE_SCHEDULED,
            None,
        ),
    ],
)
def test_decision_examples(
    state: PersonState, event: DecisionEvent, received_at: dt.datetime, outcome: DecisionOutcome | None, reason: DecisionReason | None
) -> None:
    transition = decide(state, event, received_at)
    assert (transition.outcome, transition.reason) == (outcome, reason)


# -- The same sequences through the real code (SQLite): decisions files loaded one by one, creation runs.

_references = itertools.count()


@pytest.fixture(scope="module")
def lifecycle_db(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = tmp_path_factory.mktemp("lifecycle")
    engine = make_engine(f"sqlite:///{folder / 'db.sqlite'}")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO waves (wave_id, departements, send_date, state, created_at, updated_at)"
                " VALUES ('W', '01', :send, 'approved', :now, :now)"
            ),
            {"send": SEND, "now": DEADLINE},
        )
    return engine


def _enrol(engine: Engine, folder: Path, start: EnrolmentState) -> str:
    person = person_row()
    load_people(engine, [person], folder)
    notified = start == EnrolmentState.NOTIFIED
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO enrolments (nir, wave_id, state, notified_at, opt_out_deadline, updated_at)"
                " VALUES (:nir, 'W', :state, :notified_at, :deadline, :now)"
            ),
            {
                "nir": person["nir"],
                "state": start.value,
                "notified_at": SENT_AT if notified else None,
                "deadline": DEADLINE if notified else None,
                "now": DEADLINE,
            },
        )
    return person["nir"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(starting_states, input_sequences)
def test_the_database_follows_the_state_machine(
    lifecycle_db: Engine, tmp_path: Path, start: EnrolmentState, inputs: list[Decision | CreationRun]
) -> None:
    engine = lifecycle_db
    nir = _enrol(engine, tmp_path, start)
    for item in inputs:
        if isinstance(item, CreationRun):
            create_due_spaces(engine, item.day, run_id=f"creation-{item.day}", now=DEADLINE)
            continue
        reference = f"R{next(_references)}"
        path = write_decisions(tmp_path / f"{reference}.csv", [decision(reference, nir, item.event.value, item.received_at.isoformat())])
        load_decisions(engine, path, as_of=item.received_at.astimezone(PARIS).date())
    expected, _ = _run_model(start, inputs)
    with engine.connect() as connection:
        enrolment = connection.execute(text("SELECT state FROM enrolments WHERE nir = :nir"), {"nir": nir}).scalar_one()
        space = connection.execute(
            text("SELECT state, creation_cause FROM spaces WHERE nir = :nir"), {"nir": nir}
        ).first()
        created = connection.execute(
            text("SELECT COUNT(*) FROM audit_trail WHERE entity = 'space' AND entity_id = :nir AND action IN ('created', 'create')"),
            {"nir": nir},
        ).scalar_one()
    assert enrolment == expected.enrolment
    assert (space[0] if space else None) == expected.space
    if space is not None and expected.space != SpaceState.DELETED:
        assert space[1] == expected.space_cause
    activations = sum(1 for item in inputs if isinstance(item, Decision) and item.event == DecisionEvent.ACTIVATION)
    assert created <= 1 + activations  # a space is created by the run once, or again by the person's own activation
