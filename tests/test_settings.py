"""Configuration: a wrong or missing setting stops start-up with one message naming the key,
the value found and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import ConfigError, load_settings, parse_settings
from tests.conftest import SECRET

TARGETS = """
[[targets]]
name = "rentix"
kind = "rentix"
base_url = "https://crm.rentix.md/api/v1"
api_key = "${RENTIX_API_KEY}"

[[targets]]
name = "travtus"
kind = "travtus"
base_url = "https://api.travtus.com"
token_url = "https://api.travtus.com/oauth2/token"
client_id = "${TRAVTUS_CLIENT_ID}"
client_secret = "${TRAVTUS_CLIENT_SECRET}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def test_contract_example_loads_with_env_expansion(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENTIX_API_KEY", "rk")
    monkeypatch.setenv("TRAVTUS_CLIENT_ID", "cid")
    monkeypatch.setenv("TRAVTUS_CLIENT_SECRET", "cs")
    text = f'redis_url = "redis://127.0.0.1:6379/0"\n[webhook]\nsecrets = ["{SECRET}"]\n' + TARGETS
    settings = load_settings(write(tmp_path, text))
    assert settings.target("rentix").api_key == "rk"  # type: ignore[union-attr]
    assert settings.target("travtus").client_secret == "cs"  # type: ignore[union-attr]
    assert settings.webhook.tolerance_seconds == 300
    assert settings.webhook.max_body_bytes == 1_048_576
    assert settings.webhook.dedupe_ttl_seconds == 72 * 3600
    assert settings.debounce.window_ms == 1000 and settings.debounce.max_wait_ms == 10_000
    assert settings.guard.max_delete_count == 5 and settings.guard.max_delete_fraction == 0.2


def test_missing_environment_variable_is_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RENTIX_API_KEY", raising=False)
    text = f'[webhook]\nsecrets = ["{SECRET}"]\n' + TARGETS
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    # Like every other configuration error: the file, then the setting, then what is wrong.
    assert str(err.value) == (f"{config}: targets[0].api_key: found '${{RENTIX_API_KEY}}', but "
                              "the environment variable RENTIX_API_KEY is not set")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"webhook": {"secrets": [SECRET], "tolerance_seconds": "soon"}},
         ["webhook.tolerance_seconds", "'soon'", "valid integer"]),
        ({"webhook": {"secrets": ["not-a-secret"]}},
         ["webhook.secrets", "whsec_<base64>"]),
        ({"webhook": {"secrets": []}}, ["webhook.secrets", "at least 1"]),
        ({}, ["webhook: missing"]),
        ({"webhook": {"secrets": [SECRET]}, "debounce": {"window_ms": 5000, "max_wait_ms": 10}},
         ["debounce", "max_wait_ms must be at least window_ms"]),
        ({"webhook": {"secrets": [SECRET]}, "webhok": {}}, ["webhok: unknown setting"]),
        ({"webhook": {"secrets": [SECRET]}, "redis_url": "localhost:6379"},
         ["redis_url", "'localhost:6379'"]),
        ({"webhook": {"secrets": [SECRET]},
          "targets": [{"name": "r", "kind": "rentix", "base_url": "ftp://x", "api_key": "k"}]},
         ["targets[0].base_url", "'ftp://x'"]),
        ({"webhook": {"secrets": [SECRET]},
          "targets": [{"name": "r", "kind": "idealista", "base_url": "https://x"}]},
         ["targets[0].kind: 'idealista' is not a kind of target; use 'rentix' or 'travtus'"]),
        ({"webhook": {"secrets": [SECRET]},
          "targets": [{"name": "r", "base_url": "https://x"}]},
         ["targets[0].kind: missing; use 'rentix' or 'travtus'"]),
        ({"webhook": {"secrets": [SECRET]},
          "targets": [{"name": "t", "kind": "travtus", "base_url": "https://x"}]},
         ["targets[0].token_url: missing", "targets[0].client_id: missing"]),
        ({"webhook": {"secrets": [SECRET]}, "guard": {"max_delete_fraction": 2}},
         ["guard.max_delete_fraction", "found 2", "less than or equal to 1"]),
        ({"webhook": {"secrets": [SECRET]}, "redis": {"durability": "fast"}},
         ["redis.durability", "'fast'", "'fsync' or 'none'"]),
        ({"webhook": {"secrets": [SECRET]}, "redis": {"min_replicas": -1}},
         ["redis.min_replicas", "found -1", "greater than or equal to 0"]),
        ({"webhook": {"secrets": [SECRET]}, "redis": {"min_replicas": "two"}},
         ["redis.min_replicas", "'two'", "valid integer"]),
        ({"webhook": {"secrets": [SECRET]}, "redis": {"durability": "none", "min_replicas": 1}},
         ["redis", 'min_replicas applies only with durability = "fsync"']),
        ({"webhook": {"secrets": [SECRET]}, "redis": {"fsync": True}},
         ["redis.fsync: unknown setting"]),
        ({"webhook": {"secrets": [SECRET]}, "redis_url": "redis://h:6379/0?db=two"},
         ["redis_url", "Invalid value for 'db'"]),
    ],
)
def test_bad_settings_name_key_value_and_expectation(data: dict[str, object],
                                                     expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "bridge.toml")
    message = str(err.value)
    assert message.startswith("bridge.toml: ")
    for part in expected:
        assert part in message, message


