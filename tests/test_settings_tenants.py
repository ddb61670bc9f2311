"""Tenants in the configuration (contract section 4a): [[tenants]], tenants_dir, the default
tenant of a file without them, each tenant's view, and credentials. Every problem stops loading
with one message naming the file, the setting, what was found and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.settings import (
    ConfigError,
    DebounceSettings,
    GuardSettings,
    Settings,
    TenantSettings,
    load_settings,
    parse_settings,
)
from tests.conftest import SECRET

OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0"  # base64 of "other-secret"

SINGLE = f"""
redis_url = "redis://127.0.0.1:6379/0"

[webhook]
secrets = ["{SECRET}"]
tolerance_seconds = 120

[debounce]
window_ms = 500
max_wait_ms = 4000

[guard]
max_delete_count = 9

[dashboard]
token = "deployment-token"

[[targets]]
name = "rentix"
kind = "rentix"
base_url = "https://crm.rentix.md/api/v1"
api_key = "key-default"
"""

TWO_TENANTS = f"""
redis_url = "redis://127.0.0.1:6379/0"

[webhook]
tolerance_seconds = 120

[debounce]
window_ms = 500
max_wait_ms = 4000

[guard]
max_delete_count = 9
max_delete_fraction = 0.3

[[tenants]]
name = "north-agency"
webhook_secrets = ["{SECRET}"]
dashboard_token = "north-token"
guard = {{ max_delete_count = 5 }}

[[tenants.targets]]
name = "rentix"
kind = "rentix"
base_url = "https://crm.rentix.md/api/v1"
api_key = "key-north"

[[tenants]]
name = "south"
webhook_secrets = ["{OTHER_SECRET}"]
debounce = {{ window_ms = 2000 }}

[[tenants.targets]]
name = "rentix"
kind = "rentix"
base_url = "https://crm.rentix.md/api/v1"
api_key = "key-south"

