"""The help desk without I/O: presence events and the tick's time in, staff alerts out."""

from __future__ import annotations

import json

import pytest

from beacons.presence import ZoneEntered, ZoneLeft
from gateway.helpdesk import AckError, AckOutcome, Due, HelpDesk, parse_ack

T0 = 1_795_378_600.0


def desk() -> HelpDesk:
    return HelpDesk(help_after_s={"coffee": 60.0}, escalate_after_s=120.0, away_after_s=300.0)


def raise_due(d: HelpDesk, now: float, allowed: bool = True) -> list[Due]:
    """What ``Shoppers.recheck`` does: raise each due watch if the consent allows."""
    due = d.tick(now)
    for watch in due:
        if allowed:
            d.dwell(watch.shopper_id, name="Alice", zone=watch.zone, now=now)
    return due


def test_a_dwell_alert_is_raised_at_the_zones_threshold_not_before() -> None:
    d = desk()
    d.on_presence(ZoneEntered("alice", "coffee", T0, -60.0))

    assert raise_due(d, T0 + 59.0) == []
    assert d.alerts == {}
    assert raise_due(d, T0 + 60.0) == [Due("alice", "coffee")]
    [alert] = d.alerts.values()
    assert (alert.reason, alert.zone, alert.since, alert.level) == ("dwell", "coffee", T0 + 60, 0)
    # Once per entry: no second alert, even after staff close the first.
    d.resolve(alert.alert_id)
    assert raise_due(d, T0 + 500.0) == [] and d.alerts == {}


def test_a_due_watch_whose_consent_could_not_be_read_is_due_again() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)
    [due] = d.tick(T0 + 60.0)
    d.not_decided(due)  # a store error while reading the consent
    assert raise_due(d, T0 + 61.0) == [Due("alice", "coffee")]
    assert [a.since for a in d.alerts.values()] == [T0 + 61.0]


def test_no_dwell_alert_in_a_zone_without_a_threshold() -> None:
    d = desk()
    d.entered("alice", "entrance", T0)

    assert raise_due(d, T0 + 10_000.0) == []


def test_moving_on_cancels_a_pending_dwell() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)
    d.left("alice", "coffee", T0 + 30.0, moved=True)
    d.entered("alice", "entrance", T0 + 30.0)

    assert raise_due(d, T0 + 120.0) == []
    # Coming back starts the clock again.
    d.entered("alice", "coffee", T0 + 200.0)
    assert raise_due(d, T0 + 259.0) == []
    assert raise_due(d, T0 + 260.0) == [Due("alice", "coffee")]


def test_no_dwell_alert_without_consent_at_raise_time() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)

    assert raise_due(d, T0 + 60.0, allowed=False) == [Due("alice", "coffee")]
    assert d.alerts == {}
    assert raise_due(d, T0 + 61.0) == []  # not asked again for this visit to the zone


def test_a_dwell_alert_goes_when_they_leave_its_zone_acknowledged_or_not() -> None:
    for acknowledged in (False, True):
        d = desk()
        d.entered("alice", "coffee", T0)
        raise_due(d, T0 + 60.0)
        [alert] = d.alerts.values()
        if acknowledged:
            d.acknowledge(alert.alert_id, "staff-7", T0 + 70.0)
        d.on_presence(ZoneLeft("alice", "coffee", T0 + 80.0, "moved"))
        assert d.alerts == {}


def test_an_asked_alert_follows_the_shopper_and_shows_no_zone_when_they_are_in_none() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)
    alert = d.ask("alice", name="Alice", zone="coffee", now=T0 + 1.0)
    d.left("alice", "coffee", T0 + 5.0, moved=True)
    d.entered("alice", "entrance", T0 + 5.0)

    assert alert.zone == "entrance"
    d.left("alice", "entrance", T0 + 10.0)
    assert alert.zone is None and d.alerts
    # Back in a zone before away_after_s: still waiting.
    d.tick(T0 + 200.0)
    d.entered("alice", "coffee", T0 + 250.0)
    d.tick(T0 + 400.0)
    assert alert.zone == "coffee" and list(d.alerts.values()) == [alert]


def test_all_their_alerts_go_when_they_have_left_the_store() -> None:
    d = desk()
    d.entered("alice", "entrance", T0)
    d.ask("alice", name="Alice", zone="entrance", now=T0)
    d.left("alice", "entrance", T0 + 10.0)

    d.tick(T0 + 309.0)
    assert d.alerts
    d.tick(T0 + 310.0)
    assert d.alerts == {}


def test_a_shopper_never_seen_in_a_zone_is_not_timed_out() -> None:
    d = desk()
    d.ask("alice", name="Alice", zone=None, now=T0)

    d.tick(T0 + 86_400.0)
    assert len(d.alerts) == 1