def test_a_misspelt_kind_names_the_kinds_there_are_and_nothing_else(tmp_path: Path) -> None:
    text = (f'[webhook]\nsecrets = ["{SECRET}"]\n[[targets]]\nname = "r"\nkind = "rentx"\n'
            'base_url = "https://crm.rentix.md/api/v1"\napi_key = "k"\n')
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (f"{config}: targets[0].kind: 'rentx' is not a kind of target; "
                              "use 'rentix' or 'travtus'")


def test_redis_durability_defaults_to_fsync_without_replicas() -> None:
    settings = parse_settings({"webhook": {"secrets": [SECRET]}})
    assert settings.redis.durability == "fsync" and settings.redis.min_replicas == 0


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0",
    "rediss://bridge:p%40ss%3Aword@redis.example:6380/1?ssl_ca_certs=/etc/ca.pem",
    "unix:///run/redis/redis.sock?db=2",
])
def test_redis_url_forms_of_the_contract_load(url: str) -> None:
    settings = parse_settings({"webhook": {"secrets": [SECRET]}, "redis_url": url,
                               "redis": {"durability": "fsync", "min_replicas": 1}})
    assert settings.redis_url == url and settings.redis.min_replicas == 1


def test_duplicate_target_names_are_refused() -> None:
    target = {"name": "r", "kind": "rentix", "base_url": "https://x", "api_key": "k"}
    with pytest.raises(ConfigError, match="repeated: r"):
        parse_settings({"webhook": {"secrets": [SECRET]}, "targets": [target, target]})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "redis_url = "))
    with pytest.raises(ConfigError, match="BRIDGE_CONFIG"):
        load_settings(None)


# [reconcile] (contract section 5) -------------------------------------------------------------


def test_reconcile_defaults_to_daily_with_a_fifth_of_the_budget() -> None:
    settings = parse_settings({"webhook": {"secrets": [SECRET]}})
    assert settings.reconcile.interval_s == 86_400 and settings.reconcile.read_share == 0.2


def test_reconcile_section_of_the_contract_loads(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READ_SHARE", "0.5")
    text = (f'[webhook]\nsecrets = ["{SECRET}"]\n'
            '[reconcile]\ninterval_s = 0\nread_share = "${READ_SHARE}"\n')
    settings = load_settings(write(tmp_path, text))
    assert settings.reconcile.interval_s == 0  # off
    assert settings.reconcile.read_share == 0.5
    whole = parse_settings({"webhook": {"secrets": [SECRET]}, "reconcile": {"read_share": 1}})
    assert whole.reconcile.read_share == 1.0


SHARE_EXPECTED = "expected a number greater than 0 and at most 1"
INTERVAL_EXPECTED = "expected a whole number of seconds, 0 or more (0 turns reconciliation off)"


@pytest.mark.parametrize(("reconcile", "expected"), [
    ({"read_share": 0}, f"reconcile.read_share: found 0; {SHARE_EXPECTED}"),
    ({"read_share": -0.2}, f"reconcile.read_share: found -0.2; {SHARE_EXPECTED}"),
    ({"read_share": 1.5}, f"reconcile.read_share: found 1.5; {SHARE_EXPECTED}"),
    ({"read_share": float("nan")}, f"reconcile.read_share: found nan; {SHARE_EXPECTED}"),
    ({"read_share": True}, f"reconcile.read_share: found True; {SHARE_EXPECTED}"),
    ({"read_share": "most"}, f"reconcile.read_share: found 'most'; {SHARE_EXPECTED}"),
    ({"interval_s": -1}, f"reconcile.interval_s: found -1; {INTERVAL_EXPECTED}"),
    ({"interval_s": 1.5}, f"reconcile.interval_s: found 1.5; {INTERVAL_EXPECTED}"),
    ({"interval_s": "daily"}, f"reconcile.interval_s: found 'daily'; {INTERVAL_EXPECTED}"),
    ({"interval_s": False}, f"reconcile.interval_s: found False; {INTERVAL_EXPECTED}"),
    ({"interval": 60}, "reconcile.interval: unknown setting (found 60); check its spelling"),
])
def test_bad_reconcile_settings_name_the_field_the_value_and_the_range(
        reconcile: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"webhook": {"secrets": [SECRET]}, "reconcile": reconcile},
                       "bridge.toml")
    assert str(err.value).startswith(f"bridge.toml: {expected}"), str(err.value)
