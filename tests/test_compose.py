"""docker-compose.yml as given is a complete local stack, and docker-compose.prod.yml over it is
production (issue 28, item 6). Docker is not on the test machines: the files are read as
Compose reads them (anchors, merge keys, an override merged over the base) and checked against
the repository, the bridge's own configuration loader and the sandbox command's defaults."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bridge.cli.processes import sandbox
from bridge.settings import Settings, load_settings
from tests.conftest import SECRET
from tests.dashboard.test_prometheus import DASHBOARD, PROMTOOL, RULES, needs_promtool

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "docker-compose.yml"
PROD = ROOT / "docker-compose.prod.yml"
BRIDGE_SERVICES = ("web", "worker")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def merged(*paths: Path) -> dict[str, Any]:
    """Compose's merge of override files: maps merge key by key, environment by variable,
    volumes by their path in the container; anything else is replaced."""
    project = read(paths[0])
    for path in paths[1:]:
        for name, override in read(path).get("services", {}).items():
            service = project["services"].setdefault(name, {})
            for key, value in override.items():
                if key == "environment":
                    service[key] = {**service.get(key, {}), **value}
                elif key == "volumes":
                    kept = [v for v in service.get(key, [])
                            if mount_target(v) not in {mount_target(o) for o in value}]
                    service[key] = kept + value
                else:
                    service[key] = value
    return project


def mount(volume: str) -> tuple[str, str]:
    """A short-syntax volume's source and its path in the container (a ``${VAR:?…}`` source
    holds colons of its own)."""
    end = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
    return volume[:end], volume[end + 1:].split(":")[0]


def mount_target(volume: str) -> str:
    return mount(volume)[1]


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's mounts of repository files: path in the container -> path in the repo."""
    return {target: (ROOT / source).resolve()
            for source, target in map(mount, service.get("volumes", []))
            if source.startswith("./")}


def defaulted(value: str) -> str:
    """An environment value as Compose gives it when the variable is unset (``:?`` refuses:
    a stand-in here)."""
    return re.sub(r"\$\{[A-Za-z_]+:-([^}]*)\}", r"\1",
                  re.sub(r"\$\{[A-Za-z_]+:\?[^}]*\}", "set-by-the-operator", value))


def bridge_config(project: dict[str, Any], name: str) -> tuple[Path, dict[str, str]]:
    """The repo file a bridge service reads as BRIDGE_CONFIG, and its environment."""
    service = project["services"][name]
    environment = {k: defaulted(str(v)) for k, v in service["environment"].items()}
    return bind_mounts(service)[environment["BRIDGE_CONFIG"]], environment


def load_as_service(project: dict[str, Any], name: str,
                    monkeypatch: pytest.MonkeyPatch) -> Settings:
    config, environment = bridge_config(project, name)
    for variable in VAR.findall(config.read_text()):
        assert variable in environment, f"{name}: {config.name} names ${{{variable}}}"
        monkeypatch.setenv(variable, SECRET if "SECRET" in variable and "WEBHOOK" in variable
                           else environment[variable])
    return load_settings(config)


def published(service: dict[str, Any]) -> set[int]:
    return {int(str(port).split(":")[0]) for port in service.get("ports", [])}


def listens_on(service: dict[str, Any]) -> int:
    return int(re.search(r"--port (\d+)", service["command"]).group(1))  # type: ignore[union-attr]


STACKS = {"local": (BASE,), "production": (BASE, PROD)}


@pytest.fixture(params=sorted(STACKS))
def project(request: pytest.FixtureRequest) -> dict[str, Any]:
    return merged(*STACKS[request.param])