[[tenants.targets]]
name = "travtus"
kind = "travtus"
base_url = "https://api.travtus.com"
token_url = "https://api.travtus.com/oauth2/token"
client_id = "south-client"
client_secret = "s"
"""


def write(directory: Path, text: str, name: str = "bridge.toml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rentix(api_key: str = "k", **more: Any) -> dict[str, Any]:
    return {"name": "rentix", "kind": "rentix", "base_url": "https://crm.rentix.md/api/v1",
            "api_key": api_key, **more}


def tenant(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "webhook_secrets": [SECRET], **more}


def problem(data: dict[str, Any], base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "bridge.toml", base_dir)
    return str(err.value)


# The default tenant ---------------------------------------------------------------------------


def test_a_file_without_tenants_is_the_one_tenant_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, SINGLE))
    assert settings.tenant_names() == ["default"]
    assert settings.tenant == "default" and settings.tenants == []
    view = settings.for_tenant("default")
    assert view.model_dump() == settings.model_dump()  # the same settings, in meaning
    assert view.webhook.secrets == [SECRET] and view.target("rentix").api_key == "key-default"  # type: ignore[union-attr]
    assert view.guard.max_delete_count == 9 and view.debounce.window_ms == 500
    assert view.for_tenant("default") is view
    assert settings.tenant_token("default") is None  # the [dashboard] token alone reaches it
    assert list(settings.credentials()) == [("default", "rentix")]


def test_the_top_level_is_the_default_tenant_beside_the_others() -> None:
    settings = parse_settings({"webhook": {"secrets": [SECRET]}, "targets": [rentix("top")],
                               "tenants": [tenant("north", targets=[rentix("n")])]})
    assert settings.tenant_names() == ["default", "north"]
    default = settings.for_tenant("default")
    assert default.tenant == "default" and default.tenants == [] and default.tenants_dir is None
    assert default.target("rentix").api_key == "top"  # type: ignore[union-attr]
    assert settings.for_tenant("north").target("rentix").api_key == "n"  # type: ignore[union-attr]
    assert sorted(settings.credentials()) == [("default", "rentix"), ("north", "rentix")]


def test_without_top_level_secrets_a_tenant_may_be_named_default() -> None:
    settings = parse_settings({"tenants": [tenant("north"), tenant("default",
                                                                   dashboard_token="d")]})
    assert settings.tenant_names() == ["default", "north"]  # the default tenant first
    assert settings.for_tenant("default").tenant == "default"
    assert settings.tenant_token("default") == "d"


# Views ------------------------------------------------------------------------------------------


def test_two_tenants_each_see_their_own_with_overrides_merged(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, TWO_TENANTS))
    assert settings.tenant_names() == ["north-agency", "south"]

    north = settings.for_tenant("north-agency")
    assert north.tenant == "north-agency" and north.tenants == [] and north.tenants_dir is None
    assert north.webhook.secrets == [SECRET]
    assert north.webhook.tolerance_seconds == 120  # the deployment's
    assert north.guard == GuardSettings(max_delete_count=5, max_delete_fraction=0.3)
    assert north.debounce == DebounceSettings(window_ms=500, max_wait_ms=4000)
    assert [t.name for t in north.targets] == ["rentix"]
    assert north.target("rentix").api_key == "key-north"  # type: ignore[union-attr]
    assert north.redis_url == settings.redis_url and north.delivery == settings.delivery

    south = settings.for_tenant("south")
    assert south.webhook.secrets == [OTHER_SECRET]
    assert south.guard == settings.guard
    assert south.debounce == DebounceSettings(window_ms=2000, max_wait_ms=4000)
    assert [t.name for t in south.targets] == ["rentix", "travtus"]

    assert settings.tenant_token("north-agency") == "north-token"
    assert settings.tenant_token("south") is None
    assert settings.for_tenant("south") is south  # cached: asked for on every job
    assert south.for_tenant("south") is south
    with pytest.raises(KeyError):
        south.for_tenant("north-agency")  # a view knows its own tenant only


def test_unknown_tenant_is_a_key_error() -> None:
    settings = parse_settings({"tenants": [tenant("north")]})
    for ask in (settings.for_tenant, settings.tenant_token):
        with pytest.raises(KeyError) as err:
            ask("default")  # no top-level secrets: no default tenant
        assert err.value.args == ("default",)
        with pytest.raises(KeyError):
            ask("nowhere")
    single = parse_settings({"webhook": {"secrets": [SECRET]}})
    with pytest.raises(KeyError):
        single.for_tenant("north")


def test_a_copy_does_not_answer_with_the_original_s_views() -> None:
    from bridge.settings import DashboardSettings

    settings = parse_settings({"tenants": [tenant("north")]})
    before = settings.for_tenant("north")
    guarded = settings.model_copy(update={"dashboard": DashboardSettings(token="t")})
    assert guarded.for_tenant("north").dashboard.token == "t"
    assert before.dashboard.token is None and settings == parse_settings(
        {"tenants": [tenant("north")]})  # the cache is not part of the settings


# Overrides ------------------------------------------------------------------------------------


def test_an_override_invalid_once_merged_names_the_tenant_and_both_values() -> None:
    message = problem({"debounce": {"window_ms": 1000, "max_wait_ms": 3000},
                       "tenants": [tenant("a"), tenant("b", debounce={"window_ms": 5000})]})
    assert message == (
        "bridge.toml: tenants[1].debounce: found {'window_ms': 5000}, which over the top-level "
        "[debounce] gives {'window_ms': 5000, 'max_wait_ms': 3000}; expected max_wait_ms must "
        "be at least window_ms")


@pytest.mark.parametrize(("override", "expected"), [
    ({"guard": {"max_delete_cont": 5}},
     "tenants[0].guard.max_delete_cont: unknown setting (found 5); check its spelling"),
    ({"guard": {"max_delete_fraction": 2}},
     "tenants[0].guard.max_delete_fraction: found 2; expected input should be less than or "
     "equal to 1"),
    ({"debounce": {"window_ms": "soon"}}, "tenants[0].debounce.window_ms: found 'soon'"),
    ({"webhook_secrets": ["not-a-secret"]},
     "tenants[0].webhook_secrets: found ['not-a-secret']; expected each secret must look like "
     "whsec_<base64>"),
    ({"webhook_secrets": []}, "tenants[0].webhook_secrets: found []; expected list should have "
                              "at least 1 item"),
    ({"dashboard_token": "  "}, "tenants[0].dashboard_token: found '  '; expected a non-empty "
                                "token"),
    ({"targets": [rentix(), rentix()]}, "tenants[0].targets: found"),
    ({"targets": [{**rentix(), "kind": "idealista"}]},
     "tenants[0].targets[0].kind: 'idealista' is not a kind of target; use 'rentix' or "
     "'travtus'"),
    ({"targets": [{"name": "r", "kind": "rentix", "base_url": "https://x"}]},
     "tenants[0].targets[0].api_key: missing"),
    ({"webhok_secrets": [SECRET]}, "tenants[0].webhok_secrets: unknown setting"),
])
def test_a_bad_tenant_setting_names_the_tenant_key_and_value(override: dict[str, Any],
                                                             expected: str) -> None:
    message = problem({"tenants": [{**tenant("north"), **override}]})
    assert message.startswith(f"bridge.toml: {expected}"), message


def test_tenant_names_must_be_names() -> None:
    for bad in ("North", "north_agency", "", "a" * 64, "nörth"):
        message = problem({"tenants": [tenant(bad)]})
        assert message == (f"bridge.toml: tenants[0].name: found {bad!r}; expected a tenant "
                           "name: 1 to 63 characters, each a-z, 0-9 or -"), message
    assert parse_settings({"tenants": [tenant("a" * 63), tenant("0-9")]}).tenant_names() == [
        "a" * 63, "0-9"]


def test_duplicate_tenant_names_in_the_file_name_both_entries() -> None:
    message = problem({"tenants": [tenant("north"), tenant("south"), tenant("north")]})
    assert message == ("bridge.toml: tenants[2].name: found 'north', as in tenants[0].name; "
                       "expected a name no other tenant has (tenant names are unique across the "
                       "file and tenants_dir)")


def test_a_tenant_named_default_beside_top_level_secrets_names_both_places() -> None:
    message = problem({"webhook": {"secrets": [SECRET]}, "tenants": [tenant("default")]})
    assert message.startswith("bridge.toml: tenants[0].name: found 'default', the tenant the "
                              "top-level webhook.secrets configure"), message
    assert "expected another name, or webhook.secrets left out" in message


def test_top_level_targets_need_the_default_tenant() -> None:
    message = problem({"targets": [rentix()], "tenants": [tenant("north")]})
    assert message.startswith("bridge.toml: targets: found 1 top-level [[targets]], which "
                              "belong to the default tenant, but no webhook.secrets"), message


def test_no_tenant_at_all_still_asks_for_the_webhook_secrets() -> None:
    assert problem({}).startswith("bridge.toml: webhook: missing; field required")
    assert problem({"webhook": {"tolerance_seconds": 60}}).startswith(
        "bridge.toml: webhook.secrets: missing; field required")


def test_a_dashboard_token_is_its_tenant_s_own() -> None:
    message = problem({"dashboard": {"token": "all"},
                       "tenants": [tenant("a", dashboard_token="all"),
                                   tenant("b", dashboard_token="mine"),
                                   tenant("c", dashboard_token="mine")]})
    assert message == (
        "bridge.toml: tenants[0].dashboard_token: found the same token as dashboard.token "
        "(which reaches every tenant); expected a token of this tenant's own; "
        "tenants[2].dashboard_token: found the same token as tenants[1].dashboard_token; "
        "expected a token of this tenant's own")
    assert "mine" not in message.replace("tenant's own", "")  # tokens are not repeated


def test_the_tenant_of_a_view_is_not_a_file_setting() -> None:
    assert problem({"webhook": {"secrets": [SECRET]}, "tenant": "north"}).startswith(
        "bridge.toml: tenant: unknown setting (found 'north')")


# Credentials ----------------------------------------------------------------------------------


def test_credentials_are_shared_by_key_never_across_keys() -> None:
    travtus = {"name": "travtus", "kind": "travtus", "base_url": "https://api.travtus.com",
               "token_url": "https://api.travtus.com/oauth2/token", "client_id": "c",
               "client_secret": "one"}
    settings = parse_settings({
        "webhook": {"secrets": [SECRET]}, "targets": [rentix("shared")],
        "tenants": [tenant("a", targets=[rentix("shared"), travtus]),
                    tenant("b", targets=[rentix("own"), {**travtus, "client_secret": "two"}]),
                    tenant("c", targets=[{**travtus, "client_id": "d"}])]})
    ids = settings.credentials()
    assert set(ids) == {("default", "rentix"), ("a", "rentix"), ("a", "travtus"),
                        ("b", "rentix"), ("b", "travtus"), ("c", "travtus")}
    assert ids[("default", "rentix")] == ids[("a", "rentix")] != ids[("b", "rentix")]
    assert ids[("a", "travtus")] == ids[("b", "travtus")]  # one client at one token URL
    assert ids[("c", "travtus")] != ids[("a", "travtus")]
    assert ids[("a", "travtus")] != ids[("a", "rentix")]
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids.values())
    assert "shared" not in "".join(ids.values())


def test_targets_on_one_credential_agree_on_its_budget() -> None:
    message = problem({"tenants": [tenant("a", targets=[rentix("k")]),
                                   tenant("b", targets=[rentix("k", requests_per_minute=100)])]})
    assert message == (
        "bridge.toml: tenants[1].targets[0].requests_per_minute: found 100, but "
        "tenants[0].targets[0] calls with the same credentials at 280; expected the same "
        "requests_per_minute for every target on one set of credentials (they share one "
        "budget)")
    parse_settings({"tenants": [tenant("a", targets=[rentix("k")]),
                                tenant("b", targets=[rentix("l", requests_per_minute=100)])]})


# tenants_dir ----------------------------------------------------------------------------------

NORTH = f"""
webhook_secrets = ["{SECRET}"]
dashboard_token = "north-token"
guard = {{ max_delete_count = 1 }}

