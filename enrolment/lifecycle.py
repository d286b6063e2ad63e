"""The state machine of a person's enrolment under their decisions: pure, one function, no database.

`decide(state, event, received_at)` says what one decision does to a person: a new enrolment
state, an action on their space, an outcome to record, or a quarantine reason when the sequence
is impossible. `after(state, transition)` is the state that results, so that several decisions of
one person in one file are applied in the order they were received. Decisions intake applies the
transitions to the database; space creation (set-based SQL in enrolment/spaces.py) is the only
other way a space appears, and `automatic_creation_due` states its rule for the property tests.

Choices where the domain is silent (README "Enrolment lifecycle"):
- An opposition or an activation received before the person's message was sent is quarantined
  BEFORE_MESSAGE: the provisional code that lets a person answer travels in that message, so an
  answer dated earlier is a data error (a wrong NIR, a wrong date) rather than a decision. "Before
  the message" is: the enrolment is still planned (no message sent yet, or the email failed and
  its fallback letter is not posted yet), or the answer was received on a day (Paris) before the
  day the message that reached the person was sent (enrolments.notified_at; that stamp is noon of
  the send date by convention, so the comparison is by day: an answer on the send day itself is
  after the message). The source system sends it again once the message is out. Closures and
  deletions concern a space and are judged by the space alone.
- An opposition from someone unreachable (no message could reach them, and none is waiting to be
  sent) is honoured: it is in time (there is no deadline), and they are never re-selected by a
  later wave. So is their activation.
- An opposition received on or before the deadline but loaded after the automatic creation (a
  letter scanned late, or decisions intake running while space creation runs) wins: the space is
  withdrawn (state 'deleted') and the person is 'opposed'. A space the person activated
  themselves is closed instead, like any opposition after creation.
- A decision for a person in no wave yet (no code was ever sent) is quarantined NOT_ENROLLED: the
  source system sends it again once the person is in a wave.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from enum import StrEnum

from mes_rollout.constants import (
    DecisionEvent,
    DecisionOutcome,
    DecisionReason,
    EnrolmentState,
    SpaceCause,
    SpaceState,
)
from mes_rollout.runday import business_day


class SpaceAction(StrEnum):
    CREATE = "create"  # a new active space, cause activation (or an active one again after a withdrawal)
    CLOSE = "close"  # active -> closed, archived for 10 years
    PURGE = "purge"  # active or closed -> purge_scheduled, purged within 3 months
    WITHDRAW = "withdraw"  # automatic space of someone who opposed in time -> deleted


@dataclass(frozen=True)
class PersonState:
    """What decides the fate of a decision: the enrolment, the space and whether the person died."""

    enrolment: EnrolmentState | None  # None: in no wave yet
    deadline: dt.datetime | None = None
    space: SpaceState | None = None
    space_cause: SpaceCause | None = None
    deceased: bool = False
    notified_on: dt.date | None = None  # the day (Paris) the message that reached them was sent

    @property
    def has_active_space(self) -> bool:
        return self.space == SpaceState.ACTIVE


@dataclass(frozen=True)
class Transition:
    """What one decision does; `reason` is set (and nothing else) when it is quarantined."""

    outcome: DecisionOutcome | None = None
    enrolment: EnrolmentState | None = None  # the new state, None when unchanged
    space: SpaceAction | None = None
    reason: DecisionReason | None = None
    why: str = ""  # the audit trail's reason, in words

    @property
    def quarantined(self) -> bool:
        return self.reason is not None


_NOT_YET_DECIDED = frozenset({EnrolmentState.PLANNED, EnrolmentState.NOTIFIED, EnrolmentState.UNREACHABLE})
_OPPOSED = frozenset({EnrolmentState.OPPOSED, EnrolmentState.LATE_OPPOSED})


def in_time(state: PersonState, received_at: dt.datetime) -> bool:
    """On or before the deadline; someone no message could reach (unreachable) has no deadline,
    and their answer is in time."""
    return state.deadline is None or received_at <= state.deadline


def before_message(state: PersonState, received_at: dt.datetime) -> bool:
    """Received before the person's message was sent: still planned, or on a day (Paris) before
    the send day of the message that reached them."""
    if state.enrolment == EnrolmentState.PLANNED:
        return True
    return state.notified_on is not None and business_day(received_at) < state.notified_on


def _quarantine(reason: DecisionReason, why: str) -> Transition:
    return Transition(reason=reason, why=why)


def decide(state: PersonState, event: DecisionEvent, received_at: dt.datetime) -> Transition:
    """What the decision `event`, received at `received_at`, does to a person in `state`."""
    if state.enrolment is None:
        return _quarantine(DecisionReason.NOT_ENROLLED, "the person is in no wave yet")
    if state.enrolment == EnrolmentState.CANCELLED_DECEASED:
        return _quarantine(DecisionReason.PERSON_DECEASED, "the enrolment was cancelled: the person died")
    if event in (DecisionEvent.OPPOSITION, DecisionEvent.ACTIVATION) and before_message(state, received_at):
        return _quarantine(DecisionReason.BEFORE_MESSAGE, f"{event.value} received before the person's message was sent")
    if event == DecisionEvent.OPPOSITION:
        return _opposition(state, received_at)
    if event == DecisionEvent.ACTIVATION:
        return _activation(state)
    if event == DecisionEvent.CLOSURE:
        return _closure(state)
    return _deletion(state)


def _opposition(state: PersonState, received_at: dt.datetime) -> Transition:
    enrolment = state.enrolment
    if enrolment in _NOT_YET_DECIDED:
        if in_time(state, received_at):
            return Transition(DecisionOutcome.OPPOSED, EnrolmentState.OPPOSED, why="opposition in time")
        return Transition(
            DecisionOutcome.LATE_OPPOSED, EnrolmentState.LATE_OPPOSED, why="opposition after the deadline, before creation"
        )
    if enrolment == EnrolmentState.LATE_OPPOSED and in_time(state, received_at):
        return Transition(
            DecisionOutcome.OPPOSED, EnrolmentState.OPPOSED, why="opposition in time, loaded after a late one"
        )
    if enrolment in _OPPOSED:
        return Transition(DecisionOutcome.UNCHANGED, why="already opposed")
    if enrolment == EnrolmentState.CREATED and state.has_active_space:
        if state.space_cause == SpaceCause.AUTOMATIC and state.deadline is not None and received_at <= state.deadline:
            return Transition(
                DecisionOutcome.WITHDRAWN,
                EnrolmentState.OPPOSED,
                SpaceAction.WITHDRAW,
                why="opposition received in time, loaded after the automatic creation: space withdrawn",
            )
        return Transition(DecisionOutcome.CLOSED, EnrolmentState.CLOSED, SpaceAction.CLOSE, why="opposition after creation")
    return Transition(DecisionOutcome.UNCHANGED, why="the space is already closed")


def _activation(state: PersonState) -> Transition:
    if state.deceased:
        return _quarantine(DecisionReason.PERSON_DECEASED, "activation of a deceased person")
    if state.enrolment == EnrolmentState.CREATED:
        return Transition(DecisionOutcome.UNCHANGED, why="the space already exists")
    if state.enrolment == EnrolmentState.CLOSED:
        return _quarantine(DecisionReason.SPACE_CLOSED, "activation of a closed space")
    return Transition(DecisionOutcome.ACTIVATED, EnrolmentState.CREATED, SpaceAction.CREATE, why="activated by the person")


def _closure(state: PersonState) -> Transition:
    if state.has_active_space:
        return Transition(DecisionOutcome.CLOSED, EnrolmentState.CLOSED, SpaceAction.CLOSE, why="closure requested")
    if state.space in (SpaceState.CLOSED, SpaceState.PURGE_SCHEDULED):
        return Transition(DecisionOutcome.UNCHANGED, why="the space is already closed")
    return _quarantine(DecisionReason.NO_SPACE, "closure of a space that does not exist")


def _deletion(state: PersonState) -> Transition:
    if state.space in (SpaceState.ACTIVE, SpaceState.CLOSED):
        new_enrolment = EnrolmentState.CLOSED if state.enrolment != EnrolmentState.CLOSED else None
        return Transition(DecisionOutcome.PURGE_SCHEDULED, new_enrolment, SpaceAction.PURGE, why="deletion requested")
    if state.space == SpaceState.PURGE_SCHEDULED:
        return Transition(DecisionOutcome.UNCHANGED, why="the purge is already scheduled")
    return _quarantine(DecisionReason.NO_SPACE, "deletion of a space that does not exist")


def after(state: PersonState, transition: Transition) -> PersonState:
    """The person's state once `transition` is applied."""
    if transition.quarantined:
        return state
    new = state
    if transition.enrolment is not None:
        new = replace(new, enrolment=transition.enrolment)
    if transition.space == SpaceAction.CREATE:
        new = replace(new, space=SpaceState.ACTIVE, space_cause=SpaceCause.ACTIVATION)
    elif transition.space == SpaceAction.CLOSE:
        new = replace(new, space=SpaceState.CLOSED)
    elif transition.space == SpaceAction.PURGE:
        new = replace(new, space=SpaceState.PURGE_SCHEDULED)
    elif transition.space == SpaceAction.WITHDRAW:
        new = replace(new, space=SpaceState.DELETED)
    return new


def automatic_creation_due(state: PersonState, cutoff: dt.datetime) -> bool:
    """The rule of the daily creation run whose day starts at `cutoff`: a person reached by a message
    whose window closed before the day, who neither opposed nor died, gets their space."""
    return (
        state.enrolment == EnrolmentState.NOTIFIED
        and state.deadline is not None
        and state.deadline < cutoff
        and not state.deceased
        and state.space is None
    )


def after_automatic_creation(state: PersonState) -> PersonState:
    return replace(state, enrolment=EnrolmentState.CREATED, space=SpaceState.ACTIVE, space_cause=SpaceCause.AUTOMATIC)
