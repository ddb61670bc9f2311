"""The configuration file (contract section 4) loaded into typed, validated settings."""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

CONFIG_ENV = "BRIDGE_CONFIG"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration problem, worded for the integrator: key, value found, what is expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookSettings(_Section):
    secrets: list[str] = Field(min_length=1)
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

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, secrets: list[str]) -> list[str]:
        for secret in secrets:
            if not secret.startswith("whsec_"):
                raise ValueError("each secret must look like whsec_<base64>")
            try:
                if not base64.b64decode(secret[6:], validate=True):
                    raise ValueError("a secret may not be empty")
            except binascii.Error as exc:
                raise ValueError("the part after whsec_ must be base64") from exc
        return secrets


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


class DashboardSettings(_Section):
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _not_blank(cls, token: str | None) -> str | None:
        # An empty token (say "${VAR}" with VAR set but empty) would let "Bearer " in.
        if token is not None and not token.strip():
            raise ValueError("a non-empty token (is the environment variable it names set but "
                             "empty?); leave token out to serve the dashboard on loopback only")
        return token


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

    @model_validator(mode="after")
    def _replicas_need_fsync(self) -> RedisSettings:
        if self.durability == "none" and self.min_replicas:
            raise ValueError('min_replicas applies only with durability = "fsync"')
        return self


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


class Settings(_Section):
    redis_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    redis: RedisSettings = RedisSettings()
    webhook: WebhookSettings
    debounce: DebounceSettings = DebounceSettings()
    targets: list[Target] = []
    guard: GuardSettings = GuardSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    dashboard: DashboardSettings = DashboardSettings()
    delivery: DeliverySettings = DeliverySettings()
    trace: TraceSettings = TraceSettings()
    retention: RetentionSettings = RetentionSettings()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        # Read as every process will read it: a URL redis-py cannot parse fails here, at load.
        from redis.asyncio.connection import parse_url

        if url is not None:
            try:
                parse_url(url)
            except ValueError as exc:
                raise ValueError(f"a Redis URL redis-py can read ({exc})") from None
        return url

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        names = [t.name for t in targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique; repeated: {', '.join(duplicates)}")
        return targets

    def target(self, name: str) -> RentixTarget | TravtusTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


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


def parse_settings(data: dict[str, Any], source: str = "configuration") -> Settings:
    try:
        data = expand_env(data)
    except ConfigError as exc:  # named like every other problem: file, then setting
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, data) for e in exc.errors(include_url=False)]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the TOML file named by ``path`` or ``$BRIDGE_CONFIG``."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    return parse_settings(data, str(file))
