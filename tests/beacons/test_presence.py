"""Tests of zone presence: every row of the transition table and the refusal of every other
pair, hysteresis, enter confirmation, the grace period, timeouts through an injected time,
the challenger margin, dwell steps, kiosk proximity, forgetting, the old call shapes the
gateway uses, noisy walks with seeded Gaussian noise; then a property test of the invariants
over random sightings, ticks and forgets."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import presence
from beacons.errors import BeaconError
from beacons.presence import (
    TRANSITIONS,
    Action,
    IllegalTransition,
    LeftKiosk,
    NearKiosk,
    PresenceEvent,
    PresenceParams,
    PresenceTracker,
    Signal,
    State,
    ZoneDwelling,
    ZoneEntered,
    ZoneLeft,
    transition,
)
from beacons.rssi import Calibration, distance_m, rssi_at_m

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

# max_readings=1: the level is the last reading, so each reading is one signal of the table.
# switch_evidence_db_s=0: a move needs the margin alone (the evidence rule has its own tests).
RAW = PresenceParams(
    enter_rssi_dbm=-80,
    exit_rssi_dbm=-90,
    leave_after_s=8.0,
    switch_margin_db=4.0,
    switch_evidence_db_s=0.0,
    max_readings=1,
)
STRONG, MIDDLING, WEAK = -60, -85, -100


def feed(
    tracker: PresenceTracker,
    rssi: float,
    times: list[float],
    zone: str = "coffee",
    subject: str = "s",
    **kwargs: str | float | None,
) -> list[PresenceEvent]:
    events: list[PresenceEvent] = []
    for t in times:
        events += tracker.observe(subject, zone, rssi, t, **kwargs)  # type: ignore[arg-type]
    return events


def present(
    params: PresenceParams = RAW, zone: str = "coffee", t: float = 0.0, **kwargs: object
) -> PresenceTracker:
    """A tracker with shopper ``s`` present in ``zone``, entered (and last heard) at ``t``."""
    tracker = PresenceTracker(params, **kwargs)  # type: ignore[arg-type]
    events = feed(tracker, STRONG, [t - 0.5, t - 0.25, t], zone)
    assert events == [ZoneEntered("s", zone, t, STRONG)]
    return tracker


def leaving(params: PresenceParams = RAW, t: float = 1.0) -> PresenceTracker:
    """Shopper ``s`` present in ``coffee`` since 0, leaving on a weak reading at ``t``."""
    tracker = present(params)
    assert tracker.observe("s", "coffee", WEAK, t) == []
    assert tracker.state_of("s", "coffee") is State.LEAVING
    return tracker


# --- the table itself -----------------------------------------------------------------


def test_the_docstring_table_is_the_table() -> None:
    assert presence.__doc__ is not None
    section = presence.__doc__.split("The table (``TRANSITIONS``), row by row:")[1]
    section = section.split("Every other pair")[0]
    states = {s.value for s in State}
    signals = {g.value for g in Signal}
    documented = {}
    for line in section.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in states and words[1] in signals:
            documented[(State(words[0]), Signal(words[1]))] = State(words[2])

    assert documented == {key: row[0] for key, row in TRANSITIONS.items()}


@pytest.mark.parametrize(("key", "row"), list(TRANSITIONS.items()))
def test_transition_returns_the_row(key: tuple[State, Signal], row: tuple[State, Action]) -> None:
    assert transition(*key) == row


ILLEGAL = [(s, g) for s in State for g in Signal if (s, g) not in TRANSITIONS]


def test_the_illegal_pairs_are_the_expected_ones() -> None:
    assert set(ILLEGAL) == {
        (State.ABSENT, Signal.SILENT),
        (State.ABSENT, Signal.EXPIRED),
        (State.ABSENT, Signal.MOVED),
        (State.ENTERING, Signal.EXPIRED),
        (State.ENTERING, Signal.MOVED),
        (State.PRESENT, Signal.CONFIRMED),
        (State.PRESENT, Signal.EXPIRED),
        (State.LEAVING, Signal.CONFIRMED),
        (State.LEAVING, Signal.SILENT),
    }


@pytest.mark.parametrize(("state", "signal"), ILLEGAL)
def test_an_illegal_transition_is_refused(state: State, signal: Signal) -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(state, signal)

    assert isinstance(caught.value, BeaconError)
    assert (caught.value.state, caught.value.signal) == (state, signal)
    assert state.value in str(caught.value)
    assert signal.value in str(caught.value)


def test_zone_entered_and_zone_left_come_only_from_the_rows_that_say_so() -> None:
    for (state, _signal), (next_state, action) in TRANSITIONS.items():
        if action is Action.ENTER:
            assert state in {State.ABSENT, State.ENTERING}
            assert next_state is State.PRESENT
        if action is Action.LEAVE:
            assert state in {State.PRESENT, State.LEAVING}
            assert next_state is State.ABSENT
        if next_state is State.PRESENT and state in {State.ABSENT, State.ENTERING}:
            assert action is Action.ENTER
        if next_state is State.ABSENT and state in {State.PRESENT, State.LEAVING}:
            assert action is Action.LEAVE


# --- rows from absent ----------------------------------------------------------------


def test_absent_strong_starts_entering_without_an_event() -> None:
    tracker = PresenceTracker(RAW)

    assert tracker.observe("s", "coffee", STRONG, 0.0) == []
    assert tracker.state_of("s", "coffee") is State.ENTERING
    assert tracker.zone_of("s") is None
    assert tracker.present_in("coffee") == []


def test_absent_confirmed_enters_when_one_reading_confirms() -> None:
    tracker = PresenceTracker(replace(RAW, enter_confirm_readings=1))

    assert tracker.observe("s", "coffee", STRONG, 1.5) == [ZoneEntered("s", "coffee", 1.5, STRONG)]
    assert tracker.zone_of("s") == "coffee"
    assert tracker.present_in("coffee") == ["s"]


def test_absent_confirmed_enters_when_confirmation_takes_no_time() -> None:
    tracker = PresenceTracker(replace(RAW, enter_confirm_s=0.0))

    assert tracker.observe("s", "coffee", STRONG, 1.5) == [ZoneEntered("s", "coffee", 1.5, STRONG)]


@pytest.mark.parametrize("rssi", [MIDDLING, WEAK])
def test_absent_middling_or_weak_stays_absent(rssi: int) -> None:
    tracker = PresenceTracker(RAW)

    assert feed(tracker, rssi, [0.0, 0.1, 0.2, 0.3, 0.4]) == []
    assert tracker.state_of("s", "coffee") is State.ABSENT
    assert tracker.zone_of("s") is None


def test_absent_timeout_drops_the_pair_without_an_event() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "coffee", WEAK, 0.0)
    assert tracker.pairs_held() == 1

    assert tracker.tick(7.9) == []
    assert tracker.pairs_held() == 1
    assert tracker.tick(8.0) == []
    assert tracker.pairs_held() == 0


def test_absent_forgotten_emits_nothing_and_keeps_nothing() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "coffee", WEAK, 0.0)

    assert tracker.forget("s", 1.0) == []
    assert tracker.pairs_held() == 0


# --- rows from entering --------------------------------------------------------------


def test_entering_strong_counts_and_stays_entering() -> None:
    tracker = PresenceTracker(RAW)

    assert feed(tracker, STRONG, [0.0, 0.1]) == []
    assert tracker.state_of("s", "coffee") is State.ENTERING


def test_entering_confirmed_by_count_enters_at_the_confirming_reading() -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.1])

    events = tracker.observe("s", "coffee", -70, 0.2)

    assert events == [ZoneEntered("s", "coffee", 0.2, -70.0)]
    assert tracker.state_of("s", "coffee") is State.PRESENT


def test_entering_confirmed_by_time_needs_fewer_readings() -> None:
    tracker = PresenceTracker(RAW)  # 3 readings or 2 s

    assert tracker.observe("s", "coffee", STRONG, 10.0) == []
    assert tracker.observe("s", "coffee", STRONG, 11.9) == []
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "coffee", STRONG, 10.0)
    assert tracker.observe("s", "coffee", STRONG, 12.0) == [
        ZoneEntered("s", "coffee", 12.0, STRONG)
    ]


@pytest.mark.parametrize(("rssi", "signal"), [(MIDDLING, "middling"), (WEAK, "weak")])
def test_entering_middling_or_weak_falls_back_to_absent(rssi: int, signal: str) -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.1])

    assert tracker.observe("s", "coffee", rssi, 0.2) == [], signal
    assert tracker.state_of("s", "coffee") is State.ABSENT
    # Confirmation starts over: two more strong readings are not enough.
    assert feed(tracker, STRONG, [0.3, 0.4]) == []
    assert tracker.observe("s", "coffee", STRONG, 0.5) == [ZoneEntered("s", "coffee", 0.5, STRONG)]


def test_entering_silent_falls_back_to_absent() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "coffee", STRONG, 0.0)

    assert tracker.tick(4.9) == []
    assert tracker.state_of("s", "coffee") is State.ENTERING
    assert tracker.tick(5.0) == []
    assert tracker.state_of("s", "coffee") is State.ABSENT


def test_entering_timeout_drops_the_pair() -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.1])

    assert tracker.tick(8.1) == []
    assert tracker.state_of("s", "coffee") is State.ABSENT
    assert tracker.pairs_held() == 0


def test_entering_forgotten_emits_nothing() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "coffee", STRONG, 0.0)

    assert tracker.forget("s", 0.5) == []
    assert tracker.state_of("s", "coffee") is State.ABSENT
    assert tracker.pairs_held() == 0


# --- rows from present ---------------------------------------------------------------


@pytest.mark.parametrize("rssi", [STRONG, -80, MIDDLING, -90])
def test_present_strong_or_middling_stays_present(rssi: int) -> None:
    tracker = present()

    assert feed(tracker, rssi, [1.0, 2.0, 3.0]) == []
    assert tracker.state_of("s", "coffee") is State.PRESENT
    assert tracker.zone_of("s") == "coffee"


def test_present_weak_starts_leaving_without_an_event() -> None:
    tracker = present()

    assert tracker.observe("s", "coffee", WEAK, 1.0) == []
    assert tracker.state_of("s", "coffee") is State.LEAVING
    # Still in the zone during the grace period.
    assert tracker.zone_of("s") == "coffee"
    assert tracker.present_in("coffee") == ["s"]


def test_present_silent_starts_leaving_without_an_event() -> None:
    tracker = present()

    assert tracker.tick(4.9) == []
    assert tracker.state_of("s", "coffee") is State.PRESENT
    assert tracker.tick(5.0) == []
    assert tracker.state_of("s", "coffee") is State.LEAVING
    assert tracker.zone_of("s") == "coffee"


def test_present_moved_leaves_for_the_new_zone() -> None:
    tracker = present(zone="entrance")

    events = feed(tracker, -50, [1.0, 1.1, 1.2])

    assert events == [
        ZoneLeft("s", "entrance", 1.2, "moved"),
        ZoneEntered("s", "coffee", 1.2, -50.0),
    ]
    assert tracker.state_of("s", "entrance") is State.ABSENT
    assert tracker.zone_of("s") == "coffee"
    assert tracker.present_in("entrance") == []


def test_present_timeout_leaves() -> None:
    tracker = present()

    assert tracker.tick(8.0) == [ZoneLeft("s", "coffee", 8.0, "timeout")]
    assert tracker.zone_of("s") is None
    assert tracker.pairs_held() == 0


def test_present_forgotten_leaves() -> None:
    tracker = present()

    assert tracker.forget("s", 4.0) == [ZoneLeft("s", "coffee", 4.0, "forgotten")]
    assert tracker.zone_of("s") is None


# --- rows from leaving ---------------------------------------------------------------


@pytest.mark.parametrize("rssi", [STRONG, MIDDLING])
def test_leaving_strong_or_middling_recovers_without_events(rssi: int) -> None:
    tracker = leaving()

    assert tracker.observe("s", "coffee", rssi, 3.9) == []
    assert tracker.state_of("s", "coffee") is State.PRESENT
    # The grace period is over: a later weak reading starts a new one.
    assert tracker.observe("s", "coffee", WEAK, 5.0) == []
    assert tracker.tick(7.9) == []
    assert tracker.tick(8.0) == [ZoneLeft("s", "coffee", 8.0, "weak")]


def test_leaving_weak_stays_leaving_within_the_grace_period() -> None:
    tracker = leaving()

    assert feed(tracker, WEAK, [2.0, 3.0, 3.9]) == []
    assert tracker.state_of("s", "coffee") is State.LEAVING
    assert tracker.zone_of("s") == "coffee"


def test_leaving_expired_by_tick_leaves_as_weak() -> None:
    tracker = leaving()  # weak since 1.0, grace 3 s

    assert tracker.tick(3.9) == []
    assert tracker.tick(4.0) == [ZoneLeft("s", "coffee", 4.0, "weak")]
    assert tracker.zone_of("s") is None


def test_leaving_expired_by_a_weak_reading_leaves_at_that_reading() -> None:
    tracker = leaving()

    assert tracker.observe("s", "coffee", WEAK, 4.5) == [ZoneLeft("s", "coffee", 4.5, "weak")]
    assert tracker.state_of("s", "coffee") is State.ABSENT


def test_a_recovery_after_the_grace_period_is_too_late() -> None:
    tracker = leaving()  # nobody ticked since

    events = tracker.observe("s", "coffee", STRONG, 4.5)

    assert events == [ZoneLeft("s", "coffee", 4.5, "weak")]
    assert tracker.state_of("s", "coffee") is State.ENTERING


def test_leaving_expired_after_silence_leaves_as_timeout() -> None:
    params = replace(RAW, leave_after_s=100.0)
    tracker = present(params)
    tracker.tick(5.5)  # silent since 0: leaving from 5.5
    assert tracker.state_of("s", "coffee") is State.LEAVING

    assert tracker.tick(8.4) == []
    assert tracker.tick(8.5) == [ZoneLeft("s", "coffee", 8.5, "timeout")]


def test_leaving_moved_leaves_for_the_new_zone() -> None:
    tracker = leaving()

    # The weak zone is beaten by far more than the margin.
    events = feed(tracker, -79, [1.5, 1.6, 1.7], zone="bakery")

    assert events == [ZoneLeft("s", "coffee", 1.7, "moved"), ZoneEntered("s", "bakery", 1.7, -79)]


def test_leaving_timeout_leaves() -> None:
    params = replace(RAW, leave_grace_s=100.0)
    tracker = leaving(params, t=1.0)

    assert tracker.tick(8.9) == []
    assert tracker.tick(9.0) == [ZoneLeft("s", "coffee", 9.0, "timeout")]
    assert tracker.pairs_held() == 0


def test_leaving_forgotten_leaves() -> None:
    tracker = leaving()

    assert tracker.forget("s", 2.0) == [ZoneLeft("s", "coffee", 2.0, "forgotten")]


# --- hysteresis ---------------------------------------------------------------------


@pytest.mark.parametrize("rssi", [-80.5, -85, -90])
def test_a_level_between_the_thresholds_neither_enters_nor_leaves(rssi: float) -> None:
    absent = PresenceTracker(RAW)
    assert feed(absent, rssi, [0.0, 0.1, 0.2, 0.3]) == []
    assert absent.zone_of("s") is None

    tracker = present()
    assert feed(tracker, rssi, [1.0, 1.1, 1.2, 5.0, 9.0]) == []
    assert tracker.state_of("s", "coffee") is State.PRESENT


def test_the_enter_threshold_is_inclusive() -> None:
    tracker = PresenceTracker(RAW)

    assert feed(tracker, -80, [0.0, 0.1, 0.2]) == [ZoneEntered("s", "coffee", 0.2, -80.0)]


def test_just_below_the_exit_threshold_starts_leaving() -> None:
    tracker = present()

    assert tracker.observe("s", "coffee", -90.5, 1.0) == []
    assert tracker.state_of("s", "coffee") is State.LEAVING


# --- enter confirmation with the real filter ---------------------------------------------


def test_a_single_strong_packet_does_not_enter() -> None:
    tracker = PresenceTracker(RAW)

    assert tracker.observe("s", "coffee", -40, 0.0) == []
    assert feed(tracker, MIDDLING, [0.5, 1.0, 1.5]) == []
    assert tracker.tick(10.0) == []
    assert tracker.zone_of("s") is None


def test_a_lucky_packet_among_weak_readings_does_not_enter() -> None:
    tracker = PresenceTracker(PresenceParams())
    assert feed(tracker, -95, [i * 0.1 for i in range(10)]) == []

    assert tracker.observe("s", "coffee", -45, 1.0) == []
    assert tracker.state_of("s", "coffee") is State.ABSENT
    assert feed(tracker, -95, [1.1, 1.2, 1.3]) == []
    assert tracker.zone_of("s") is None


def test_a_lucky_first_packet_does_not_enter() -> None:
    tracker = PresenceTracker(PresenceParams())

    events = tracker.observe("s", "coffee", -55, 0.0)
    events += feed(tracker, -95, [0.1, 0.2, 0.3, 0.4])

    assert events == []
    assert tracker.zone_of("s") is None


def test_sustained_strong_readings_enter_with_the_filtered_level() -> None:
    tracker = PresenceTracker(PresenceParams())
    feed(tracker, -95, [0.0, 0.1, 0.2, 0.3])

    events = feed(tracker, -60, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2])

    assert len(events) == 1
    entered = events[0]
    assert isinstance(entered, ZoneEntered)
    assert entered.rssi >= -80
    # The level is a mean over the window, not the last reading.
    assert entered.rssi < -60


# --- the time of each event ---------------------------------------------------------


def test_events_carry_the_time_of_the_advertisement_that_caused_them() -> None:
    tracker = PresenceTracker(RAW)
    # A scanner-node batch: newest first, each reading back-dated by its age.
    events = feed(tracker, STRONG, [100.2, 100.1, 100.0])

    assert events == [ZoneEntered("s", "coffee", 100.0, STRONG)]
    assert tracker.observe("s", "coffee", WEAK, 100.5) == []
    assert tracker.observe("s", "coffee", WEAK, 103.6) == [ZoneLeft("s", "coffee", 103.6, "weak")]


def test_tick_events_carry_the_tick_time() -> None:
    tracker = present(replace(RAW, dwell_steps_s=(3.0,)))
    tracker.observe("s", "coffee", STRONG, 2.0)

    assert tracker.tick(4.25) == [ZoneDwelling("s", "coffee", 4.25, 3.0)]
    assert tracker.tick(7.0) == []  # silent: leaving
    assert tracker.tick(10.5) == [ZoneLeft("s", "coffee", 10.5, "timeout")]


def test_a_reading_older_than_its_window_is_ignored() -> None:
    tracker = present()
    tracker.observe("s", "coffee", STRONG, 4.0)

    assert tracker.observe("s", "coffee", WEAK, -1.0) == []  # 5 s before the newest reading
    assert tracker.state_of("s", "coffee") is State.PRESENT


# --- timeouts -----------------------------------------------------------------------


def test_no_timeout_before_leave_after_s() -> None:
    tracker = present()

    assert tracker.tick(7.99) == []
    assert tracker.zone_of("s") == "coffee"
    assert tracker.tick(8.0) == [ZoneLeft("s", "coffee", 8.0, "timeout")]


def test_a_sighting_restarts_the_timeout() -> None:
    tracker = present()
    tracker.observe("s", "coffee", MIDDLING, 5.0)

    assert tracker.tick(12.9) == []
    assert tracker.tick(13.0) == [ZoneLeft("s", "coffee", 13.0, "timeout")]


def test_a_late_sighting_does_not_move_last_seen_back() -> None:
    tracker = present()
    tracker.observe("s", "coffee", MIDDLING, 5.0)
    tracker.observe("s", "coffee", MIDDLING, 2.0)  # delivered late

    assert tracker.tick(12.9) == []
    assert tracker.tick(13.0) == [ZoneLeft("s", "coffee", 13.0, "timeout")]


def test_a_timeout_is_reported_once() -> None:
    tracker = present()

    assert len(tracker.tick(8.0)) == 1
    assert tracker.tick(9.0) == []
    assert tracker.tick(100.0) == []


def test_timeouts_are_per_subject() -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.25, 0.5], subject="a")
    feed(tracker, STRONG, [5.0, 5.25, 5.5], subject="b")

    assert tracker.tick(8.5) == [ZoneLeft("a", "coffee", 8.5, "timeout")]
    assert tracker.present_in("coffee") == ["b"]


def test_leave_after_s_is_taken_from_the_params() -> None:
    tracker = present(replace(RAW, leave_after_s=2.0))

    assert tracker.tick(1.9) == []
    assert tracker.tick(2.0) == [ZoneLeft("s", "coffee", 2.0, "timeout")]


def test_an_overdue_timeout_is_applied_before_a_late_reading_without_ticks() -> None:
    tracker = present()

    events = tracker.observe("s", "coffee", STRONG, 60.0)

    assert events == [ZoneLeft("s", "coffee", 60.0, "timeout")]
    assert tracker.state_of("s", "coffee") is State.ENTERING


@pytest.mark.parametrize(("rssi", "t"), [(math.nan, 1.0), (-60.0, math.nan), (math.inf, 1.0)])
def test_a_non_finite_reading_is_ignored_and_not_remembered(rssi: float, t: float) -> None:
    tracker = PresenceTracker(RAW)

    assert tracker.observe("s", "coffee", rssi, t) == []
    assert tracker.pairs_held() == 0
    assert tracker.tick(100.0) == []


def test_silent_pairs_are_forgotten_and_nothing_grows() -> None:
    tracker = PresenceTracker(PresenceParams(), kiosk_of_scanner={"k": "kiosk-1"})
    for i in range(200):
        subject = f"shopper-{i}"
        for j in range(50):
            t = i * 0.01 + j * 0.02
            tracker.observe(subject, "coffee", -60, t, scanner="k")
            tracker.observe(subject, "bakery", -75, t, scanner="b")
    assert tracker.pairs_held() == 400

    events = tracker.tick(20.0)

    assert tracker.pairs_held() == 0
    assert sum(isinstance(e, ZoneLeft) for e in events) == 200
    assert sum(isinstance(e, LeftKiosk) for e in events) == 200
    assert tracker.present_in("coffee") == []
    assert tracker.tick(30.0) == []


# --- moving between zones ------------------------------------------------------------


def test_moving_needs_the_switch_margin() -> None:
    tracker = present(zone="entrance")  # at -60
    tracker.observe("s", "entrance", -70, 0.3)

    # Strong on their own, but only 2 dB (then 3.9 dB) better than the current zone.
    assert feed(tracker, -68, [0.4, 0.5, 0.6, 0.7]) == []
    assert feed(tracker, -66.1, [0.8, 0.9, 1.0, 1.1]) == []
    assert tracker.zone_of("s") == "entrance"

    events = feed(tracker, -66, [1.2, 1.3, 1.4])

    assert events == [ZoneLeft("s", "entrance", 1.4, "moved"), ZoneEntered("s", "coffee", 1.4, -66)]
    assert tracker.present_in("entrance") == []
    assert tracker.present_in("coffee") == ["s"]


def test_switch_margin_is_taken_from_the_params() -> None:
    tracker = present(replace(RAW, switch_margin_db=10.0), zone="entrance")
    tracker.observe("s", "entrance", -70, 0.3)

    assert feed(tracker, -61, [0.4, 0.5, 0.6]) == []
    assert [type(e) for e in feed(tracker, -60, [0.7, 0.8, 0.9])] == [ZoneLeft, ZoneEntered]


def test_moving_back_needs_the_margin_over_the_new_zone() -> None:
    tracker = present(zone="entrance")
    tracker.observe("s", "entrance", -70, 0.3)
    feed(tracker, -66, [0.4, 0.5, 0.6])
    assert tracker.zone_of("s") == "coffee"

    assert feed(tracker, -64, [0.7, 0.8, 0.9, 1.0], zone="entrance") == []
    assert feed(tracker, -62, [1.1, 1.2, 1.3], zone="entrance") == [
        ZoneLeft("s", "coffee", 1.3, "moved"),
        ZoneEntered("s", "entrance", 1.3, -62),
    ]


EVIDENCE = replace(RAW, switch_margin_db=1.0, switch_evidence_db_s=16.0)


@pytest.mark.parametrize(
    ("rssi", "confirmed_at"),
    [
        (-52.0, 3.5),  # 7 dB beyond the margin: 3.5 dB s a reading, 17.5 at the sixth
        (-44.0, 2.5),  # 15 dB beyond: 7.5 dB s a reading, 22.5 at the fourth
    ],
)
def test_a_move_needs_the_lead_beyond_the_margin_integrated_over_time(
    rssi: float, confirmed_at: float
) -> None:
    tracker = present(EVIDENCE, zone="entrance")  # at -60, held by its one-reading window
    times = [1.0 + 0.5 * i for i in range(6)]

    events = feed(tracker, rssi, times)

    assert events == [
        ZoneLeft("s", "entrance", confirmed_at, "moved"),
        ZoneEntered("s", "coffee", confirmed_at, rssi),
    ]


def test_a_lead_within_the_margin_starts_the_evidence_again() -> None:
    tracker = present(EVIDENCE, zone="entrance")

    assert feed(tracker, -52, [1.0, 1.5, 2.0, 2.5, 3.0]) == []  # 14 dB s of 16
    assert feed(tracker, -59.5, [3.5]) == []  # 0.5 dB ahead: within the 1 dB margin
    assert feed(tracker, -52, [3.7, 4.2, 4.7]) == []  # 7 dB s so far, counted afresh
    assert tracker.zone_of("s") == "entrance"


def test_without_a_current_zone_no_evidence_is_needed() -> None:
    tracker = PresenceTracker(EVIDENCE)

    assert feed(tracker, -70, [0.0, 0.1, 0.2]) == [ZoneEntered("s", "coffee", 0.2, -70)]


def test_a_silent_current_zone_does_not_hold_the_shopper() -> None:
    tracker = present(zone="entrance")  # last heard at 0.2, at -60

    # 6 s later the entrance has no readings in its window: no margin to beat.
    events = feed(tracker, -75, [6.2, 6.3, 6.4])

    assert events == [ZoneLeft("s", "entrance", 6.4, "moved"), ZoneEntered("s", "coffee", 6.4, -75)]


def test_old_zone_does_not_leave_twice_after_a_move() -> None:
    tracker = present(zone="entrance")
    feed(tracker, -50, [1.0, 1.1, 1.2])

    assert tracker.observe("s", "entrance", WEAK, 2.0) == []
    tracker.observe("s", "coffee", -50, 6.0)
    assert tracker.tick(10.0) == []  # the entrance pair times out, silently
    assert tracker.zone_of("s") == "coffee"


def test_subjects_do_not_affect_each_other() -> None:
    tracker = present(zone="entrance")

    assert feed(tracker, -79, [0.5, 0.6, 0.7], zone="coffee", subject="b") == [
        ZoneEntered("b", "coffee", 0.7, -79)
    ]
    assert tracker.zone_of("s") == "entrance"


def test_a_zone_with_several_scanners_takes_the_strongest() -> None:
    tracker = PresenceTracker(RAW)

    events: list[PresenceEvent] = []
    for t in (0.0, 0.1, 0.2):
        events += tracker.observe("s", "coffee", -95, t, scanner="node-a")
        events += tracker.observe("s", "coffee", -65, t + 0.05, scanner="node-b")

    # Every reading in the zone re-evaluates its level, the weak scanner's ones included:
    # -95 (weak), then -65 three times in a row, confirmed by node-b's second reading.
    assert events == [ZoneEntered("s", "coffee", 0.1 + 0.05, -65.0)]


def test_each_scanner_has_its_own_window() -> None:
    tracker = PresenceTracker(PresenceParams())
    for i in range(10):
        t = i * 0.1
        tracker.observe("s", "coffee", -95, t, scanner="node-far")
        tracker.observe("s", "coffee", -65, t + 0.05, scanner="node-near")

    # Mixed into one window the level would be -80 or so; per scanner it is -65.
    assert tracker.zone_of("s") == "coffee"


def test_the_scanner_defaults_to_the_zone_name() -> None:
    tracker = PresenceTracker(RAW, kiosk_of_scanner={"coffee": "kiosk-1"})

    events = feed(tracker, -59, [0.0])

    assert events == [NearKiosk("s", "kiosk-1", 0.0, 1.0)]


def test_calibration_offsets_are_added_per_scanner() -> None:
    tracker = PresenceTracker(RAW, calibration=Calibration({"node-low": 6.0}))

    events = feed(tracker, -84, [0.0, 0.1, 0.2], scanner="node-low")
    events += feed(tracker, -84, [0.0, 0.1, 0.2], subject="t", scanner="node-other")

    assert events == [ZoneEntered("s", "coffee", 0.2, -78.0)]


# --- noise ------------------------------------------------------------------------------


def _walk(mean: float, seed: int, rate_hz: float, minutes: float = 10.0) -> list[float]:
    rng = random.Random(seed)
    return [mean + rng.gauss(0.0, 5.0) for _ in range(int(minutes * 60 * rate_hz))]


def _flaps(params: PresenceParams, readings: list[float], rate_hz: float) -> int:
    tracker = PresenceTracker(params)
    changes = 0
    for i, rssi in enumerate(readings):
        t = i / rate_hz
        events = tracker.observe("s", "aisle", rssi, t) + tracker.tick(t)
        changes += sum(isinstance(e, ZoneEntered | ZoneLeft) for e in events)
    return changes


def _naive_ema_flaps(readings: list[float], alpha: float = 0.4) -> int:
    """The previous design: an exponential moving average against the same thresholds."""
    level: float | None = None
    inside, changes = False, 0
    for rssi in readings:
        level = rssi if level is None else alpha * rssi + (1 - alpha) * level
        if (not inside and level >= -80) or (inside and level < -90):
            inside, changes = not inside, changes + 1
    return changes


@pytest.mark.parametrize("metres", [3.0, 6.0, 8.0, 12.0, 16.0, 22.0, 30.0])
@pytest.mark.parametrize(("rate_hz", "bound"), [(10.0, 1), (2.0, 1), (1.0, 4)])
def test_a_shopper_standing_still_in_5_db_noise_does_not_flap(
    metres: float, rate_hz: float, bound: int
) -> None:
    mean = rssi_at_m(metres)  # -69.5 dBm at 3 m .. -91.5 dBm at 30 m; the edge is near 16 m
    readings = _walk(mean, seed=int(metres * 10 + rate_hz), rate_hz=rate_hz)

    # Over 10 minutes: at most the one entry at 2 Hz and more; at 1 Hz (5 readings in a
    # window) a shopper standing right on the zone edge may make one extra visit.
    assert _flaps(PresenceParams(), readings, rate_hz) <= bound


def test_the_window_flaps_far_less_than_a_moving_average_between_the_thresholds() -> None:
    readings = _walk(-85.0, seed=1, rate_hz=2.0)

    # The time-weighted window (1.5 s time constant) averages fewer readings than a plain
    # 5 s mean, so 5 dB below the enter threshold may cost one spurious entry in 10 minutes;
    # the hysteresis then holds it (no exit, no second entry).
    assert _flaps(PresenceParams(), readings, 2.0) <= 1
    assert _flaps(PresenceParams(time_constant_s=0.0), readings, 2.0) == 0
    assert _naive_ema_flaps(readings) >= 10


def _moves(params: PresenceParams, difference_db: float, seed: int) -> int:
    rng = random.Random(seed)
    tracker = PresenceTracker(params)
    moves = 0
    for i in range(1200):  # 10 minutes, each zone heard twice a second
        t = i / 2.0
        events = tracker.observe("s", "coffee", -70 + rng.gauss(0, 5), t)
        events += tracker.observe("s", "bakery", -70 - difference_db + rng.gauss(0, 5), t + 0.25)
        events += tracker.tick(t + 0.25)
        moves += sum(isinstance(e, ZoneLeft) and e.reason == "moved" for e in events)
    return moves


@pytest.mark.parametrize("difference_db", [0.0, 1.0])
def test_the_challenger_margin_prevents_ping_pong_at_near_equal_signal(
    difference_db: float,
) -> None:
    with_margin = sum(_moves(PresenceParams(), difference_db, seed) for seed in range(3))
    no_rule = PresenceParams(switch_margin_db=0.0, switch_evidence_db_s=0.0)
    without_margin = sum(_moves(no_rule, difference_db, seed) for seed in range(3))
    margin_alone = PresenceParams(switch_evidence_db_s=0.0)
    without_evidence = sum(_moves(margin_alone, difference_db, seed) for seed in range(3))

    assert with_margin <= 30  # about once a minute at worst over 3 x 10 minutes
    assert without_margin >= 4 * with_margin
    assert without_evidence > with_margin


# --- dwell --------------------------------------------------------------------------


DWELL = replace(RAW, dwell_steps_s=(10, 30, 60))


def test_dwell_events_at_each_step() -> None:
    tracker = present(DWELL)

    events = feed(tracker, STRONG, [float(t) for t in range(1, 71)])

    assert events == [
        ZoneDwelling("s", "coffee", 10.0, 10.0),
        ZoneDwelling("s", "coffee", 30.0, 30.0),
        ZoneDwelling("s", "coffee", 60.0, 60.0),
    ]


def test_a_tick_reports_a_dwell_step_at_the_tick_time() -> None:
    tracker = present(DWELL)
    feed(tracker, STRONG, [4.0, 8.0])

    assert tracker.tick(9.9) == []
    assert tracker.tick(10.5) == [ZoneDwelling("s", "coffee", 10.5, 10.0)]
    assert tracker.tick(11.0) == []


def test_a_long_gap_reports_every_step_crossed_in_order() -> None:
    params = replace(DWELL, window_s=100.0, leave_after_s=200.0)
    tracker = present(params)

    assert tracker.tick(65.0) == [
        ZoneDwelling("s", "coffee", 65.0, 10.0),
        ZoneDwelling("s", "coffee", 65.0, 30.0),
        ZoneDwelling("s", "coffee", 65.0, 60.0),
    ]


def test_no_dwell_while_leaving_and_the_step_comes_on_recovery() -> None:
    tracker = present(DWELL)
    feed(tracker, STRONG, [2.0, 4.0, 6.0, 8.0])

    assert tracker.observe("s", "coffee", WEAK, 9.0) == []
    assert tracker.observe("s", "coffee", WEAK, 10.0) == []
    assert tracker.tick(10.5) == []
    assert tracker.observe("s", "coffee", STRONG, 11.0) == [ZoneDwelling("s", "coffee", 11.0, 10.0)]


def test_a_new_visit_counts_dwell_from_its_own_entry() -> None:
    tracker = present(DWELL)
    feed(tracker, STRONG, [5.0, 10.0])
    tracker.forget("s", 11.0)

    events = feed(tracker, STRONG, [20.0, 20.1, 20.2, 25.0, 30.0, 30.2])

    assert events == [
        ZoneEntered("s", "coffee", 20.2, STRONG),
        ZoneDwelling("s", "coffee", 30.2, 10.0),
    ]


def test_no_dwell_steps_by_default() -> None:
    assert PresenceParams().dwell_steps_s == ()
    tracker = present()

    assert feed(tracker, STRONG, [float(t) for t in range(1, 100)]) == []


# --- kiosk proximity ------------------------------------------------------------------


KIOSKS = {"node-kiosk": "kiosk-1"}
NEAR = -60.0  # 1.11 m with -59 dBm at 1 m and n = 2.2
BETWEEN = -66.0  # 2.08 m: inside the hysteresis band
FAR = -70.0  # 3.16 m


def kiosk_tracker(params: PresenceParams = RAW, **kwargs: object) -> PresenceTracker:
    return PresenceTracker(params, kiosk_of_scanner=KIOSKS, **kwargs)  # type: ignore[arg-type]


def kiosk_events(events: list[PresenceEvent]) -> list[PresenceEvent]:
    return [e for e in events if isinstance(e, NearKiosk | LeftKiosk)]


def test_near_and_left_kiosk_with_hysteresis() -> None:
    tracker = kiosk_tracker()

    def at(rssi: float, t: float) -> list[PresenceEvent]:
        return kiosk_events(tracker.observe("s", "coffee", rssi, t, scanner="node-kiosk"))

    assert at(FAR, 0.0) == []
    assert at(BETWEEN, 0.1) == []  # within 2.5 m, but not yet within 1.5 m
    assert at(NEAR, 0.2) == [NearKiosk("s", "kiosk-1", 0.2, distance_m(NEAR))]
    assert at(BETWEEN, 0.3) == []  # beyond 1.5 m, but not yet beyond 2.5 m
    assert at(NEAR, 0.4) == []  # no second NearKiosk
    assert at(FAR, 0.5) == [LeftKiosk("s", "kiosk-1", 0.5)]
    assert at(BETWEEN, 0.6) == []
    assert at(FAR, 0.7) == []
    assert at(NEAR, 0.8) == [NearKiosk("s", "kiosk-1", 0.8, distance_m(NEAR))]


def test_the_near_band_edges() -> None:
    tracker = kiosk_tracker()

    def at(rssi: float, t: float) -> list[PresenceEvent]:
        return kiosk_events(tracker.observe("s", "coffee", rssi, t, scanner="node-kiosk"))

    assert at(rssi_at_m(1.51), 0.0) == []
    assert len(at(rssi_at_m(1.49), 0.1)) == 1
    assert at(rssi_at_m(2.49), 0.2) == []
    assert at(rssi_at_m(2.51), 0.3) == [LeftKiosk("s", "kiosk-1", 0.3)]


def test_a_single_strong_packet_is_not_near_the_kiosk() -> None:
    tracker = kiosk_tracker(PresenceParams())

    def at(rssi: float, t: float) -> list[PresenceEvent]:
        return kiosk_events(tracker.observe("s", "coffee", rssi, t, scanner="node-kiosk"))

    assert at(NEAR, 0.0) == []
    assert at(NEAR, 0.1) == []
    assert [type(e) for e in at(NEAR, 0.2)] == [NearKiosk]


def test_only_scanners_bound_to_a_kiosk_report_proximity() -> None:
    tracker = kiosk_tracker()

    events = feed(tracker, -45, [0.0, 0.1, 0.2], scanner="node-other")

    assert kiosk_events(events) == []


def test_the_beacon_measured_power_sets_the_distance() -> None:
    tracker = kiosk_tracker()

    # -72 dBm is 3.9 m from a -59 dBm beacon, but 1.2 m from a -70 dBm one.
    assert distance_m(-72, -59) == pytest.approx(3.90, abs=0.01)
    assert distance_m(-72, -70) == pytest.approx(1.23, abs=0.01)
    assert kiosk_events(tracker.observe("s", "coffee", -72, 0.0, scanner="node-kiosk")) == []
    events = tracker.observe("s", "coffee", -72, 0.1, scanner="node-kiosk", tx_power=-70)
    assert kiosk_events(events) == [NearKiosk("s", "kiosk-1", 0.1, distance_m(-72, -70))]


def test_path_loss_exponent_and_near_distances_come_from_the_params() -> None:
    params = replace(RAW, path_loss_exponent=2.0, near_m=3.0, near_exit_m=4.0)
    tracker = kiosk_tracker(params)

    events = tracker.observe("s", "coffee", -68, 0.0, scanner="node-kiosk")  # 2.8 m at n = 2

    assert kiosk_events(events) == [NearKiosk("s", "kiosk-1", 0.0, distance_m(-68, -59, 2.0))]


def test_kiosk_calibration_shifts_the_distance() -> None:
    tracker = kiosk_tracker(calibration=Calibration({"node-kiosk": 6.0}))

    events = tracker.observe("s", "coffee", -66, 0.0, scanner="node-kiosk")

    assert kiosk_events(events) == [NearKiosk("s", "kiosk-1", 0.0, distance_m(-60))]


def test_silence_leaves_the_kiosk_at_the_tick_time() -> None:
    tracker = kiosk_tracker()
    tracker.observe("s", "coffee", NEAR, 1.0, scanner="node-kiosk")

    assert kiosk_events(tracker.tick(5.9)) == []
    assert kiosk_events(tracker.tick(6.0)) == [LeftKiosk("s", "kiosk-1", 6.0)]
    assert kiosk_events(tracker.tick(7.0)) == []


def test_forget_leaves_the_zone_then_the_kiosk() -> None:
    tracker = kiosk_tracker()
    feed(tracker, NEAR, [0.0, 0.1, 0.2], scanner="node-kiosk")

    assert tracker.forget("s", 1.0) == [
        ZoneLeft("s", "coffee", 1.0, "forgotten"),
        LeftKiosk("s", "kiosk-1", 1.0),
    ]
    assert tracker.tick(100.0) == []


def test_zone_events_come_before_kiosk_events() -> None:
    tracker = kiosk_tracker(replace(RAW, enter_confirm_readings=1))

    assert tracker.observe("s", "coffee", NEAR, 0.0, scanner="node-kiosk") == [
        ZoneEntered("s", "coffee", 0.0, NEAR),
        NearKiosk("s", "kiosk-1", 0.0, distance_m(NEAR)),
    ]


# --- queries and forgetting ----------------------------------------------------------


def test_present_in_and_zone_of() -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.1, 0.2], subject="a")
    feed(tracker, STRONG, [0.0, 0.1, 0.2], subject="b")
    feed(tracker, STRONG, [0.0, 0.1, 0.2], zone="entrance", subject="c")
    feed(tracker, MIDDLING, [0.0, 0.1, 0.2], zone="entrance", subject="d")

    assert sorted(tracker.present_in("coffee")) == ["a", "b"]
    assert tracker.present_in("entrance") == ["c"]
    assert tracker.present_in("bakery") == []
    assert tracker.zone_of("a") == "coffee"
    assert tracker.zone_of("d") is None
    assert tracker.zone_of("nobody") is None
    assert tracker.state_of("nobody", "coffee") is State.ABSENT


def test_forget_leaves_the_zone_and_keeps_nothing() -> None:
    tracker = PresenceTracker(PresenceParams())
    feed(tracker, WEAK, [0.0, 0.5, 1.0], zone="entrance")
    feed(tracker, STRONG, [1.0, 1.1, 1.2])

    assert tracker.forget("s", 4.0) == [ZoneLeft("s", "coffee", 4.0, "forgotten")]
    assert tracker.zone_of("s") is None
    assert tracker.pairs_held() == 0
    assert tracker.tick(100.0) == []
    # No window history left: three strong readings at the entrance enter at once.
    assert feed(tracker, STRONG, [5.0, 5.1, 5.2], zone="entrance") == [
        ZoneEntered("s", "entrance", 5.2, STRONG)
    ]


def test_forget_only_touches_that_subject() -> None:
    tracker = PresenceTracker(RAW)
    feed(tracker, STRONG, [0.0, 0.25, 0.5], subject="a")
    feed(tracker, STRONG, [0.0, 0.25, 0.5], subject="b")

    tracker.forget("a", 1.0)

    assert tracker.present_in("coffee") == ["b"]
    assert tracker.tick(8.5) == [ZoneLeft("b", "coffee", 8.5, "timeout")]


def test_forget_an_unknown_subject_emits_nothing() -> None:
    assert PresenceTracker(RAW).forget("nobody", 1.0) == []


# --- the call shapes the gateway uses -------------------------------------------------


def test_params_are_keyword_only() -> None:
    params = PresenceParams(enter_rssi_dbm=-70, exit_rssi_dbm=-85, leave_after_s=3.0)

    assert (params.enter_rssi_dbm, params.exit_rssi_dbm, params.leave_after_s) == (-70, -85, 3.0)
    with pytest.raises(TypeError):
        PresenceParams(-70, -85)  # type: ignore[misc]


def test_default_params_match_the_configuration_defaults() -> None:
    params = PresenceParams()

    assert (params.enter_rssi_dbm, params.exit_rssi_dbm, params.leave_after_s) == (-80, -90, 8.0)
    assert (params.switch_margin_db, params.switch_evidence_db_s) == (1.0, 16.0)
    assert (params.window_s, params.max_readings, params.time_constant_s) == (5.0, 32, 1.5)
    assert (params.enter_confirm_readings, params.enter_confirm_s) == (3, 2.0)
    assert params.leave_grace_s == 3.0
    assert (params.near_m, params.near_exit_m) == (1.5, 2.5)
    assert 2.0 <= params.path_loss_exponent <= 2.5


def test_the_gateway_call_shapes_still_work() -> None:
    tracker = PresenceTracker(PresenceParams(enter_rssi_dbm=-80, exit_rssi_dbm=-90))
    events: list[PresenceEvent] = []
    for t in (0.0, 0.1, 0.2):
        events += tracker.observe("shopper-alice", "coffee", -55, t)

    assert events == [ZoneEntered("shopper-alice", "coffee", 0.2, -55.0)]
    entered = events[0]
    assert isinstance(entered, ZoneEntered)
    assert (entered.subject, entered.zone, entered.t, entered.rssi) == (
        "shopper-alice",
        "coffee",
        0.2,
        -55.0,
    )
    assert tracker.zone_of("shopper-alice") == "coffee"
    assert tracker.present_in("coffee") == ["shopper-alice"]
    assert tracker.tick(1.0) == []
    left = tracker.forget("shopper-alice", 2.0)
    assert left == [ZoneLeft("shopper-alice", "coffee", 2.0, "forgotten")]
    assert isinstance(left[0], ZoneLeft)
    assert left[0].reason == "forgotten"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"exit_rssi_dbm": -80.0}, "exit_rssi_dbm below enter_rssi_dbm"),
        ({"leave_after_s": 0.0}, "leave_after_s"),
        ({"switch_margin_db": -1.0}, "switch_margin_db"),
        ({"window_s": 0.0}, "window_s"),
        ({"max_readings": 0}, "max_readings"),
        ({"enter_confirm_readings": 0}, "enter_confirm_readings"),
        ({"enter_confirm_s": -1.0}, "enter_confirm_s"),
        ({"leave_grace_s": -1.0}, "leave_grace_s"),
        ({"dwell_steps_s": (30.0, 10.0)}, "dwell_steps_s"),
        ({"dwell_steps_s": (0.0,)}, "dwell_steps_s"),
        ({"path_loss_exponent": 0.0}, "path_loss_exponent"),
        ({"near_m": 3.0}, "near_m"),
    ],
)
def test_invalid_params_are_refused(kwargs: dict[str, object], rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        PresenceParams(**kwargs)  # type: ignore[arg-type]


def test_values_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PresenceParams().enter_rssi_dbm = -70  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ZoneEntered("s", "z", 0.0, -60.0).t = 1.0  # type: ignore[misc]


# --- invariants over random sequences -------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    subject: str
    zone: str
    scanner: str | None
    rssi: int
    dt: float
    late: float
    tx_power: int | None


@dataclass(frozen=True)
class Tick:
    dt: float


@dataclass(frozen=True)
class Forget:
    subject: str
    dt: float


SUBJECTS = ("a", "b", "c")
ZONES = ("entrance", "coffee", "bakery")
_dt = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)
_late = st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.3, 2.0, 9.0])
_ops = st.lists(
    st.one_of(
        st.builds(
            Sighting,
            st.sampled_from(SUBJECTS),
            st.sampled_from(ZONES),
            st.sampled_from([None, None, "node-1", "node-2", "node-kiosk"]),
            st.integers(-110, -40),
            _dt,
            _late,
            st.sampled_from([None, None, -70, -59, -50]),
        ),
        # One shopper between two zones at near-equal, strong signal.
        st.builds(
            Sighting,
            st.just("a"),
            st.sampled_from(ZONES[:2]),
            st.none(),
            st.integers(-75, -55),
            st.floats(min_value=0.0, max_value=0.5),
            st.just(0.0),
            st.none(),
        ),
        st.builds(Tick, _dt),
        st.builds(Forget, st.sampled_from(SUBJECTS), _dt),
    ),
    max_size=80,
)


@st.composite
def _params(draw: st.DrawFn) -> PresenceParams:
    enter = draw(st.integers(-90, -60))
    near_m = draw(st.floats(min_value=0.5, max_value=3.0))
    return PresenceParams(
        enter_rssi_dbm=enter,
        exit_rssi_dbm=enter - draw(st.integers(1, 15)),
        leave_after_s=draw(st.floats(min_value=0.5, max_value=10.0)),
        switch_margin_db=draw(st.floats(min_value=0.0, max_value=10.0)),
        window_s=draw(st.floats(min_value=0.5, max_value=6.0)),
        max_readings=draw(st.integers(1, 8)),
        enter_confirm_readings=draw(st.integers(1, 4)),
        enter_confirm_s=draw(st.floats(min_value=0.0, max_value=3.0)),
        leave_grace_s=draw(st.floats(min_value=0.0, max_value=4.0)),
        dwell_steps_s=draw(st.sampled_from([(), (1.0,), (0.5, 2.0, 5.0)])),
        path_loss_exponent=draw(st.floats(min_value=1.5, max_value=3.5)),
        near_m=near_m,
        near_exit_m=near_m + draw(st.floats(min_value=0.0, max_value=2.0)),
    )


REASONS = {Sighting: {"weak", "timeout", "moved"}, Tick: {"weak", "timeout"}, Forget: {"forgotten"}}


@PROPERTY
@given(_params(), _ops)
def test_presence_invariants(params: PresenceParams, ops: list[Sighting | Tick | Forget]) -> None:
    tracker = PresenceTracker(params, kiosk_of_scanner={"node-kiosk": "kiosk-1"})
    where: dict[str, str] = {}  # the presence the events describe, replayed
    dwell: dict[str, float] = {}  # the last dwell step reported in the open visit
    near: set[tuple[str, str]] = set()
    now = 0.0

    def replay(op: Sighting | Tick | Forget, events: list[PresenceEvent], t: float) -> None:
        for event in events:
            assert event.t == t
            if isinstance(event, ZoneEntered):
                # Entering happens only from nowhere (a "moved" ZoneLeft comes first).
                assert event.subject not in where
                assert event.rssi >= params.enter_rssi_dbm
                assert isinstance(op, Sighting)
                assert (event.subject, event.zone) == (op.subject, op.zone)
                where[event.subject] = event.zone
                dwell[event.subject] = 0.0
            elif isinstance(event, ZoneLeft):
                # Every ZoneLeft closes the ZoneEntered that is still open, for the same zone.
                assert where.get(event.subject) == event.zone
                assert event.reason in REASONS[type(op)]
                del where[event.subject]
                del dwell[event.subject]
            elif isinstance(event, ZoneDwelling):
                assert where.get(event.subject) == event.zone
                assert event.seconds in params.dwell_steps_s
                # Dwell seconds never go back within a visit (and never repeat).
                assert event.seconds > dwell[event.subject]
                dwell[event.subject] = event.seconds
            elif isinstance(event, NearKiosk):
                assert (event.subject, event.kiosk) not in near
                assert event.distance_m <= params.near_m
                near.add((event.subject, event.kiosk))
            else:
                assert (event.subject, event.kiosk) in near
                near.remove((event.subject, event.kiosk))

    def check() -> None:
        for subject in SUBJECTS:
            zones = [zone for zone in ZONES if subject in tracker.present_in(zone)]
            assert len(zones) <= 1
            assert tracker.zone_of(subject) == where.get(subject)
            assert zones == ([where[subject]] if subject in where else [])
            states = [tracker.state_of(subject, zone) for zone in ZONES]
            assert sum(s in {State.PRESENT, State.LEAVING} for s in states) == len(zones)

    for op in ops:
        now += op.dt
        if isinstance(op, Sighting):
            t = now - op.late
            events = tracker.observe(
                op.subject, op.zone, op.rssi, t, scanner=op.scanner, tx_power=op.tx_power
            )
        elif isinstance(op, Tick):
            t = now
            events = tracker.tick(now)
        else:
            t = now
            events = tracker.forget(op.subject, now)
            assert all(e.subject == op.subject for e in events)
        replay(op, events, t)
        if isinstance(op, Forget):
            assert op.subject not in where
            assert all(s != op.subject for s, _ in near)
        check()

    # Long enough silence closes every visit and every proximity, and forgets everything.
    end = now + params.leave_after_s + params.window_s + params.leave_grace_s + 1.0
    replay(Tick(0.0), tracker.tick(end), end)
    assert where == {}
    assert near == set()
    assert tracker.pairs_held() == 0
