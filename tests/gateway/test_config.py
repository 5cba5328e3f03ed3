"""Tests of the one typed configuration: defaults, the example file, environment overrides,
and error messages that name the source, the key, the value and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    BrokerConfig,
    Config,
    HqConfig,
    HttpConfig,
    IngestConfig,
    LogConfig,
    PresenceConfig,
    RadioConfig,
    StoreConfig,
    load_config,
)
from gateway.errors import ConfigError, MomentsError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "moments.example.toml"

ZONES_AB = """
[[zones]]
id = "a"
nodes = ["node-a"]

[[zones]]
id = "b"
nodes = ["node-b"]
"""


def write(tmp_path: Path, text: str, name: str = "moments.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_names_everything(
    err: ConfigError, source: str, key: str, value: object, expected: str
) -> None:
    """The message, and the attributes behind it, name source, key, value and expectation."""
    message = str(err)
    assert source in err.source
    assert err.key == key
    assert err.value == value
    assert expected in err.expected
    assert source in message
    assert key in message
    assert repr(value) in message
    assert expected in message


# --- defaults and the example file -------------------------------------------------


def test_defaults_with_an_empty_environment_match_the_design() -> None:
    config = load_config(None, {})

    assert config.data_dir == "./var"
    assert config.data_path == Path("var")
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 1883)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.store_id == "store-1"
    assert config.client_id == "moments-gw-store-1"
    assert config.log.level == "info"
    assert config.zones == []
    assert config.kiosks == []
    assert config == Config()


def test_explicit_client_id_wins_over_the_derived_one() -> None:
    config = load_config(None, {"MOMENTS_BROKER__CLIENT_ID": "gw-7"})

    assert config.client_id == "gw-7"


def test_example_file_loads_with_its_zones_and_kiosk() -> None:
    config = load_config(EXAMPLE, {})

    assert [zone.id for zone in config.zones] == ["entrance", "coffee"]
    assert [(kiosk.id, kiosk.zone) for kiosk in config.kiosks] == [("kiosk-1", "coffee")]
    assert config.zone_of_node() == {"node-entrance": "entrance", "node-coffee": "coffee"}


def test_example_file_shows_the_defaults_it_claims_to_show() -> None:
    """The example says a missing key takes the default shown: the two must agree."""
    config = load_config(EXAMPLE, {})

    assert config.store_id == Config().store_id
    assert config.data_dir == Config().data_dir
    assert config.http == HttpConfig()
    assert config.broker == BrokerConfig()
    assert config.hq == HqConfig()
    assert config.store == StoreConfig()
    assert config.log == LogConfig()
    assert config.ingest == IngestConfig()
    assert config.presence == PresenceConfig()
    assert config.radio == RadioConfig()


def test_a_file_sets_only_what_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nport = 1999\n[log]\nlevel = "warning"\n')

    config = load_config(path, {})

    assert config.broker.port == 1999
    assert config.broker.host == "127.0.0.1"
    assert config.log.level == "warning"
    assert config.log.format == "json"
    assert config.http == HttpConfig()


# --- environment overrides ---------------------------------------------------------


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'data_dir = "file-var"\n[broker]\nhost = "broker.local"\nport = 1999\n'
        '[log]\nlevel = "warning"\n',
    )
    environ = {
        "MOMENTS_DATA_DIR": "env-var",
        "MOMENTS_BROKER__PORT": "1884",
        "MOMENTS_LOG__LEVEL": "debug",
    }

    config = load_config(path, environ)

    assert config.data_dir == "env-var"
    assert config.broker.port == 1884
    assert config.log.level == "debug"
    # What the environment does not name still comes from the file.
    assert config.broker.host == "broker.local"


def test_environment_overrides_apply_without_a_file() -> None:
    config = load_config(None, {"MOMENTS_BROKER__PORT": "1884", "MOMENTS_HTTP__PORT": "9090"})

    assert config.broker.port == 1884
    assert config.http.port == 9090


def read_key(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(
    ("name", "text", "key", "expected"),
    [
        ("MOMENTS_PRESENCE__LEAVE_AFTER_S", "2.5", "presence.leave_after_s", 2.5),
        ("MOMENTS_PRESENCE__ENTER_RSSI_DBM", "-70", "presence.enter_rssi_dbm", -70),
        ("MOMENTS_RADIO__ENABLED", "false", "radio.enabled", False),
        ("MOMENTS_BROKER__HOST", "10.0.0.5", "broker.host", "10.0.0.5"),
        ("MOMENTS_DATA_DIR", "srv/moments", "data_dir", "srv/moments"),
        ("MOMENTS_STORE_ID", "2024", "store_id", "2024"),
    ],
)
def test_environment_values_convert_to_the_type_of_their_key(
    name: str, text: str, key: str, expected: object
) -> None:
    value = read_key(load_config(None, {name: text}), key)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("MOMENTS_STORE_ID", "2024"),
        ("MOMENTS_BROKER__PASSWORD", "123456"),
        ("MOMENTS_DATA_DIR", "2024-05-01"),
    ],
)
def test_numeric_looking_text_from_the_environment_stays_text(name: str, text: str) -> None:
    key = {
        "MOMENTS_STORE_ID": "store_id",
        "MOMENTS_BROKER__PASSWORD": "broker.password",
        "MOMENTS_DATA_DIR": "data_dir",
    }[name]

    assert read_key(load_config(None, {name: text}), key) == text


def test_moments_config_selects_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 8181\n")

    config = load_config(None, {"MOMENTS_CONFIG": str(path)})

    assert config.http.port == 8181


def test_an_explicit_path_wins_over_moments_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, "[http]\nport = 8181\n", "chosen.toml")
    other = write(tmp_path, "[http]\nport = 8282\n", "other.toml")

    config = load_config(chosen, {"MOMENTS_CONFIG": str(other)})

    assert config.http.port == 8181


def test_moments_config_naming_a_missing_file_fails(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as info:
        load_config(None, {"MOMENTS_CONFIG": str(missing)})

    assert str(missing) in str(info.value)


def test_empty_moments_config_means_defaults() -> None:
    assert load_config(None, {"MOMENTS_CONFIG": ""}) == Config()


def test_unrelated_moments_variables_are_ignored() -> None:
    environ = {
        "MOMENTS_UNRELATED": "1",
        "MOMENTS_NOT_A_SECTION__PORT": "70000",
        "MOMENTSBROKER__PORT": "70000",
        "OTHER_BROKER__PORT": "70000",
        "moments_broker__port": "70000",
        "PATH": "/usr/bin",
    }

    assert load_config(None, environ) == Config()


def test_only_the_given_environ_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_BROKER__PORT", "70000")

    assert load_config(None, {}).broker.port == 1883


# --- errors name the source, the key, the value and the expectation ------------------


@pytest.mark.parametrize(
    ("text", "key", "value", "expected"),
    [
        ("[broker]\nport = 70000\n", "broker.port", 70000, "<= 65535"),
        ("[http]\nport = 0\n", "http.port", 0, ">= 1"),
        ('[broker]\nport = "abc"\n', "broker.port", "abc", "an integer"),
        ("[broker]\nbogus = 1\n", "broker.bogus", 1, "a known key"),
        ("bogus = 1\n", "bogus", 1, "a known key"),
        ('[[zones]]\nid = "a"\ncolour = "red"\n', "zones[0].colour", "red", "a known key"),
        ('[log]\nlevel = "loud"\n', "log.level", "loud", "one of"),
        ('[log]\nformat = "xml"\n', "log.format", "xml", "one of"),
        ('[[zones]]\nid = "bad id!"\n', "zones[0].id", "bad id!", "matching regex"),
        ("[presence]\npath_loss_exponent = 9.5\n", "presence.path_loss_exponent", 9.5, "<= 6"),
        ('[broker]\ntopic_prefix = "moments/#"\n', "broker.topic_prefix", "moments/#", "regex"),
        ("http = 5\n", "http", 5, "a table"),
        (
            "[presence]\nenter_rssi_dbm = -80\nexit_rssi_dbm = -80\n",
            "presence.exit_rssi_dbm",
            -80,
            "below presence.enter_rssi_dbm (-80)",
        ),
        (
            "[presence]\nenter_rssi_dbm = -80\nexit_rssi_dbm = -70\n",
            "presence.exit_rssi_dbm",
            -70,
            "below presence.enter_rssi_dbm (-80)",
        ),
        (
            '[http]\ntrusted_proxies = ["127.0.0.1", "proxy.local"]\n',
            "http.trusted_proxies[1]",
            "proxy.local",
            "an IP address, or a network",
        ),
        (
            '[http]\ntrusted_proxies = ["192.168.1.10/24"]\n',  # the server would ignore it
            "http.trusted_proxies[0]",
            "192.168.1.10/24",
            "host bits zero",
        ),
        (
            "[broker]\nbackoff_min_s = 5.0\nbackoff_max_s = 1.0\n",
            "broker.backoff_max_s",
            1.0,
            "at least broker.backoff_min_s",
        ),
        (
            ZONES_AB + '[[kiosks]]\nid = "k"\nzone = "c"\n',
            "kiosks[0].zone",
            "c",
            "one of the zones ['a', 'b']",
        ),
        (
            ZONES_AB + '[[kiosks]]\nid = "k"\nzone = "a"\n[[kiosks]]\nid = "k"\nzone = "b"\n',
            "kiosks[1].id",
            "k",
            "a kiosk id not used before",
        ),
        (
            ZONES_AB + '[[zones]]\nid = "a"\n',
            "zones[2].id",
            "a",
            "a zone id not used before",
        ),
        (
            ZONES_AB + '[[zones]]\nid = "c"\nnodes = ["node-b"]\n',
            "zones[2].nodes",
            "node-b",
            "one zone only",
        ),
        (
            ZONES_AB + '[radio]\nzone = "backroom"\n',
            "radio.zone",
            "backroom",
            "one of the zones ['a', 'b']",
        ),
    ],
)
def test_file_errors_name_the_file_key_value_and_expectation(
    tmp_path: Path, text: str, key: str, value: object, expected: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_config(path, {})

    assert_names_everything(info.value, str(path), key, value, expected)


def test_enum_error_lists_every_allowed_level(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "loud"\n')

    with pytest.raises(ConfigError) as info:
        load_config(path, {})

    for level in ("debug", "info", "warning", "error"):
        assert level in info.value.expected


@pytest.mark.parametrize(
    ("environ", "key", "value", "expected"),
    [
        ({"MOMENTS_BROKER__PORT": "70000"}, "broker.port", "70000", "<= 65535"),
        ({"MOMENTS_BROKER__PORT": "abc"}, "broker.port", "abc", "an integer"),
        ({"MOMENTS_HTTP__PORT": "0"}, "http.port", "0", ">= 1"),
        ({"MOMENTS_LOG__LEVEL": "loud"}, "log.level", "loud", "one of"),
        ({"MOMENTS_BROKER__BOGUS": "1"}, "broker.bogus", "1", "a known key"),
        ({"MOMENTS_PRESENCE__EXIT_RSSI_DBM": "-70"}, "presence.exit_rssi_dbm", -70, "below"),
        ({"MOMENTS_RADIO__ZONE": "backroom"}, "radio.zone", "backroom", "one of the zones"),
    ],
)
def test_environment_errors_name_the_environment(
    environ: dict[str, str], key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ)

    assert_names_everything(info.value, "environment", key, value, expected)


def test_environment_error_on_top_of_a_file_names_both(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nport = 1999\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, {"MOMENTS_BROKER__PORT": "70000"})

    assert str(path) in info.value.source
    assert "environment" in info.value.source
    assert_names_everything(info.value, "environment", "broker.port", "70000", "<= 65535")


def test_environment_table_override_over_a_file_value_that_is_not_a_table(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "broker = 5\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, {"MOMENTS_BROKER__PORT": "1884"})

    assert_names_everything(info.value, "environment", "broker", 5, "a table")


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as info:
        load_config(missing, {})

    err = info.value
    assert err.source == str(missing)
    assert err.key == "(file)"
    assert "an existing TOML file" in str(err)
    assert str(missing) in str(err)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()

    with pytest.raises(ConfigError) as info:
        load_config(folder, {})

    err = info.value
    assert err.source == str(folder)
    assert err.key == "(file)"
    assert "a readable file" in str(err)
    assert isinstance(err.__cause__, OSError)


@pytest.mark.parametrize(
    "text",
    ["port = \n", "[broker\nport = 1\n", 'a = "unterminated\n', "[http]\n[http]\n"],
)
def test_invalid_toml_is_named(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_config(path, {})

    err = info.value
    assert err.source == str(path)
    assert err.key == "(file)"
    assert "valid TOML" in str(err)
    assert str(path) in str(err)
    assert "line" in str(err.value)


def test_config_error_is_a_moments_error(tmp_path: Path) -> None:
    with pytest.raises(MomentsError):
        load_config(tmp_path / "absent.toml", {})