[[targets]]
name = "rentix"
kind = "rentix"
base_url = "https://crm.rentix.md/api/v1"
api_key = "key-north"
"""

SOUTH = f"""
name = "south"
webhook_secrets = ["{OTHER_SECRET}"]

[debounce]
max_wait_ms = 60000
"""


def test_tenants_dir_adds_a_tenant_per_file_in_name_order(tmp_path: Path) -> None:
    config = write(tmp_path, f'tenants_dir = "tenants.d"\n[webhook]\nsecrets = ["{SECRET}"]\n'
                             f'[[tenants]]\nname = "west"\nwebhook_secrets = ["{SECRET}"]\n')
    write(tmp_path / "tenants.d", SOUTH, "south.toml")
    write(tmp_path / "tenants.d", NORTH, "north.toml")
    write(tmp_path / "tenants.d", "not a tenant", "README.md")
    write(tmp_path / "tenants.d", "not = [valid", ".north.toml")  # an editor's
    settings = load_settings(config)
    assert settings.tenant_names() == ["default", "west", "north", "south"]
    assert settings.tenants_dir == "tenants.d"
    north = settings.for_tenant("north")
    assert north.target("rentix").api_key == "key-north"  # type: ignore[union-attr]
    assert north.guard.max_delete_count == 1 and north.guard.max_delete_fraction == 0.2
    assert settings.tenant_token("north") == "north-token"
    assert settings.for_tenant("south").debounce == DebounceSettings(max_wait_ms=60_000)
    assert settings.for_tenant("south").webhook.secrets == [OTHER_SECRET]
    assert settings.for_tenant("default").tenants == []
    # Safe to call again (SIGHUP): the directory is read afresh.
    (tmp_path / "tenants.d" / "south.toml").unlink()
    assert load_settings(config).tenant_names() == ["default", "west", "north"]


def test_tenants_dir_alone_names_every_tenant(tmp_path: Path) -> None:
    directory = tmp_path / "elsewhere"
    write(directory, NORTH, "north.toml")
    settings = parse_settings({"tenants_dir": str(directory)}, "bridge.toml")
    assert settings.tenant_names() == ["north"]
    assert isinstance(settings.tenants[0], TenantSettings)


def test_bad_toml_in_a_tenant_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n')
    bad = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\n\n[guard\n',
                "north.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    message = str(err.value)
    assert message.startswith(f"{bad}: not valid TOML ("), message
    assert "line 3" in message and message.endswith(")")
    assert str(bad).endswith("tenants.d/north.toml")


def test_a_bad_setting_in_a_tenant_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n')
    north = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\n[[targets]]\n'
                  'name = "rentix"\nkind = "rentix"\nbase_url = "https://x"\n', "north.toml")
    south = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\nredis_url = "x"\n',
                  "south.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (
        f"{north}: targets[0].api_key: missing; field required; "
        f"{south}: redis_url: unknown setting (found 'x'); check its spelling")


def test_a_tenant_file_s_name_is_its_stem(tmp_path: Path) -> None:
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n')
    other = write(tmp_path / "tenants.d", f'name = "south"\nwebhook_secrets = ["{SECRET}"]\n',
                  "north.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (f"{other}: name: found 'south'; expected 'north', the file's name "
                              "without .toml (or leave name out)")
    other.unlink()
    upper = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\n', "North.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value).startswith(f"{upper}: name: found 'North' (the file's name); expected "
                                     "a tenant name"), str(err.value)


def test_a_name_in_the_file_and_in_the_directory_names_both(tmp_path: Path) -> None:
    config = write(tmp_path, f'tenants_dir = "tenants.d"\n[[tenants]]\nname = "south"\n'
                             f'webhook_secrets = ["{SECRET}"]\n[[tenants]]\nname = "north"\n'
                             f'webhook_secrets = ["{SECRET}"]\n')
    north = write(tmp_path / "tenants.d", NORTH, "north.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (
        f"{north}: name: found 'north', as in tenants[1].name in {config}; expected a name no "
        "other tenant has (tenant names are unique across the file and tenants_dir)")


def test_a_default_file_in_the_directory_beside_top_level_secrets(tmp_path: Path) -> None:
    config = write(tmp_path, f'tenants_dir = "tenants.d"\n[webhook]\nsecrets = ["{SECRET}"]\n')
    default = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\n', "default.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value).startswith(
        f"{default}: name: found 'default', the tenant the top-level webhook.secrets in "
        f"{config} configure"), str(err.value)


def test_an_override_in_a_tenant_file_is_merged_with_the_main_file_s(tmp_path: Path) -> None:
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n[debounce]\nmax_wait_ms = 3000\n')
    north = write(tmp_path / "tenants.d", f'webhook_secrets = ["{SECRET}"]\n'
                  "debounce = { window_ms = 5000 }\n", "north.toml")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value).startswith(f"{north}: debounce: found {{'window_ms': 5000}}, which "
                                     "over the top-level [debounce] gives"), str(err.value)


def test_a_missing_tenants_dir_is_named(tmp_path: Path) -> None:
    config = write(tmp_path, f'tenants_dir = "tenants.d"\n[webhook]\nsecrets = ["{SECRET}"]\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (
        f"{config}: tenants_dir: found 'tenants.d', but {tmp_path / 'tenants.d'} does not "
        "exist; expected a directory of tenant files (*.toml), relative to the configuration "
        "file's directory unless absolute")


def test_an_empty_tenants_dir_without_secrets_configures_no_tenant(tmp_path: Path) -> None:
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n')
    (tmp_path / "tenants.d").mkdir()
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value).startswith(f"{config}: tenants_dir: found 'tenants.d'"), str(err.value)
    assert "holds no tenant files (*.toml), and no webhook.secrets" in str(err.value)


def test_environment_variables_in_a_tenant_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NORTH_RENTIX_KEY", "from-env")
    monkeypatch.setenv("NORTH_SECRET", SECRET)
    monkeypatch.delenv("NORTH_DASHBOARD_TOKEN", raising=False)
    config = write(tmp_path, 'tenants_dir = "tenants.d"\n')
    north = write(tmp_path / "tenants.d", NORTH.replace("key-north", "${NORTH_RENTIX_KEY}")
                  .replace(SECRET, "${NORTH_SECRET}"), "north.toml")
    settings = load_settings(config)
    assert settings.for_tenant("north").target("rentix").api_key == "from-env"  # type: ignore[union-attr]
    assert settings.for_tenant("north").webhook.secrets == [SECRET]
    north.write_text(NORTH.replace("north-token", "${NORTH_DASHBOARD_TOKEN}"))
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(err.value) == (f"{north}: dashboard_token: found '${{NORTH_DASHBOARD_TOKEN}}', "
                              "but the environment variable NORTH_DASHBOARD_TOKEN is not set")


def test_settings_built_directly_are_checked_too() -> None:
    with pytest.raises(ValueError, match=r"tenants\[1\]\.name: found 'a', as in tenants\[0\]"):
        Settings(tenants=[TenantSettings(name="a", webhook_secrets=[SECRET]),
                          TenantSettings(name="a", webhook_secrets=[SECRET])])
