"""Tests of the presence scorer: hand-built truth and events with answers worked out by hand
(default parameters: entries match within +-10 s, exits within +-15 s, stays under 10 s are
don't care), the naive strongest-RSSI baseline, and two properties."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.score import (
    Counts,
    Observed,
    Reading,
    Score,
    ScoreParams,
    Stay,
    events_from_stays,
    flaps_vs_naive,
    format_report,
    naive_presence,
    score,
)

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=100)


def ent(shopper: str, zone: str, t: float) -> Observed:
    return Observed(shopper, zone, "entered", t)


def lft(shopper: str, zone: str, t: float) -> Observed:
    return Observed(shopper, zone, "left", t)


def test_perfect_detection() -> None:
    truth = [
        Stay("alice", "A", 0.0, 60.0),
        Stay("alice", "B", 70.0, 200.0),
        Stay("bob", "A", 10.0, 50.0),
    ]
    observed = [
        ent("alice", "A", 2.0),  # entry delay 2
        lft("alice", "A", 63.0),  # leave delay 3
        ent("alice", "B", 73.0),  # entry delay 3
        lft("alice", "B", 204.0),  # leave delay 4
        ent("bob", "A", 11.0),  # entry delay 1
        lft("bob", "A", 55.0),  # leave delay 5
    ]
    s = score(truth, observed, shopper_hours=1.0)
    # 6 truth events, 6 matches: P = R = F1 = 1.
    assert (s.tp, s.fp, s.fn) == (6, 0, 0)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    # Entry delays [1, 2, 3]: median 2; nearest-rank p95 is the ceil(2.85) = 3rd: 3.
    assert (s.delay_median_s, s.delay_p95_s) == (2.0, 3.0)
    # Leave delays [3, 4, 5]: median 4, p95 5.
    assert (s.leave_delay_median_s, s.leave_delay_p95_s) == (4.0, 5.0)
    assert s.flaps == 0
    assert s.flaps_per_shopper_hour == 0.0
    assert s.dont_care_events == 0


def test_late_detection_is_one_miss_and_one_false_alarm() -> None:
    truth = [Stay("alice", "A", 0.0, 100.0)]
    observed = [ent("alice", "A", 12.0), lft("alice", "A", 100.0)]  # 12 s late: beyond 10
    s = score(truth, observed, shopper_hours=2.0)
    # Entered: fn 1 (truth at 0 unmatched), fp 1 (event at 12 unmatched); left: tp 1.
    assert (s.entered.tp, s.entered.fp, s.entered.fn) == (0, 1, 1)
    assert (s.left.tp, s.left.fp, s.left.fn) == (1, 0, 0)
    # P = 1/2, R = 1/2, F1 = 1/2.
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    assert s.delay_median_s is None
    assert s.delay_p95_s is None
    assert s.leave_delay_median_s == 0.0
    # The unmatched entry is a flap: 1 flap / 2 shopper-hours.
    assert s.flaps == 1
    assert s.flaps_per_shopper_hour == 0.5


def test_detection_just_inside_tolerance_before_the_truth() -> None:
    # The window is symmetric: 10 s early still matches, with a delay of -10.
    truth = [Stay("alice", "A", 20.0, 100.0)]
    s = score(truth, [ent("alice", "A", 10.0), lft("alice", "A", 85.0)], shopper_hours=1.0)
    assert s.f1 == 1.0
    assert s.delay_median_s == -10.0
    assert s.leave_delay_median_s == -15.0


def test_missed_exit() -> None:
    truth = [Stay("alice", "A", 0.0, 100.0)]
    s = score(truth, [ent("alice", "A", 1.0)], shopper_hours=1.0)
    # tp 1 (entry), fn 1 (exit): P = 1/1, R = 1/2, F1 = 2 * 0.5 / 1.5 = 2/3.
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.precision == 1.0
    assert s.recall == 0.5
    assert s.f1 == pytest.approx(2 / 3)
    assert s.leave_delay_median_s is None
    assert s.leave_delay_p95_s is None
    assert s.per_zone["A"].left.recall == 0.0


def test_an_exit_as_the_run_stops_is_not_a_miss() -> None:
    # Alice left 5 s before the run stopped: no detector can be held to say so within 15 s.
    truth = [Stay("alice", "A", 0.0, 95.0)]
    s = score(truth, [ent("alice", "A", 1.0)], shopper_hours=1.0, run_end=100.0)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    # Seen all the same: absorbed, neither a hit nor a false alarm.
    seen = [ent("alice", "A", 1.0), lft("alice", "A", 99.0)]
    s = score(truth, seen, shopper_hours=1.0, run_end=100.0)
    assert (s.tp, s.fp, s.fn, s.dont_care_events) == (1, 0, 0, 1)
    # 15 s or more before the stop it is scored, and missed.
    s = score(truth, [ent("alice", "A", 1.0)], shopper_hours=1.0, run_end=110.0)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    # Without a stop time the run ends at the last time seen, and every exit is scored.
    s = score(truth, [ent("alice", "A", 1.0)], shopper_hours=1.0)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)


def test_closest_detection_wins_ties_go_to_the_earlier() -> None:
    truth = [Stay("alice", "A", 10.0, 100.0)]
    observed = [ent("alice", "A", 15.0), ent("alice", "A", 5.0), lft("alice", "A", 100.0)]
    s = score(truth, observed, shopper_hours=1.0)
    # Both entries are 5 s off; the earlier (5.0) matches, delay -5; the other is a flap.
    assert s.delay_median_s == -5.0
    assert (s.entered.tp, s.entered.fp) == (1, 1)
    assert s.flaps == 1


@pytest.mark.parametrize("detected", [True, False])
def test_transit_shorter_than_min_stay_has_no_effect(detected: bool) -> None:
    truth = [
        Stay("alice", "A", 0.0, 5.0),  # 5 s walking through A: don't care
        Stay("alice", "B", 5.0, 100.0),
    ]
    observed = [ent("alice", "B", 6.0), lft("alice", "B", 101.0)]
    if detected:
        observed += [ent("alice", "A", 1.0), lft("alice", "A", 6.0)]
    s = score(truth, observed, shopper_hours=1.0)
    # Only B is scored: tp 2 either way; A's events (if any) are absorbed, A's truth never missed.
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.f1 == 1.0
    assert s.flaps == 0
    assert s.dont_care_events == (2 if detected else 0)
    assert s.per_zone["A"].total == Counts()


def test_transit_does_not_take_the_detection_of_the_stay_after_it() -> None:
    truth = [
        Stay("alice", "A", 0.0, 4.0),  # a glimpse of A (don't care) ...
        Stay("alice", "A", 8.0, 100.0),  # ... then a real stay
    ]
    # One entry at 9: within 10 s of both truth entries (0 and 8). Scored truth matches
    # first, so the real stay's entry is a tp, not a miss.
    s = score(truth, [ent("alice", "A", 9.0), lft("alice", "A", 100.0)], shopper_hours=1.0)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.delay_median_s == 1.0


def test_flapping_gateway() -> None:
    truth = [Stay("alice", "A", 0.0, 100.0)]
    observed = [
        ent("alice", "A", 1.0),
        lft("alice", "A", 30.0),  # A -> B -> A while alice stays in A
        ent("alice", "B", 30.0),
        lft("alice", "B", 31.0),
        ent("alice", "A", 31.0),
        lft("alice", "A", 100.0),
    ]
    s = score(truth, observed, shopper_hours=0.5)
    # A entered: 1 -> tp, 31 -> fp (flap). A left: 100 -> tp, 30 -> fp.
    # B entered 30 -> fp (flap), B left 31 -> fp. tp 2, fp 4, fn 0.
    assert (s.tp, s.fp, s.fn) == (2, 4, 0)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == 1.0
    assert s.f1 == pytest.approx(0.5)  # 2 * (1/3) / (4/3)
    assert s.flaps == 2
    assert s.flaps_per_shopper_hour == 4.0
    # Per zone.
    a, b = s.per_zone["A"], s.per_zone["B"]
    assert a.entered == Counts(tp=1, fp=1, fn=0)
    assert a.left == Counts(tp=1, fp=1, fn=0)
    assert (a.entered.precision, a.entered.recall) == (0.5, 1.0)
    assert b.entered == Counts(tp=0, fp=1, fn=0)
    assert b.left == Counts(tp=0, fp=1, fn=0)
    # Nothing expected in B: recall is vacuously 1, precision 0, F1 0.
    assert (b.entered.precision, b.entered.recall, b.entered.f1) == (0.0, 1.0, 0.0)
    assert list(s.per_zone) == ["A", "B"]


def test_events_for_an_unknown_shopper() -> None:
    truth = [Stay("alice", "A", 0.0, 50.0)]
    observed = [
        ent("alice", "A", 0.0),
        lft("alice", "A", 50.0),
        ent("mallory", "A", 10.0),  # never in the truth (e.g. no consent)
        lft("mallory", "A", 20.0),
    ]
    s = score(truth, observed, shopper_hours=1.0)
    assert s.unexpected_shoppers == 1
    assert s.unexpected_events == 2
    # They are false positives too; the entry is a spurious entry, so a flap.
    assert (s.tp, s.fp, s.fn) == (2, 2, 0)
    assert s.flaps == 1


def test_open_stays_at_the_end() -> None:
    truth = [
        Stay("alice", "A", 0.0, None),  # open, began 100 s before the end: entry scored
        Stay("bob", "A", 95.0, None),  # open, began 5 s before the end: don't care
        Stay("carol", "B", 0.0, 100.0),  # sets the end of the run at 100
    ]
    observed = [
        ent("alice", "A", 2.0),
        lft("alice", "A", 80.0),  # alice never left: a false positive
        ent("carol", "B", 1.0),
        lft("carol", "B", 100.0),
    ]
    s = score(truth, observed, shopper_hours=1.0)
    # tp: alice entry, carol entry, carol exit. fp: alice's left. bob: no miss.
    assert (s.tp, s.fp, s.fn) == (3, 1, 0)
    assert s.flaps == 0  # a spurious left is not a flap

    # bob's entry detected late (8 s after his start, still open): absorbed, not a flap.
    s = score(truth, [*observed, ent("bob", "A", 103.0)], shopper_hours=1.0)
    assert (s.tp, s.fp, s.fn, s.dont_care_events, s.flaps) == (3, 1, 0, 1, 0)

    # With the run ending at 200, bob stayed 105 s: his entry is scored, and missed.
    s = score(truth, observed, shopper_hours=1.0, run_end=200.0)
    assert (s.tp, s.fp, s.fn) == (3, 1, 1)


def test_nothing_observed_nothing_expected() -> None:
    s = score([], [], shopper_hours=1.0)
    assert (s.tp, s.fp, s.fn) == (0, 0, 0)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert s.delay_median_s is None
    assert s.delay_p95_s is None
    assert s.leave_delay_median_s is None
    assert s.leave_delay_p95_s is None
    assert s.per_zone == {}
    assert s.flaps == 0


def test_nothing_observed_something_expected() -> None:
    s = score([Stay("alice", "A", 0.0, 100.0)], [], shopper_hours=1.0)
    # Nothing claimed: precision vacuously 1; recall 0; F1 0.
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)


def test_something_observed_nothing_expected() -> None:
    s = score([], [ent("alice", "A", 1.0)], shopper_hours=1.0)
    assert (s.precision, s.recall, s.f1) == (0.0, 1.0, 0.0)
    assert s.unexpected_shoppers == 1


def test_counts_edges() -> None:
    assert (Counts().precision, Counts().recall, Counts().f1) == (1.0, 1.0, 1.0)
    c = Counts(tp=0, fp=1, fn=1)  # P = R = 0: F1 defined as 0
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)
    assert Counts(1, 2, 3) + Counts(4, 5, 6) == Counts(5, 7, 9)


@pytest.mark.parametrize("hours", [0.0, -1.0, math.nan])
def test_shopper_hours_must_be_positive(hours: float) -> None:
    with pytest.raises(ValueError, match="shopper_hours"):
        score([], [], shopper_hours=hours)


def test_bad_truth_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before"):
        score([Stay("alice", "A", 10.0, 5.0)], [], shopper_hours=1.0)
    with pytest.raises(ValueError, match="overlapping"):
        score(
            [Stay("alice", "A", 0.0, 50.0), Stay("alice", "A", 40.0, 60.0)],
            [],
            shopper_hours=1.0,
        )
    with pytest.raises(ValueError, match="overlapping"):
        score(
            [Stay("alice", "A", 0.0, None), Stay("alice", "A", 40.0, 60.0)],
            [],
            shopper_hours=1.0,
        )


def test_median_and_nearest_rank_p95() -> None:
    # 20 shoppers, entry delays 0, 0.5, ..., 9.5.
    truth = [Stay(f"s{i}", "A", 0.0, 100.0) for i in range(20)]
    observed = [ent(f"s{i}", "A", i * 0.5) for i in range(20)]
    observed += [lft(f"s{i}", "A", 100.0) for i in range(20)]
    s = score(truth, observed, shopper_hours=1.0)
    # Median: mean of the 10th and 11th, (4.5 + 5.0) / 2. p95: the ceil(19.0) = 19th: 9.0
    # (linear interpolation would give 9.025).
    assert s.delay_median_s == 4.75
    assert s.delay_p95_s == 9.0


def test_params_change_the_tolerance() -> None:
    truth = [Stay("alice", "A", 0.0, 100.0)]
    observed = [ent("alice", "A", 12.0), lft("alice", "A", 100.0)]
    s = score(truth, observed, shopper_hours=1.0, params=ScoreParams(enter_tolerance_s=12.0))
    assert s.f1 == 1.0


def test_as_dict_keys_are_stable_and_json_ready() -> None:
    truth = [Stay("alice", "A", 0.0, 100.0)]
    s = score(truth, [ent("alice", "A", 1.0)], shopper_hours=1.0)
    d = s.as_dict()
    assert list(d) == [
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "entered",
        "left",
        "per_zone",
        "delay_median_s",
        "delay_p95_s",
        "leave_delay_median_s",
        "leave_delay_p95_s",
        "flaps",
        "flaps_per_shopper_hour",
        "shopper_hours",
        "unexpected_shoppers",
        "unexpected_events",
        "dont_care_events",
        "params",
    ]
    counts_keys = ["tp", "fp", "fn", "precision", "recall", "f1"]
    assert list(d["entered"]) == counts_keys  # type: ignore[call-overload]
    assert d["per_zone"] == {
        "A": {
            "entered": {"tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0},
            "left": {"tp": 0, "fp": 0, "fn": 1, "precision": 1.0, "recall": 0.0, "f1": 0.0},
        }
    }
    assert d["leave_delay_p95_s"] is None
    assert json.loads(json.dumps(d, allow_nan=False)) == d


ZONES = {"e1": "entrance", "c1": "coffee", "c2": "coffee"}


def test_naive_presence_by_hand() -> None:
    readings = [
        Reading("alice", "e1", -60, 0.0),  # entered entrance
        Reading("alice", "c1", -70, 0.5),  # e1 (-60) still stronger: no change
        Reading("alice", "c1", -55, 1.0),  # c1 now strongest: to coffee at once
        Reading("alice", "e1", -50, 1.2),  # and straight back: a flap
        Reading("alice", "c2", -65, 3.0),  # e1 (1.2) and c1 (1.0) older than 1.5 s: coffee
        Reading("alice", "c1", -80, 3.5),  # c2 still strongest: coffee, no event
        Reading("alice", "x9", -40, 4.0),  # a node with no zone: ignored entirely
        Reading("alice", "e1", -60, 20.0),  # 16.5 s of silence since 3.5: left at 11.5 first
        Reading("bob", "c1", -70, 35.0),
        Reading("bob", "c1", -70, 40.0),  # the last reading of the run
    ]
    shuffled = readings[:]
    random.Random(7).shuffle(shuffled)
    events = naive_presence(shuffled, ZONES)
    assert events == [
        ent("alice", "entrance", 0.0),
        lft("alice", "entrance", 1.0),
        ent("alice", "coffee", 1.0),
        lft("alice", "coffee", 1.2),
        ent("alice", "entrance", 1.2),
        lft("alice", "entrance", 3.0),
        ent("alice", "coffee", 3.0),
        lft("alice", "coffee", 11.5),
        ent("alice", "entrance", 20.0),
        # alice: 20 + 8 = 28 <= 40, so she left; bob: 40 + 8 > 40, his stay stays open.
        lft("alice", "entrance", 28.0),
        ent("bob", "coffee", 35.0),
    ]


def test_naive_presence_ties_and_parameters() -> None:
    # Equal RSSI: the more recent reading wins.
    events = naive_presence(
        [Reading("a", "e1", -60, 0.0), Reading("a", "c1", -60, 0.1)], ZONES, leave_after_s=100.0
    )
    assert events == [ent("a", "entrance", 0.0), lft("a", "entrance", 0.1), ent("a", "coffee", 0.1)]
    # Two nodes of one zone: switching between them is no event.
    events = naive_presence(
        [Reading("a", "c1", -60, 0.0), Reading("a", "c2", -50, 0.5), Reading("a", "c1", -40, 1.0)],
        ZONES,
    )
    assert events == [ent("a", "coffee", 0.0)]
    assert naive_presence([Reading("a", "x9", -40, 0.0)], ZONES) == []
    with pytest.raises(ValueError, match="window_s"):
        naive_presence([], ZONES, window_s=0.0)


def test_naive_flaps_against_truth_and_the_report() -> None:
    truth = [Stay("alice", "entrance", 0.0, 20.0), Stay("alice", "coffee", 20.0, 60.0)]
    # The phone sits between two nodes near the boundary: the naive baseline flips zones.
    readings = [Reading("alice", "e1", -60, t) for t in range(20)]
    readings += [Reading("alice", "c1", -55 if t % 4 else -65, t + 0.5) for t in range(10, 60)]
    readings += [Reading("alice", "e1", -90, 70.0)]  # the run goes on past 60 + 8
    naive_events = naive_presence(readings, ZONES)
    naive = score(truth, naive_events, shopper_hours=1.0)
    gateway = score(truth, events_from_stays(truth), shopper_hours=1.0)
    assert gateway.flaps == 0
    assert naive.flaps > 0
    assert naive.f1 < gateway.f1 == 1.0
    assert flaps_vs_naive(gateway, naive) == 0.0

    report = format_report(gateway, naive)
    lines = report.splitlines()
    assert lines[0].split() == ["gateway", "naive"]
    assert any(line.startswith("coffee") for line in lines)
    assert any(line.startswith("entrance") for line in lines)
    f1_line = next(line for line in lines if line.startswith("F1"))
    assert f1_line.split() == ["F1", "1.000", f"{naive.f1:.3f}"]
    assert "flaps vs naive" in report
    assert report.endswith("\n")


def _score_with_flaps(flaps: int) -> Score:
    truth = [Stay("a", "A", 0.0, 100.0)]
    extra = [ent("a", "A", 50.0 + i) for i in range(flaps)]
    return score(truth, [*events_from_stays(truth), *extra], shopper_hours=2.0)


def test_flaps_vs_naive() -> None:
    assert flaps_vs_naive(_score_with_flaps(1), _score_with_flaps(4)) == 0.25
    assert flaps_vs_naive(_score_with_flaps(0), _score_with_flaps(0)) == 0.0
    assert flaps_vs_naive(_score_with_flaps(1), _score_with_flaps(0)) == math.inf


@st.composite
def stays(draw: st.DrawFn) -> list[Stay]:
    out: list[Stay] = []
    for shopper in draw(st.sets(st.sampled_from(["a", "b", "c"]), max_size=3)):
        for zone in draw(st.sets(st.sampled_from(["A", "B"]), max_size=2)):
            t = draw(st.floats(0, 100))
            for _ in range(draw(st.integers(1, 4))):
                length = draw(st.floats(0, 200))
                gap = draw(st.floats(0, 100))
                out.append(Stay(shopper, zone, t, t + length))
                t += length + gap
            if draw(st.booleans()):
                out.append(Stay(shopper, zone, t, None))
    return out


@PROPERTY
@given(stays())
def test_truth_scored_against_itself_is_perfect(truth: list[Stay]) -> None:
    s = score(truth, events_from_stays(truth), shopper_hours=1.0)
    assert (s.fp, s.fn, s.flaps, s.unexpected_events) == (0, 0, 0, 0)
    assert s.f1 == 1.0
    assert s.delay_median_s in (None, 0.0)
    assert s.leave_delay_p95_s in (None, 0.0)


@PROPERTY
@given(
    st.lists(
        st.builds(
            Reading,
            st.sampled_from(["a", "b"]),
            st.sampled_from(["e1", "c1", "c2", "x9"]),
            st.integers(-100, -30),
            st.floats(0, 60),
        ),
        max_size=60,
    )
)
def test_naive_events_are_well_formed(readings: list[Reading]) -> None:
    events = naive_presence(readings, ZONES)
    assert [e.t for e in events] == sorted(e.t for e in events)
    for shopper in {e.shopper for e in events}:
        zone: str | None = None
        for e in (e for e in events if e.shopper == shopper):
            if e.kind == "entered":
                assert zone is None
                zone = e.zone
            else:
                assert zone == e.zone
                zone = None
