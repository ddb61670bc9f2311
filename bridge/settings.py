"""The configuration file (contract section 4) loaded into typed, validated settings."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

CONFIG_ENV = "BRIDGE_CONFIG"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Tenants (contract section 4a). The same rule as bridge.tenancy.NAME (a key prefix is made of it).
DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"^[a-z0-9-]{1,63}$")


class ConfigError(Exception):
    """A configuration problem, worded for the integrator: key, value found, what is expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _whsec(secrets: list[str]) -> list[str]:
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ValueError("each secret must look like whsec_<base64>")
        try:
            if not base64.b64decode(secret[6:], validate=True):
                raise ValueError("a secret may not be empty")
        except binascii.Error as exc:
            raise ValueError("the part after whsec_ must be base64") from exc
    return secrets


# A list of webhook signing secrets (``[webhook] secrets``, a tenant's ``webhook_secrets``): at
# least one when given, each ``whsec_<base64>``.
WebhookSecrets = Annotated[list[str], Field(min_length=1), AfterValidator(_whsec)]


class WebhookSettings(_Section):
    # The default tenant's secrets; left out when [[tenants]] or tenants_dir name the tenants
    # (Settings checks that some tenant is configured). Given, there must be at least one.
    secrets: WebhookSecrets = []
    tolerance_seconds: int = Field(300, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    dedupe_ttl_seconds: int = Field(72 * 3600, ge=60)
    # Events waiting to be folded (lb:inbox) at which the webhook answers 503 with Retry-After
    # (a redelivery of a stored event is still answered 200): ~1.3 KB each for a 1 KB event.
    max_inbox_events: int = Field(200_000, ge=1)
    # The webhook answers 503 with Retry-After once Redis's used_memory reaches this share of
    # its maxmemory (read at most once a second): the rest is left for the workers to fold the
    # inbox into state and flush it. No maxmemory set: no ceiling of this kind.
    max_memory_share: float = Field(0.8, gt=0, le=1)


class DebounceSettings(_Section):
    window_ms: int = Field(1000, ge=0)
    max_wait_ms: int = Field(10_000, ge=0)

    @model_validator(mode="after")
    def _order(self) -> DebounceSettings:
        if self.max_wait_ms < self.window_ms:
            raise ValueError("max_wait_ms must be at least window_ms")
        return self


class GuardSettings(_Section):
    max_delete_count: int = Field(5, ge=0)
    max_delete_fraction: float = Field(0.2, ge=0, le=1)


class ReconcileSettings(_Section):
    # Every group of every target is compared with its portal once per interval (0: off).
    interval_s: int = 86_400
    # The most of a target's requests_per_minute that reading back may take.
    read_share: float = 0.2

    @field_validator("interval_s", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> int:
        number = _number(value)
        if number is None or number < 0 or number != int(number):
            raise ValueError("a whole number of seconds, 0 or more (0 turns reconciliation off)")
        return int(number)

    @field_validator("read_share", mode="before")
    @classmethod
    def _share(cls, value: Any) -> float:
        number = _number(value)
        if number is None or not 0 < number <= 1:
            raise ValueError("a number greater than 0 and at most 1 (the share of the target's "
                             "requests_per_minute that reading back may take)")
        return number


MAX_TRACE_DAYS = 365


class TraceSettings(_Section):
    # How long a listing's story (``bridge trace``) is kept: an entry is shown this long, and a
    # listing's whole story expires this long after its last entry.
    retention_days: float = 7

    @field_validator("retention_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> float:
        return _days(value, MAX_TRACE_DAYS)

    @property
    def retention_ms(self) -> int:
        return _ms(self.retention_days)


MAX_HORIZON_DAYS = 3650


class RetentionSettings(_Section):
    # How long the bridge remembers a deleted listing (its tombstone: version and time, once
    # every target has accepted the deletion), and so how late an event may arrive: one whose
    # occurred_at is older than this is refused as stale, so an expired tombstone can never let
    # a late event bring a listing back. Per-group markers and histories idle this long expire.
    horizon_days: float = 30

    @field_validator("horizon_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> float:
        return _days(value, MAX_HORIZON_DAYS)

    @property
    def horizon_ms(self) -> int:
        return _ms(self.horizon_days)


def _days(value: Any, most: float) -> float:
    """A number of days in (0, most], fractions allowed."""
    number = _number(value)
    if number is None or not 0 < number <= most:
        raise ValueError(f"a number of days greater than 0 and at most {most} "
                         "(fractions allowed: 0.5 keeps twelve hours)")
    return number


def _ms(days: float) -> int:
    return max(1, round(days * 86_400_000))


def _number(value: Any) -> float | None:
    """A TOML number, or a string holding one (``${VAR}``); never a boolean; None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _not_blank(token: str | None, leave_out: str) -> str | None:
    # An empty token (say "${VAR}" with VAR set but empty) would let "Bearer " in.
    if token is not None and not token.strip():
        raise ValueError("a non-empty token (is the environment variable it names set but "
                         f"empty?); {leave_out}")
    return token


class DashboardSettings(_Section):
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _not_blank(cls, token: str | None) -> str | None:
        return _not_blank(token, "leave token out to serve the dashboard on loopback only")


class DeliverySettings(_Section):
    job_timeout_s: int = Field(60, ge=5)
    max_jobs: int = Field(10, ge=1)
    retry_base_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    poll_interval_ms: int = Field(100, ge=10)
    # A flush holds its group by a lease it renews; a worker that dies holds it this long.
    lease_ms: int = Field(10_000, ge=1_000)


class RedisSettings(_Section):
    # "fsync": a 202 means the event is fsynced to the AOF (and on ``min_replicas`` replicas);
    # a Redis configured so that it cannot promise that is refused at start. "none":
    # acknowledge on write, for development only.
    durability: Literal["fsync", "none"] = "fsync"
    min_replicas: int = Field(0, ge=0)
    # True: redis_url names seed node(s) of a Redis Cluster (redis://h1:p1,h2:p2), every key
    # of a tenant in one slot; arq's queue then lives on jobs_url, a plain Redis (arq cannot
    # run on a cluster), which holds soft state only.
    cluster: bool = False
    jobs_url: str = Field("", pattern=r"^((redis|rediss|unix)://.*)?$")

    @model_validator(mode="after")
    def _replicas_need_fsync(self) -> RedisSettings:
        if self.durability == "none" and self.min_replicas:
            raise ValueError('min_replicas applies only with durability = "fsync"')
        if self.cluster and not self.jobs_url:
            raise ValueError("cluster = true needs jobs_url: a plain Redis for the workers' job "
                             "queue (arq cannot run on a cluster); it holds soft state only")
        if self.jobs_url:
            try:
                _readable(self.jobs_url)
            except ValueError as exc:
                raise ValueError(f"jobs_url {self.jobs_url!r}: {exc}") from None
        return self


def _readable(url: str) -> None:
    """A Redis URL redis-py can read, as every process will read it."""
    from redis.asyncio.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        raise ValueError(f"a Redis URL redis-py can read ({exc})") from None


def seed_urls(url: str) -> list[str]:
    """The URL of each seed node a cluster's ``redis_url`` names (``redis://h1:p1,h2:p2``):
    the same scheme, credentials, database and options for each host."""
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    return [f"{scheme}://{userinfo}{at}{host}{slash}{tail}" for host in hosts.split(",") if host]


class RentixTarget(_Section):
    # How delivery reaches this portal: each listing on its own (``bridge.delivery.per_listing``).
    mode: ClassVar[Literal["per_listing"]] = "per_listing"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["rentix"]
    base_url: str = Field(pattern=r"^https?://")
    api_key: str = Field(min_length=1)
    delete_behaviour: Literal["hidden", "delete", "none"] = "hidden"
    adopt: bool = False
    requests_per_minute: int = Field(280, ge=1)  # under the documented 300/min
    # Bulk (POST /listings/bulk, up to 100 operations): under the documented 30/min; 0 sends
    # single PUTs only. Writes go by bulk once more are waiting than single PUTs would send in
    # bulk_after_s seconds (at requests_per_minute).
    bulk_per_minute: int = Field(28, ge=0)
    bulk_after_s: float = Field(5.0, gt=0)
    # While bulks drain the outbox, the sender also spends the general budget bulks leave free
    # (requests_per_minute less one request per bulk slot) on single PUTs of the
    # longest-waiting writes, fairly chosen; each keeps its channel and key for every retry.
    # False: bulks alone drain the outbox (PUTs the lane took already are still answered by
    # PUT). Not part of the public contract, hence the default.
    put_lane: bool = True
    # With bulk on, the sender also takes the changed listings of groups waiting for their
    # flush (creates and updates no guard judges), instead of waiting out the group's debounce
    # (bridge/delivery/ahead.py). False: every write waits for its group's flush. Not part of
    # the public contract, hence the default.
    ahead: bool = True

    @property
    def lane_per_minute(self) -> int:
        """The general budget the bulks leave the PUT lane, a minute: requests_per_minute less
        one request per bulk slot; 0 when the lane is off or the bulks leave it nothing (then
        it takes no write: one it took before goes again at the general rate)."""
        if not self.put_lane:
            return 0
        return max(0, self.requests_per_minute - max(1, self.bulk_per_minute))

    @property
    def bulk_threshold(self) -> int:
        """More writes waiting than this go by bulk (when bulk is on)."""
        return max(1, int(self.requests_per_minute * self.bulk_after_s / 60))


class TravtusTarget(_Section):
    # The group's whole state in one call (``bridge.delivery.group_sync``).
    mode: ClassVar[Literal["group_sync"]] = "group_sync"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["travtus"]
    base_url: str = Field(pattern=r"^https?://")
    token_url: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    requests_per_minute: int = Field(6000, ge=1)


Target = Annotated[RentixTarget | TravtusTarget, Field(discriminator="kind")]


def credential_id(target: RentixTarget | TravtusTarget) -> str:
    """The id of the portal credentials ``target`` calls with (they, not the tenant, own a rate
    budget): the same for two targets on one Rentix API key (or one Travtus client at one token
    URL), different for two keys; the key is not written out in it."""
    if isinstance(target, RentixTarget):
        parts = [target.kind, target.base_url.rstrip("/"), target.api_key]
    else:
        parts = [target.kind, target.base_url.rstrip("/"), target.client_id,
                 target.token_url.rstrip("/")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _unique_targets(targets: list[Target]) -> list[Target]:
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"target names must be unique; repeated: {', '.join(duplicates)}")
    return targets


def _overrides(section: type[_Section]) -> type[_Section]:
    """A tenant's partial override of ``section``: every field optional (absent: the top-level
    section's value), each checked as in ``section``, an unknown one an error. What only holds
    across fields (max_wait_ms >= window_ms) is checked once merged with the top level."""
    fields: dict[str, Any] = {}
    for name, info in section.model_fields.items():
        field = copy.copy(info)
        field.default, field.default_factory = None, None
        fields[name] = (Optional[info.annotation], field)  # noqa: UP045 (a runtime type)
    model: type[_Section] = create_model(
        f"{section.__name__.removesuffix('Settings')}Overrides", __base__=_Section, **fields)
    return model


if TYPE_CHECKING:
    GuardOverrides = _Section
    DebounceOverrides = _Section
else:
    GuardOverrides = _overrides(GuardSettings)
    DebounceOverrides = _overrides(DebounceSettings)


def _tenant_name(name: str) -> str:
    if not TENANT_NAME.match(name):
        raise ValueError("a tenant name: 1 to 63 characters, each a-z, 0-9 or -")
    return name


class TenantSettings(_Section):
    """One ``[[tenants]]`` entry, or one file of ``tenants_dir`` (contract section 4a)."""

    name: Annotated[str, AfterValidator(_tenant_name)]
    webhook_secrets: WebhookSecrets
    # Reaches this tenant's pages, API and actions only (the [dashboard] token reaches all).
    dashboard_token: str | None = None
    guard: GuardOverrides | None = None
    debounce: DebounceOverrides | None = None
    targets: list[Target] = []

    @field_validator("dashboard_token")
    @classmethod
    def _not_blank(cls, token: str | None) -> str | None:
        return _not_blank(token, "leave dashboard_token out to let only the [dashboard] token "
                                 "reach this tenant")

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        return _unique_targets(targets)


# What the views of one Settings are cached under in its __dict__ (pydantic leaves such entries
# out of ==, model_dump and validation; model_copy copies them, hence the owner's id with them).
_VIEWS = "_tenant_views"
# An error that carries its own wording, location included (see _describe).
_WORDED = "bridge_config"


class Settings(_Section):
    redis_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    redis: RedisSettings = RedisSettings()
    webhook: WebhookSettings = WebhookSettings()
    debounce: DebounceSettings = DebounceSettings()
    targets: list[Target] = []
    guard: GuardSettings = GuardSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    dashboard: DashboardSettings = DashboardSettings()
    delivery: DeliverySettings = DeliverySettings()
    trace: TraceSettings = TraceSettings()
    retention: RetentionSettings = RetentionSettings()
    # The tenants besides the default one: the file's [[tenants]], then tenants_dir's files in
    # name order (load_settings reads them). The default tenant is the top level's
    # (webhook.secrets, [[targets]], [guard], [debounce]) when webhook.secrets is given, or when
    # there are no tenants at all.
    tenants: list[TenantSettings] = []
    tenants_dir: str | None = Field(None, min_length=1)
    # The tenant this is a view of (``for_tenant``); the whole configuration's is "default".
    tenant: Annotated[str, AfterValidator(_tenant_name)] = DEFAULT_TENANT

    @model_validator(mode="after")
    def _redis_url(self) -> Settings:
        # Read as every process will read it: a URL redis-py cannot parse fails here, at load.
        url = self.redis_url
        if url is None:
            return self
        seeds = seed_urls(url) if self.redis.cluster else [url]
        if not self.redis.cluster and "," in url.partition("://")[2].partition("/")[0]:
            raise PydanticCustomError(_WORDED, "{problem}", {"problem": (
                f"redis_url: found {url!r}; several hosts name the seed nodes of a cluster: "
                "set [redis] cluster = true (and jobs_url)")})
        for seed in seeds:
            try:
                _readable(seed)
            except ValueError as exc:
                raise PydanticCustomError(_WORDED, "{problem}", {
                    "problem": f"redis_url: found {url!r}; expected {exc}"}) from None
        return self

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        return _unique_targets(targets)

    @model_validator(mode="after")
    def _tenants_agree(self) -> Settings:
        if not self.webhook.secrets and not self.tenants and self.tenants_dir is None:
            # As before tenants: a file that configures no tenant lacks the default's secrets.
            where = "webhook.secrets" if "webhook" in self.model_fields_set else "webhook"
            raise PydanticCustomError(_WORDED, "{problem}", {
                "problem": f"{where}: missing; field required (or name the tenants with "
                           "[[tenants]] or tenants_dir)"})
        origins = [_Origin(None, f"tenants[{i}]") for i in range(len(self.tenants))]
        problems = _tenant_problems(self, origins, "")
        if problems:
            raise PydanticCustomError(_WORDED, "{problem}",
                                      {"problem": "; ".join(text for _, text in problems)})
        return self

    def target(self, name: str) -> RentixTarget | TravtusTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    # Tenants (contract section 4a) ------------------------------------------------------------

    def _has_default(self) -> bool:
        """Whether the top level is a tenant of its own (``self.tenant``, "default")."""
        return bool(self.webhook.secrets) or not self.tenants

    def tenant_names(self) -> list[str]:
        """Every tenant, in configuration order, the default tenant first."""
        names = [entry.name for entry in self.tenants]
        if self._has_default():
            names.insert(0, self.tenant)
        elif DEFAULT_TENANT in names:
            names.remove(DEFAULT_TENANT)
            names.insert(0, DEFAULT_TENANT)
        return names

    def _entry(self, name: str) -> TenantSettings | None:
        """Tenant ``name``'s entry; None for the top level's own tenant; KeyError if none."""
        if self._has_default() and name == self.tenant:
            return None
        for entry in self.tenants:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def _views(self) -> dict[str, Any]:
        cached = self.__dict__.get(_VIEWS)
        if cached is None or cached[0] != id(self):  # none yet, or a model_copy's of another's
            cached = (id(self), {})
            self.__dict__[_VIEWS] = cached
        views: dict[str, Any] = cached[1]
        return views

    def for_tenant(self, name: str) -> Settings:
        """The settings as tenant ``name`` sees them: its webhook secrets, its targets, [guard]
        and [debounce] with its overrides, ``tenant`` = name, no tenants of its own; every other
        section the deployment's. Cached: ask as often as needed. KeyError for no such tenant."""
        views = self._views()
        view = views.get(name)
        if view is None:
            view = views[name] = self._view(name)
        assert isinstance(view, Settings)
        return view

    def _view(self, name: str) -> Settings:
        entry = self._entry(name)
        if entry is None:
            if not self.tenants and self.tenants_dir is None:
                return self  # already a view of its one tenant
            update: dict[str, Any] = {"tenants": [], "tenants_dir": None}
        else:
            update = {
                "webhook": self.webhook.model_copy(
                    update={"secrets": list(entry.webhook_secrets)}),
                "targets": list(entry.targets),
                "guard": _merged(self.guard, entry.guard),
                "debounce": _merged(self.debounce, entry.debounce),
                "tenant": name, "tenants": [], "tenants_dir": None,
            }
        view = self.model_copy(update=update)
        view.__dict__.pop(_VIEWS, None)
        return view

    def tenant_token(self, name: str) -> str | None:
        """Tenant ``name``'s own dashboard token (None: the [dashboard] token alone reaches it,
        as for the default tenant of the top level). KeyError for no such tenant."""
        entry = self._entry(name)
        return None if entry is None else entry.dashboard_token

    def credentials(self) -> dict[tuple[str, str], str]:
        """(tenant, target name) -> the id of the portal credentials it calls with
        (``credential_id``): rate budgets are shared by credentials."""
        views = self._views()
        known = views.get("\0credentials")
        if known is None:
            known = views["\0credentials"] = {
                (name, target.name): credential_id(target)
                for name in self.tenant_names() for target in self.for_tenant(name).targets}
        return dict(known)


def _merged(base: _Section, overrides: _Section | None) -> Any:
    """``base`` (a top-level section) with a tenant's ``overrides`` laid over it, validated."""
    if overrides is None:
        return base
    changes = overrides.model_dump(exclude_none=True)
    if not changes:
        return base
    return type(base).model_validate({**base.model_dump(), **changes})


class _Origin:
    """Where a tenant was configured: ``file`` (None: the main file) and the key its settings
    sit under there ("tenants[1]"; "" for a file of tenants_dir)."""

    __slots__ = ("file", "key")

    def __init__(self, file: str | None, key: str) -> None:
        self.file, self.key = file, key

    def at(self, setting: str) -> str:
        return f"{self.key}.{setting}" if self.key else setting

    def seen_from(self, other: _Origin, setting: str, main: str) -> str:
        """Setting ``setting`` of this tenant, named as seen from a problem at ``other``."""
        if self.file == other.file:
            return self.at(setting)
        return f"{self.at(setting)} in {self.file or main or 'the configuration file'}"


def _tenant_problems(settings: Settings, origins: list[_Origin],
                     main: str) -> list[tuple[str | None, str]]:
    """What is wrong across the tenants of ``settings`` (each configured at ``origins``; the
    main file named ``main``), as (file, problem) pairs; file None: the main file."""
    problems: list[tuple[str | None, str]] = []
    top = _Origin(None, "")
    secrets_given = bool(settings.webhook.secrets)

    def add(origin: _Origin, text: str) -> None:
        problems.append((origin.file, text))

    seen: dict[str, _Origin] = {}
    for entry, origin in zip(settings.tenants, origins, strict=True):
        if entry.name == DEFAULT_TENANT and secrets_given:
            add(origin, f"{origin.at('name')}: found 'default', the tenant the top-level "
                f"{top.seen_from(origin, 'webhook.secrets', main)} configure (with the top-level "
                "[[targets]], [guard] and [debounce]); expected another name, or webhook.secrets "
                "left out so that this entry is the default tenant")
        elif entry.name in seen:
            add(origin, f"{origin.at('name')}: found {entry.name!r}, as in "
                f"{seen[entry.name].seen_from(origin, 'name', main)}; expected a name no other "
                "tenant has (tenant names are unique across the file and tenants_dir)")
        seen.setdefault(entry.name, origin)
        for setting, base in (("guard", settings.guard), ("debounce", settings.debounce)):
            overrides = getattr(entry, setting)
            try:
                _merged(base, overrides)
            except ValidationError as exc:
                changes = overrides.model_dump(exclude_none=True)
                merged = {**base.model_dump(), **changes}
                for error in exc.errors(include_url=False):
                    add(origin, f"{origin.at(setting)}: found {changes!r}, which over the "
                        f"top-level [{setting}] gives {merged!r}; expected {_expectation(error)}")

    if settings.targets and not settings._has_default():
        add(top, f"targets: found {len(settings.targets)} top-level [[targets]], which belong "
            "to the default tenant, but no webhook.secrets, so there is none; expected "
            "webhook.secrets given, or these targets moved into a tenant ([[tenants.targets]])")

    tokens: dict[str, tuple[_Origin, str]] = {}
    if settings.dashboard.token is not None:
        tokens[settings.dashboard.token] = (top, "dashboard.token")
    for entry, origin in zip(settings.tenants, origins, strict=True):
        token = entry.dashboard_token
        if token is None:
            continue
        if token in tokens:  # the token names the tenant it reaches: it must be its own
            first, setting = tokens[token]
            reach = " (which reaches every tenant)" if first is top else ""
            add(origin, f"{origin.at('dashboard_token')}: found the same token as "
                f"{first.seen_from(origin, setting, main)}{reach}; expected a token of this "
                "tenant's own")
        else:
            tokens[token] = (origin, "dashboard_token")

    # Targets on one set of credentials share one budget: they must agree on its size.
    budgets: dict[tuple[str, str], tuple[int, _Origin, str]] = {}
    placed: list[tuple[_Origin, list[Target]]] = []
    if settings._has_default():
        placed.append((top, list(settings.targets)))
    placed += [(origin, list(entry.targets))
               for entry, origin in zip(settings.tenants, origins, strict=True)]
    for origin, targets in placed:
        for index, target in enumerate(targets):
            where = f"targets[{index}]"
            credential = credential_id(target)
            for rate in ("requests_per_minute", "bulk_per_minute"):
                if not hasattr(target, rate):
                    continue
                value = getattr(target, rate)
                known, at, place = budgets.setdefault((credential, rate),
                                                      (value, origin, where))
                if known != value:
                    add(origin, f"{origin.at(where)}.{rate}: found {value}, but "
                        f"{at.seen_from(origin, place, main)} calls with the same "
                        f"credentials at {known}; expected the same {rate} for every target "
                        "on one set of credentials (they share one budget)")
    return problems


def expand_env(value: Any, path: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` in strings with the environment's value; a missing one is an error."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else k, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{path}: found {value!r}, but the environment variable {name} is not set"
                )
            return env[name]

        return _VAR.sub(substitute, value)
    return value


def _describe(error: ErrorDetails, data: dict[str, Any]) -> str:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part in _KINDS)]
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    if error["type"] == _WORDED:  # worded where it was found, location and all
        return str(error["msg"])
    if error["type"] == "missing":
        return f"{key}: missing; {_expectation(error)}"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting (found {error['input']!r}); check its spelling"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return _wrong_kind(key, error)
    found = error.get("input")
    return f"{key or '(top level)'}: found {found!r}; expected {_expectation(error)}"


_KINDS = {"rentix", "travtus"}


def _wrong_kind(key: str, error: ErrorDetails) -> str:
    """A target whose ``kind`` names no adapter: say which kinds there are, in the file's words
    (pydantic's would speak of input tags and discriminators)."""
    kinds = " or ".join(repr(kind) for kind in sorted(_KINDS))
    if error["type"] == "union_tag_not_found":
        return f"{key}.kind: missing; use {kinds}"
    found = error["input"].get("kind") if isinstance(error["input"], dict) else None
    return f"{key}.kind: {found!r} is not a kind of target; use {kinds}"


def _expectation(error: ErrorDetails) -> str:
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else "a valid value"


def parse_settings(data: dict[str, Any], source: str = "configuration",
                   base_dir: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from a configuration file's ``data`` (``source`` names it in messages). A
    relative tenants_dir is read from ``base_dir`` (the file's own directory; default: the
    working directory), its tenants added after the file's own."""
    data = _expanded(data, source)
    if "tenant" in data:  # a view's, set by for_tenant; a file names its tenants otherwise
        raise ConfigError(f"{source}: tenant: unknown setting (found {data['tenant']!r}); "
                          "name tenants with [[tenants]] or tenants_dir")
    settings = _validated(Settings, data, source)
    if settings.tenants_dir is None:
        return settings
    directory = Path(settings.tenants_dir)
    if not directory.is_absolute():
        directory = Path(base_dir if base_dir is not None else ".") / directory
    found = _read_tenants_dir(directory, settings.tenants_dir, source)
    origins = [_Origin(None, f"tenants[{i}]") for i in range(len(settings.tenants))]
    origins += [_Origin(file, "") for file, _ in found]
    whole = settings.model_copy(update={"tenants": [*settings.tenants,
                                                   *(entry for _, entry in found)]})
    whole.__dict__.pop(_VIEWS, None)
    problems = _tenant_problems(whole, origins, source)
    if not whole.tenants and not whole.webhook.secrets:
        problems.append((None, f"tenants_dir: found {settings.tenants_dir!r} ({directory}), "
                               "which holds no tenant files (*.toml), and no webhook.secrets; "
                               "expected at least one tenant"))
    if problems:
        raise ConfigError(_by_file(problems, source))
    return whole


def _expanded(data: dict[str, Any], source: str) -> dict[str, Any]:
    try:
        expanded: dict[str, Any] = expand_env(data)
    except ConfigError as exc:  # named like every other problem: file, then setting
        raise ConfigError(f"{source}: {exc}") from None
    return expanded


_M = TypeVar("_M", bound=BaseModel)


def _validated(model: type[_M], data: dict[str, Any], source: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, data) for e in exc.errors(include_url=False)]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _by_file(problems: list[tuple[str | None, str]], main: str) -> str:
    """Problems as one message: each file named once, before its problems."""
    files: dict[str, list[str]] = {}
    for file, text in problems:
        files.setdefault(file or main, []).append(text)
    return "; ".join(f"{file}: " + "; ".join(texts) for file, texts in files.items())


def _read_toml(file: Path, what: str) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the {what} ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None


def _read_tenants_dir(directory: Path, given: str,
                      source: str) -> list[tuple[str, TenantSettings]]:
    """The tenants of ``directory``'s ``*.toml`` files, in name order, each with its file
    (dot files, an editor's, are left out). All of their problems in one ConfigError."""
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigError(f"{source}: tenants_dir: found {given!r}, but {directory} {state}; "
                          "expected a directory of tenant files (*.toml), relative to the "
                          "configuration file's directory unless absolute")
    try:
        files = sorted(path for path in directory.iterdir()
                       if path.suffix == ".toml" and not path.name.startswith(".")
                       and path.is_file())
    except OSError as exc:
        raise ConfigError(f"{source}: tenants_dir: cannot list {directory} "
                          f"({exc.strerror})") from None
    tenants: list[tuple[str, TenantSettings]] = []
    problems: list[str] = []
    for file in files:
        try:
            tenants.append((str(file), _tenant_file(file)))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return tenants


def _tenant_file(file: Path) -> TenantSettings:
    """One file of tenants_dir: the keys of one [[tenants]] entry, its [[targets]] at the top;
    ``name`` is the file's stem, which the file may repeat but not contradict."""
    data = _expanded(_read_toml(file, "tenant file"), str(file))
    if "name" not in data:
        if not TENANT_NAME.match(file.stem):
            raise ConfigError(f"{file}: name: found {file.stem!r} (the file's name); expected "
                              "a tenant name: 1 to 63 characters, each a-z, 0-9 or - (rename "
                              "the file)")
        data["name"] = file.stem
    elif data["name"] != file.stem:
        raise ConfigError(f"{file}: name: found {data['name']!r}; expected {file.stem!r}, the "
                          "file's name without .toml (or leave name out)")
    return _validated(TenantSettings, data, str(file))


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the TOML file named by ``path`` or ``$BRIDGE_CONFIG``, and its tenants_dir's files.
    Reads everything afresh each time (a process reloads on SIGHUP by calling it again)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    file = Path(path)
    data = _read_toml(file, "configuration file")
    return parse_settings(data, str(file), file.parent)


def reread(path: str | None, log: logging.Logger) -> Settings | None:
    """The configuration file read again for a SIGHUP (``serve`` and ``worker``), its
    credentials registered; None when there is no file or it is invalid (logged with its name
    and line): the previous configuration stays."""
    if path is None:
        log.warning("SIGHUP: no configuration file to reload")
        return None
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        log.error("SIGHUP: configuration not reloaded, the previous one stays: %s", exc)
        return None
    from bridge import tenancy

    tenancy.register_credentials(settings.credentials())
    log.info("SIGHUP: configuration reloaded from %s; tenants: %s", path,
             ", ".join(settings.tenant_names()) or "none")
    return settings
