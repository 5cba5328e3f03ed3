"""``moments report lift`` and ``moments explain`` against a real store in a temporary data
folder, seeded the way the gateway writes it (exposures, redemptions, decision records),
through ``gateway.cli.main``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.consents import record_decision_in
from gateway.redemptions import (
    Attribution,
    Redemption,
    bump_exposure_in,
    record_redemption_op,
)
from gateway.store import Database
from gateway.store.records import DecisionRecord
from tests.support.store import opened, run

STORE = "store-1"
AT = 1_795_378_600.0  # 2026-11-22 20:16:40 UTC
COFFEE = "coffee-2for1"
TEA = "tea-5"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MOMENTS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "moments.toml"
    path.write_text(f"data_dir = {json.dumps(str(tmp_path / 'var'))}\n")
    return path


@contextmanager
def store(tmp_path: Path) -> Iterator[Database]:
    """The configured store, open for seeding and closed before the command opens it (one
    LMDB environment per store per process)."""
    with opened(tmp_path / "var" / "store") as db:
        yield db


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def seed_counts(db: Database) -> None:
    def show(txn: Any) -> None:
        for _ in range(200):
            bump_exposure_in(txn, db, COFFEE, "treatment")
        for _ in range(50):
            bump_exposure_in(txn, db, COFFEE, "control")
        for _ in range(3):
            bump_exposure_in(txn, db, TEA, "treatment")

    run(db, show)
    sides = [(COFFEE, Attribution("treatment", "d"))] * 30
    sides += [(COFFEE, Attribution("control", "d"))] * 3
    sides += [(COFFEE, Attribution("unattributed"))] * 2
    sides += [(TEA, Attribution("treatment", "d"))] * 5
    for n, (offer, attribution) in enumerate(sides):
        sale = Redemption(v=1, lane="lane-1", offer_id=offer, at=AT, receipt=f"r{n}")
        run(db, record_redemption_op(db, STORE, sale, attribution, now=AT, tell_hq=False))


# --- report lift ------------------------------------------------------------------


def test_report_lift_prints_the_table_and_notes(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store(tmp_path) as db:
        seed_counts(db)

    code, out, err = cli(capsys, "report", "lift", "-c", str(config))

    assert (code, err) == (0, "")
    header, rule, coffee, tea, *notes = out.splitlines()
    assert header.split() == [
        "offer",
        "impressions",
        "redemptions",
        "treat",
        "conv",
        "holdout",
        "control",
        "conv",
        "lift",
        "lift",
        "95%",
        "CI",
        "diff",
        "95%",
        "CI",
        "(pp)",
        "warning",
    ]
    assert set(rule) == {"-", " "}
    assert coffee.split()[:7] == [COFFEE, "200", "30", "15.00%", "50", "6.00%", "+150.0%"]
    assert coffee.endswith("control has 3 conversions (< 5)")
    # Tea was redeemed more often than shown: the rate is capped, and a note says so.
    assert tea.split()[:6] == [TEA, "3", "3", "100.00%", "0", "n/a"]
    assert "treatment has 3 exposed (< 30)" in tea
    assert notes == [
        f"note: {TEA}: 5 treatment redemptions but 3 exposures; its rate counts 3",
        "note: unattributed redemptions (no decision showed or held out the offer within the "
        f"window; in neither arm): {COFFEE} 2",
    ]


def test_report_lift_as_json(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store(tmp_path) as db:
        seed_counts(db)

    code, out, _err = cli(capsys, "report", "lift", "--json", "-c", str(config))

    assert code == 0
    shown = json.loads(out)
    coffee, tea = shown["offers"]
    assert coffee["offer"] == COFFEE
    assert coffee["treatment"] == {"impressions": 200, "redemptions": 30, "rate": 0.15}
    assert coffee["control"] == {"impressions": 50, "redemptions": 3, "rate": 0.06}
    assert coffee["unattributed_redemptions"] == 2
    assert coffee["diff"] == pytest.approx(0.09)
    assert coffee["lift"] == pytest.approx(1.5)
    low, high = coffee["diff_ci95"]
    assert low < 0.09 < high
    low, high = coffee["lift_ci95"]
    assert low < 1.5 < high
    assert coffee["warning"] == "control has 3 conversions (< 5)"
    assert tea["control"] == {"impressions": 0, "redemptions": 0, "rate": None}
    assert (tea["diff"], tea["diff_ci95"], tea["lift"], tea["lift_ci95"]) == (None,) * 4
    assert len(shown["notes"]) == 2


def test_report_lift_on_a_store_with_nothing_counted(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store(tmp_path):
        pass

    assert cli(capsys, "report", "lift", "-c", str(config)) == (
        0,
        "note: no offer has impressions or redemptions yet\n",
        "",
    )
    code, out, _err = cli(capsys, "report", "lift", "--json", "-c", str(config))
    assert code == 0
    assert json.loads(out) == {
        "offers": [],
        "notes": ["no offer has impressions or redemptions yet"],
    }


def test_report_without_a_store_is_an_error(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "report", "lift", "-c", str(config))

    assert (code, out) == (1, "")
    assert err.startswith("moments: no store at ")
    assert not (tmp_path / "var" / "store" / "data.mdb").exists()  # not created either


def test_report_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = cli(capsys, "report")
    assert code == 2
    assert "lift" in err


# --- explain ----------------------------------------------------------------------


def test_explain_prints_a_decision(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = DecisionRecord(
        decision_id="3f9a1c07b2de4a11",
        shopper_id="app-77",
        at=AT,
        hlc=1 << 16,
        channel="kiosk",
        kiosk_id="kiosk-coffee",
        offer_id=COFFEE,
        reason="highest expected value for the shopper",
        rejected=[(TEA, "holdout"), ("bakery-croissant", "segment"), ("wine-3", "daypart")],
        inputs={"zone": "coffee", "personal": True},
    )
    with store(tmp_path) as db:
        assert run(db, lambda txn: record_decision_in(txn, db, record))

    code, out, err = cli(capsys, "explain", "3f9a1c07b2de4a11", "-c", str(config))

    assert (code, err) == (0, "")
    assert out == (
        "decision 3f9a1c07b2de4a11\n"
        f"  when      2026-11-22 20:16:40 UTC ({AT})\n"
        "  shopper   app-77\n"
        "  channel   kiosk\n"
        "  kiosk     kiosk-coffee\n"
        f"  offer     {COFFEE}\n"
        "  reason    highest expected value for the shopper\n"
        '  inputs    {"personal": true, "zone": "coffee"}\n'
        "  rejected  3 offers, each by its first rule:\n"
        f"    {TEA}             holdout\n"
        "    bakery-croissant  segment\n"
        "    wine-3            daypart\n"
    )


def test_explain_a_phone_decision_for_generic_content(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = DecisionRecord(
        decision_id="d-phone", shopper_id="app-77", at=AT, hlc=2 << 16, channel="phone"
    )
    with store(tmp_path) as db:
        assert run(db, lambda txn: record_decision_in(txn, db, record))

    code, out, _err = cli(capsys, "explain", "d-phone", "-c", str(config))

    assert code == 0
    assert "  kiosk " not in out
    assert "  offer     none (generic content)\n" in out
    assert "  reason    (none given)\n" in out
    assert out.endswith("  rejected  none\n")


def test_explain_an_unknown_decision(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store(tmp_path):
        pass

    code, out, err = cli(capsys, "explain", "nope", "-c", str(config))

    assert (code, out) == (1, "")
    assert err.startswith("moments: no decision 'nope' in the store")