def test_every_service_is_an_image_or_a_build_of_this_repository(
        project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            assert all((ROOT / source).exists() for source in line.split()[1:-1]), line


def test_every_mounted_file_is_in_the_repository(project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        for volume in service.get("volumes", []):
            source = mount(volume)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}"
            elif source.startswith("${"):
                assert ":?" in source, f"{name}: {source} must be refused when unset"
            else:
                assert source in project["volumes"], f"{name}: undeclared volume {source}"


def test_the_local_stack_publishes_each_service_on_its_port() -> None:
    services = read(BASE)["services"]
    assert published(services["web"]) == {listens_on(services["web"])} == {8000}
    assert published(services["sandbox"]) == {listens_on(services["sandbox"])} == {8001}
    assert published(services["prometheus"]) == {9090}
    assert published(services["grafana"]) == {3000}
    assert "profiles" not in services["sandbox"]  # part of `docker compose up`


def test_the_bridge_gets_its_configuration_and_every_variable_it_names(
        project: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BRIDGE_SERVICES:
        settings = load_as_service(project, name, monkeypatch)
        assert urlsplit(settings.redis_url).hostname in project["services"]  # type: ignore[arg-type]
        assert {t.kind for t in settings.targets} == {"rentix", "travtus"}


def test_the_local_stack_delivers_to_the_sandbox_service_with_its_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = read(BASE)
    defaults = {p.name: p.default for p in sandbox.params}
    where = f"sandbox:{listens_on(project['services']['sandbox'])}"
    for name in BRIDGE_SERVICES:
        settings = load_as_service(project, name, monkeypatch)
        rentix, travtus = settings.target("rentix"), settings.target("travtus")
        assert rentix.base_url == f"http://{where}/rentix/api/v1"
        assert rentix.api_key == defaults["rentix_api_key"]  # type: ignore[union-attr]
        assert travtus.base_url == f"http://{where}/travtus"
        assert travtus.token_url == f"http://{where}/travtus/oauth2/token"  # type: ignore[union-attr]
        assert (travtus.client_id, travtus.client_secret) == (  # type: ignore[union-attr]
            defaults["travtus_client_id"], defaults["travtus_client_secret"])
    redis = " ".join(project["services"]["redis"]["command"].split())
    assert "--appendonly yes --appendfsync always" in redis and "noeviction" in redis


def test_production_reaches_the_real_portals_with_credentials_it_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = merged(BASE, PROD)
    assert project["services"]["sandbox"]["profiles"] == ["sandbox"]  # not started
    for name in BRIDGE_SERVICES:
        settings = load_as_service(project, name, monkeypatch)
        assert all(urlsplit(t.base_url).scheme == "https" for t in settings.targets)
        raw = project["services"][name]["environment"]
        assert all(":?" in str(raw[v]) for v in VAR.findall(
            bridge_config(project, name)[0].read_text())), "a secret defaulted in production"


def test_prometheus_and_grafana_mount_the_files_the_promtool_tests_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = read(BASE)
    services = project["services"]
    mounted = bind_mounts(services["prometheus"])
    config_in_container = Path(re.search(  # type: ignore[union-attr]
        r"--config\.file=(\S+)", " ".join(services["prometheus"]["command"])).group(1))
    directory = mounted[str(config_in_container.parent)]
    assert directory == RULES.parent
    prometheus = read(directory / config_in_container.name)
    assert RULES.name in prometheus["rule_files"]
    [scrape] = prometheus["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == [f"web:{listens_on(services['web'])}"]
    token = (directory / scrape["authorization"]["credentials_file"]).read_text().strip()
    assert token == load_as_service(project, "web", monkeypatch).dashboard.token
    grafana = bind_mounts(services["grafana"])
    [board] = [where for where, path in grafana.items() if path == DASHBOARD]
    provisioning = grafana["/etc/grafana/provisioning"]
    [provider] = read(provisioning / "dashboards" / "listing-bridge.yml")["providers"]
    assert Path(board).parent == Path(provider["options"]["path"])
    [source] = read(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["url"] == f"http://prometheus:{published(services['prometheus']).pop()}"


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_config_passes_as_the_files_header_says() -> None:
    assert PROMTOOL is not None
    config = RULES.parent / "prometheus.yml"
    assert "promtool check config deploy/prometheus/prometheus.yml" in config.read_text()
    result = subprocess.run([PROMTOOL, "check", "config", "deploy/prometheus/prometheus.yml"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