def test_asking_makes_a_dwell_alert_an_asked_one() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)
    raise_due(d, T0 + 60.0)
    [dwell] = d.alerts.values()

    asked = d.ask("alice", name="Alice", zone="coffee", now=T0 + 70.0)
    assert asked is dwell and asked.reason == "asked" and len(d.alerts) == 1


def test_the_first_acknowledgement_wins() -> None:
    d = desk()
    alert = d.ask("alice", name="Alice", zone="coffee", now=T0)

    assert d.acknowledge(alert.alert_id, "staff-7", T0 + 5.0) == (AckOutcome.ACKNOWLEDGED, alert)
    assert d.acknowledge(alert.alert_id, "staff-9", T0 + 6.0) == (AckOutcome.TAKEN, alert)
    assert d.acknowledge(alert.alert_id, "staff-7", T0 + 7.0) == (AckOutcome.ACKNOWLEDGED, alert)
    assert (alert.acknowledged_by, alert.acknowledged_at) == ("staff-7", T0 + 5.0)
    assert d.acknowledge("000000000000", "staff-7", T0) == (AckOutcome.UNKNOWN, None)
    # Still listed, so others see it is taken.
    [listed] = json.loads(d.payload())["alerts"]
    assert listed["acknowledged_by"] == "staff-7"


def test_an_unacknowledged_alert_escalates_by_time_and_an_acknowledged_one_stops() -> None:
    d = desk()
    alert = d.ask("alice", name="Alice", zone="coffee", now=T0)
    levels = []
    for t in (119.0, 120.0, 239.0, 240.0, 10_000.0):
        d.tick(T0 + t)
        levels.append(alert.level)
    assert levels == [0, 1, 1, 2, 2]

    bob = d.ask("bob", name="Bob", zone="coffee", now=T0)
    d.acknowledge(bob.alert_id, "staff-7", T0 + 10.0)
    d.tick(T0 + 10_000.0)
    assert bob.level == 0


def test_an_escalation_is_a_change_to_publish() -> None:
    d = desk()
    alert = d.ask("alice", name="Alice", zone="coffee", now=T0)
    d.dirty = False
    d.tick(T0 + 60.0)
    assert not d.dirty
    d.tick(T0 + 120.0)
    assert d.dirty and json.loads(d.payload())["alerts"][0]["level"] == 1 == alert.level


def test_withdrawal_leaves_nothing_about_the_shopper() -> None:
    d = desk()
    d.entered("alice", "coffee", T0)
    d.ask("alice", name="Alice", zone="coffee", now=T0)
    d.left("alice", "coffee", T0 + 1.0)
    d.entered("bob", "coffee", T0)
    changes: list[None] = []
    d.on_change.append(lambda: changes.append(None))

    d.withdraw("alice")
    d.withdraw("bob")  # no alert: a pending watch goes quietly
    assert d.alerts == {} and len(changes) == 1
    assert d.tick(T0 + 1_000.0) == []
    assert d.shoppers() == set() and d.open_for("alice") == []


def test_the_staff_payload_never_carries_the_shopper_id() -> None:
    d = desk()
    d.ask("shopper-alice", name="", zone=None, now=T0)

    state = json.loads(d.payload())
    assert state["v"] == 1
    [alert] = state["alerts"]
    assert set(alert) == {
        "alert_id",
        "name",
        "zone",
        "since",
        "reason",
        "level",
        "acknowledged_by",
        "acknowledged_at",
    }
    assert alert["name"] == "A shopper" and "shopper-alice" not in d.payload().decode()
    assert (alert["acknowledged_by"], alert["acknowledged_at"]) == (None, None)


def test_parse_ack_takes_the_alert_id() -> None:
    assert parse_ack("staff-7", b'{"v":1,"alert_id":"3f9a1c07b2de","extra":1}') == "3f9a1c07b2de"


@pytest.mark.parametrize(
    ("staff_id", "payload", "reason"),
    [
        ("staff-7", b"not json", "bad_json"),
        ("staff-7", b'{"v":1}', "bad_field"),
        ("staff-7", b'{"v":1,"alert_id":"XYZ"}', "bad_field"),
        ("staff-7", b'{"v":2,"alert_id":"3f9a1c07b2de"}', "unsupported_version"),
        ("staff-7", b" " * 2000, "oversized_payload"),
        ("-staff", b'{"v":1,"alert_id":"3f9a1c07b2de"}', "bad_staff_id"),
    ],
)
def test_parse_ack_refuses_what_is_malformed(staff_id: str, payload: bytes, reason: str) -> None:
    with pytest.raises(AckError) as refused:
        parse_ack(staff_id, payload)
    assert refused.value.reason == reason


def test_a_staff_id_with_a_line_break_is_refused() -> None:
    with pytest.raises(AckError) as info:
        parse_ack("bob\n", b'{"v":1,"alert_id":"3f9a1c07b2de"}')
    assert info.value.reason == "bad_staff_id"
