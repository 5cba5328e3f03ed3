"""Tests of zone presence: every row of the transition table, hysteresis, smoothing, timeouts
through an injected time, moving between zones without ping-pong, and forgetting; then a
property test of the invariants over random sightings and ticks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.presence import PresenceParams, PresenceTracker, ZoneEntered, ZoneLeft

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

# smoothing=1.0: the smoothed RSSI is the last reading, so each reading is one table signal.
RAW = PresenceParams(
    enter_rssi_dbm=-80, exit_rssi_dbm=-90, smoothing=1.0, leave_after_s=8.0, switch_margin_db=4.0
)
SMOOTH = PresenceParams(
    enter_rssi_dbm=-80, exit_rssi_dbm=-90, smoothing=0.4, leave_after_s=8.0, switch_margin_db=4.0
)

STRONG, MIDDLING, WEAK = -60, -85, -100


def present(params: PresenceParams = RAW, zone: str = "coffee", t: float = 0.0) -> PresenceTracker:
    """A tracker with shopper ``s`` present in ``zone``."""
    tracker = PresenceTracker(params)
    assert tracker.observe("s", zone, STRONG, t) == [ZoneEntered("s", zone, t, float(STRONG))]
    return tracker


def test_default_params_match_the_configuration_defaults() -> None:
    params = PresenceParams()

    assert (params.enter_rssi_dbm, params.exit_rssi_dbm) == (-80, -90)
    assert params.exit_rssi_dbm < params.enter_rssi_dbm
    assert params.switch_margin_db > 0


# --- the transition table, row by row ------------------------------------------------


def test_absent_strong_enters() -> None:
    tracker = PresenceTracker(RAW)

    events = tracker.observe("s", "coffee", STRONG, 1.5)

    assert events == [ZoneEntered("s", "coffee", 1.5, float(STRONG))]
    assert tracker.zone_of("s") == "coffee"
    assert tracker.present_in("coffee") == ["s"]


@pytest.mark.parametrize("rssi", [MIDDLING, WEAK])
def test_absent_middling_or_weak_stays_absent(rssi: int) -> None:
    tracker = PresenceTracker(RAW)

    assert tracker.observe("s", "coffee", rssi, 0.0) == []
    assert tracker.observe("s", "coffee", rssi, 1.0) == []
    assert tracker.zone_of("s") is None
    assert tracker.present_in("coffee") == []


@pytest.mark.parametrize("rssi", [STRONG, MIDDLING])
def test_present_strong_or_middling_stays_present(rssi: int) -> None:
    tracker = present()

    assert tracker.observe("s", "coffee", rssi, 1.0) == []
    assert tracker.observe("s", "coffee", rssi, 2.0) == []
    assert tracker.zone_of("s") == "coffee"


def test_present_weak_leaves() -> None:
    tracker = present()

    events = tracker.observe("s", "coffee", WEAK, 3.0)

    assert events == [ZoneLeft("s", "coffee", 3.0, "weak")]
    assert tracker.zone_of("s") is None
    assert tracker.present_in("coffee") == []


def test_present_silent_leaves_on_tick() -> None:
    tracker = present()

    events = tracker.tick(8.0)

    assert events == [ZoneLeft("s", "coffee", 8.0, "timeout")]
    assert tracker.zone_of("s") is None


def test_absent_silent_is_dropped_without_an_event() -> None:
    """Not in the table on purpose: an absent pair that goes quiet is forgotten silently,
    so its smoothing history no longer holds back a fresh strong sighting."""
    tracker = PresenceTracker(SMOOTH)
    tracker.observe("s", "coffee", WEAK, 0.0)

    assert tracker.tick(8.0) == []
    # A fresh track starts from the reading itself: one strong sighting enters.
    assert tracker.observe("s", "coffee", STRONG, 9.0) == [
        ZoneEntered("s", "coffee", 9.0, float(STRONG))
    ]


def test_without_the_tick_the_weak_history_holds_back_a_strong_sighting() -> None:
    tracker = PresenceTracker(SMOOTH)
    tracker.observe("s", "coffee", WEAK, 0.0)

    assert tracker.observe("s", "coffee", STRONG, 9.0) == []


def test_after_leaving_a_strong_sighting_enters_again() -> None:
    tracker = present()
    tracker.observe("s", "coffee", WEAK, 1.0)

    assert tracker.observe("s", "coffee", STRONG, 2.0) == [
        ZoneEntered("s", "coffee", 2.0, float(STRONG))
    ]


# --- hysteresis -------------------------------------------------------------------


@pytest.mark.parametrize("rssi", [-81, -85, -90])
def test_a_reading_between_the_thresholds_neither_enters_nor_leaves(rssi: int) -> None:
    absent = PresenceTracker(RAW)
    assert absent.observe("s", "coffee", rssi, 0.0) == []
    assert absent.zone_of("s") is None

    tracker = present()
    assert tracker.observe("s", "coffee", rssi, 1.0) == []
    assert tracker.zone_of("s") == "coffee"


def test_the_enter_threshold_is_inclusive() -> None:
    tracker = PresenceTracker(RAW)

    assert tracker.observe("s", "coffee", -80, 0.0) == [ZoneEntered("s", "coffee", 0.0, -80.0)]


def test_just_below_the_exit_threshold_leaves() -> None:
    tracker = present()

    assert tracker.observe("s", "coffee", -91, 1.0) == [ZoneLeft("s", "coffee", 1.0, "weak")]


# --- smoothing ---------------------------------------------------------------------


def test_one_strong_reading_after_weak_ones_does_not_enter() -> None:
    tracker = PresenceTracker(SMOOTH)
    for t in range(3):
        assert tracker.observe("s", "coffee", -95, float(t)) == []

    # 0.4 * -60 + 0.6 * -95 = -81: still below -80.
    assert tracker.observe("s", "coffee", -60, 3.0) == []
    assert tracker.zone_of("s") is None


def test_sustained_strong_readings_enter_with_the_smoothed_rssi() -> None:
    tracker = PresenceTracker(SMOOTH)
    for t in range(3):
        tracker.observe("s", "coffee", -95, float(t))
    tracker.observe("s", "coffee", -60, 3.0)

    events = tracker.observe("s", "coffee", -60, 4.0)

    # 0.4 * -60 + 0.6 * -81 = -72.6
    assert len(events) == 1
    entered = events[0]
    assert isinstance(entered, ZoneEntered)
    assert (entered.subject, entered.zone, entered.t) == ("s", "coffee", 4.0)
    assert entered.rssi == pytest.approx(-72.6)


def test_one_weak_reading_while_present_does_not_leave() -> None:
    tracker = present(SMOOTH)

    # 0.4 * -100 + 0.6 * -60 = -76: still present.
    assert tracker.observe("s", "coffee", -100, 1.0) == []
    assert tracker.zone_of("s") == "coffee"
    # Then -85.6 (middling, still present), then -91.36 (weak): the third one leaves.
    assert tracker.observe("s", "coffee", -100, 2.0) == []
    assert tracker.observe("s", "coffee", -100, 3.0) == [ZoneLeft("s", "coffee", 3.0, "weak")]


# --- timeouts ----------------------------------------------------------------------


def test_no_timeout_before_leave_after_s() -> None:
    tracker = present()

    assert tracker.tick(7.999) == []
    assert tracker.zone_of("s") == "coffee"


def test_a_sighting_restarts_the_timeout() -> None:
    tracker = present()
    tracker.observe("s", "coffee", MIDDLING, 5.0)

    assert tracker.tick(12.9) == []
    assert tracker.tick(13.0) == [ZoneLeft("s", "coffee", 13.0, "timeout")]


def test_a_late_sighting_does_not_move_last_seen_back() -> None:
    tracker = present()
    tracker.observe("s", "coffee", MIDDLING, 5.0)
    tracker.observe("s", "coffee", MIDDLING, 2.0)  # delivered late

    assert tracker.tick(12.5) == []
    assert tracker.tick(13.0) == [ZoneLeft("s", "coffee", 13.0, "timeout")]


def test_a_timeout_is_reported_once() -> None:
    tracker = present()

    assert len(tracker.tick(8.0)) == 1
    assert tracker.tick(9.0) == []
    assert tracker.tick(100.0) == []


def test_timeouts_are_per_subject() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("a", "coffee", STRONG, 0.0)
    tracker.observe("b", "coffee", STRONG, 5.0)

    assert tracker.tick(8.0) == [ZoneLeft("a", "coffee", 8.0, "timeout")]
    assert tracker.present_in("coffee") == ["b"]


def test_leave_after_s_is_taken_from_the_params() -> None:
    params = PresenceParams(smoothing=1.0, leave_after_s=2.0)
    tracker = present(params)

    assert tracker.tick(1.9) == []
    assert tracker.tick(2.0) == [ZoneLeft("s", "coffee", 2.0, "timeout")]


# --- moving between zones ------------------------------------------------------------


def test_moving_needs_the_switch_margin() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "entrance", -70, 0.0)

    # Strong on its own, but only 2 dB (then 3.9 dB) better than the current zone.
    assert tracker.observe("s", "coffee", -68, 1.0) == []
    assert tracker.zone_of("s") == "entrance"

    events = tracker.observe("s", "coffee", -66, 2.0)

    assert events == [
        ZoneLeft("s", "entrance", 2.0, "moved"),
        ZoneEntered("s", "coffee", 2.0, -66.0),
    ]
    assert tracker.zone_of("s") == "coffee"
    assert tracker.present_in("entrance") == []
    assert tracker.present_in("coffee") == ["s"]


def test_switch_margin_is_taken_from_the_params() -> None:
    params = PresenceParams(smoothing=1.0, switch_margin_db=10.0)
    tracker = PresenceTracker(params)
    tracker.observe("s", "entrance", -70, 0.0)

    assert tracker.observe("s", "coffee", -61, 1.0) == []
    assert [type(e) for e in tracker.observe("s", "coffee", -60, 2.0)] == [ZoneLeft, ZoneEntered]


@pytest.mark.parametrize("params", [RAW, SMOOTH])
def test_no_ping_pong_between_two_near_equal_zones(params: PresenceParams) -> None:
    tracker = PresenceTracker(params)
    assert len(tracker.observe("s", "entrance", -70, 0.0)) == 1

    events = []
    for i in range(1, 41):
        zone, rssi = ("coffee", -68) if i % 2 else ("entrance", -71)
        events += tracker.observe("s", zone, rssi, float(i) * 0.25)

    assert events == []
    assert tracker.zone_of("s") == "entrance"


def test_old_zone_does_not_leave_twice_after_a_move() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "entrance", -70, 0.0)
    tracker.observe("s", "coffee", -60, 1.0)

    # The old zone's pair is absent now: a weak reading or a timeout there says nothing.
    assert tracker.observe("s", "entrance", WEAK, 2.0) == []
    tracker.observe("s", "coffee", -60, 9.5)
    assert tracker.tick(10.0) == []
    assert tracker.zone_of("s") == "coffee"


def test_moving_back_needs_the_margin_over_the_new_zone() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("s", "entrance", -70, 0.0)
    tracker.observe("s", "coffee", -66, 1.0)

    assert tracker.observe("s", "entrance", -64, 2.0) == []
    assert tracker.observe("s", "entrance", -62, 3.0) == [
        ZoneLeft("s", "coffee", 3.0, "moved"),
        ZoneEntered("s", "entrance", 3.0, -62.0),
    ]


def test_subjects_do_not_affect_each_other() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("a", "entrance", -70, 0.0)

    # b has no current zone, so b needs no margin over a's signal.
    assert tracker.observe("b", "coffee", -79, 0.5) == [ZoneEntered("b", "coffee", 0.5, -79.0)]
    assert tracker.zone_of("a") == "entrance"


# --- queries and forgetting ----------------------------------------------------------


def test_present_in_and_zone_of() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("a", "coffee", STRONG, 0.0)
    tracker.observe("b", "coffee", STRONG, 0.0)
    tracker.observe("c", "entrance", STRONG, 0.0)
    tracker.observe("d", "entrance", MIDDLING, 0.0)

    assert sorted(tracker.present_in("coffee")) == ["a", "b"]
    assert tracker.present_in("entrance") == ["c"]
    assert tracker.present_in("bakery") == []
    assert tracker.zone_of("a") == "coffee"
    assert tracker.zone_of("d") is None
    assert tracker.zone_of("nobody") is None


def test_forget_leaves_the_zone_and_keeps_nothing() -> None:
    tracker = PresenceTracker(SMOOTH)
    for t in range(3):
        tracker.observe("s", "entrance", WEAK, float(t))
    tracker.observe("s", "coffee", STRONG, 3.0)

    assert tracker.forget("s", 4.0) == [ZoneLeft("s", "coffee", 4.0, "forgotten")]
    assert tracker.zone_of("s") is None
    assert tracker.present_in("coffee") == []
    # Nothing left to time out ...
    assert tracker.tick(100.0) == []
    # ... and no smoothing history: one strong sighting at the entrance enters at once.
    assert tracker.observe("s", "entrance", STRONG, 5.0) == [
        ZoneEntered("s", "entrance", 5.0, float(STRONG))
    ]


def test_forget_only_touches_that_subject() -> None:
    tracker = PresenceTracker(RAW)
    tracker.observe("a", "coffee", STRONG, 0.0)
    tracker.observe("b", "coffee", STRONG, 0.0)

    tracker.forget("a", 1.0)

    assert tracker.present_in("coffee") == ["b"]
    assert tracker.tick(8.0) == [ZoneLeft("b", "coffee", 8.0, "timeout")]


def test_forget_an_absent_or_unknown_subject_emits_nothing() -> None:
    tracker = PresenceTracker(SMOOTH)
    tracker.observe("s", "coffee", WEAK, 0.0)

    assert tracker.forget("s", 1.0) == []
    assert tracker.forget("nobody", 1.0) == []
    # The weak history is gone too.
    assert len(tracker.observe("s", "coffee", STRONG, 2.0)) == 1


# --- invariants over random sequences -------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    subject: str
    zone: str
    rssi: int
    dt: float


@dataclass(frozen=True)
class Tick:
    dt: float


@dataclass(frozen=True)
class Forget:
    subject: str
    dt: float


SUBJECTS = ("a", "b", "c")
ZONES = ("entrance", "coffee", "bakery")
_dt = st.floats(min_value=0.0, max_value=6.0, allow_nan=False)
_ops = st.lists(
    st.one_of(
        st.builds(
            Sighting,
            st.sampled_from(SUBJECTS),
            st.sampled_from(ZONES),
            st.integers(-110, -40),
            _dt,
        ),
        st.builds(Sighting, st.just("a"), st.sampled_from(ZONES[:2]), st.integers(-80, -60), _dt),
        st.builds(Tick, _dt),
        st.builds(Forget, st.sampled_from(SUBJECTS), _dt),
    ),
    max_size=60,
)


@st.composite
def _params(draw: st.DrawFn) -> PresenceParams:
    enter = draw(st.integers(-90, -60))
    return PresenceParams(
        enter_rssi_dbm=enter,
        exit_rssi_dbm=enter - draw(st.integers(1, 15)),
        smoothing=draw(st.floats(min_value=0.05, max_value=1.0)),
        leave_after_s=draw(st.floats(min_value=0.5, max_value=10.0)),
        switch_margin_db=draw(st.floats(min_value=0.0, max_value=10.0)),
    )


@PROPERTY
@given(_params(), _ops)
def test_presence_invariants(params: PresenceParams, ops: list[Sighting | Tick | Forget]) -> None:
    tracker = PresenceTracker(params)
    where: dict[str, str] = {}  # the presence the events describe, replayed
    now = 0.0
    for op in ops:
        now += op.dt
        if isinstance(op, Sighting):
            events = tracker.observe(op.subject, op.zone, op.rssi, now)
        elif isinstance(op, Tick):
            events = tracker.tick(now)
        else:
            events = tracker.forget(op.subject, now)

        for event in events:
            assert event.t == now
            if isinstance(event, ZoneEntered):
                # Entering happens only from nowhere (a "moved" ZoneLeft comes first).
                assert event.subject not in where
                assert event.rssi >= params.enter_rssi_dbm
                assert isinstance(op, Sighting)
                assert (event.subject, event.zone) == (op.subject, op.zone)
                where[event.subject] = event.zone
            else:
                # Every ZoneLeft matches the ZoneEntered that is still open.
                assert where.get(event.subject) == event.zone
                del where[event.subject]
                expected_reasons = {
                    Sighting: {"weak", "moved"},
                    Tick: {"timeout"},
                    Forget: {"forgotten"},
                }[type(op)]
                assert event.reason in expected_reasons

        for subject in SUBJECTS:
            zones = [zone for zone in ZONES if subject in tracker.present_in(zone)]
            assert len(zones) <= 1
            assert tracker.zone_of(subject) == where.get(subject)
            assert zones == ([where[subject]] if subject in where else [])
