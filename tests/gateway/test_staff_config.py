"""The staff alert keys: ``[staff]`` and ``[[zones]] help_after_s``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import StaffConfig, load_config
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "deploy" / "moments.example.toml"


def test_the_example_shows_the_defaults_and_no_dwell_alerts() -> None:
    config = load_config(EXAMPLE, {})

    assert config.staff == StaffConfig()
    assert (config.staff.escalate_after_s, config.staff.away_after_s) == (120.0, 300.0)
    assert config.help_after_s() == {}


def test_a_zone_with_help_after_s_has_dwell_alerts(tmp_path: Path) -> None:
    path = tmp_path / "moments.toml"
    path.write_text(
        '[staff]\nescalate_after_s = 60\n[[zones]]\nid = "coffee"\nhelp_after_s = 90\n'
        '[[zones]]\nid = "entrance"\n'
    )

    config = load_config(path, {"MOMENTS_STAFF__AWAY_AFTER_S": "600"})

    assert config.help_after_s() == {"coffee": 90.0}
    assert (config.staff.escalate_after_s, config.staff.away_after_s) == (60.0, 600.0)


def test_a_negative_threshold_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "moments.toml"
    path.write_text('[[zones]]\nid = "coffee"\nhelp_after_s = -1\n')

    with pytest.raises(ConfigError) as refused:
        load_config(path, {})
    assert refused.value.key == "zones[0].help_after_s"
