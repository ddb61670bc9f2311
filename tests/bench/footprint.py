"""What the bridge's keys cost in Redis: ``MEMORY USAGE`` summed over every ``lb:*`` key, by key
family, split by lifetime, beside the server's ``used_memory``.

The key sum leaves out arq's keys and the server's own overhead (buffers, script cache, the
allocator's slack), so it says what the bridge's layout costs; ``used_memory`` says what the
server as a whole grew by. A family is a key with its group, listing ref and numbers replaced by
placeholders (``lb:listing:{ref}``, ``lb:accepted:travtus:{group}``), so a change to the key layout
shows up as a line of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from bridge.constants import ks

BATCH = 1_000  # keys per pipeline: one round trip per thousand keys


@dataclass
class Family:
    keys: int = 0
    bytes: int = 0
    ttl_keys: int = 0  # keys with a TTL set
    ttl_bytes: int = 0
    lasting_bytes: int = 0  # keys that outlive ``horizon_ms``: no TTL or a longer one
    max_ttl_ms: int = 0


@dataclass
class Footprint:
    """One reading of Redis: the ``lb:*`` keys by family, and the server's used_memory."""

    used_memory: int
    families: dict[str, Family] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.families.values())

    def without(self, families: Collection[str]) -> int:
        return sum(f.bytes for name, f in self.families.items() if name not in families)

    @property
    def lasting(self) -> int:
        """Bytes of the keys still there once ``horizon_ms`` has passed without new events."""
        return sum(f.lasting_bytes for f in self.families.values())

    @property
    def keys(self) -> int:
        return sum(f.keys for f in self.families.values())


class Namer:
    """Turns a key into its family: the known groups and refs, webhook ids and numbers become
    placeholders."""

    def __init__(self, groups: Collection[str], refs: Collection[str]) -> None:
        self.groups = set(groups)
        self.refs = set(refs)

    def family(self, key: str) -> str:
        if key.startswith(ks().SEEN):
            return "lb:{t:default}:seen:{webhook_id}"
        parts = key.split(":")
        return ":".join(self._placeholder(part) for part in parts)

    def _placeholder(self, part: str) -> str:
        if part in self.refs:
            return "{ref}"
        if part in self.groups:
            return "{group}"
        return "{n}" if part.isdigit() else part


def measure(redis: Redis, namer: Namer, horizon_ms: int | None) -> Footprint:
    """Every ``lb:*`` key's ``MEMORY USAGE`` (all nested values counted: SAMPLES 0) and TTL."""
    footprint = Footprint(used_memory=int(redis.info("memory")["used_memory"]))
    keys = [k.decode() for k in redis.scan_iter(match="lb:*", count=BATCH)]
    answers = _pipelined(redis, keys, _usage)
    for key, size, ttl in zip(keys, answers[::2], answers[1::2], strict=True):
        if size is not None and ttl != -2:  # else gone between SCAN and the read
            _count(footprint.families.setdefault(namer.family(key), Family()), int(size),
                   int(ttl), horizon_ms)
    return footprint


def _usage(pipe: Any, key: str) -> None:
    pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
    pipe.pttl(key)


@dataclass
class Remains:
    """What is left of some listings (the deleted ones): their own keys (``lb:listing:{ref}``,
    ``lb:trace:{ref}``...) by family, and the entries naming them in other hashes, sets and
    sorted sets (``lb:accepted:rentix``, ``lb:members:{group}``...), by family: count and bytes
    of field and value (the entry's own overhead, a few bytes, not counted)."""

    listings: int
    own: dict[str, Family] = field(default_factory=dict)
    entries: dict[str, list[int]] = field(default_factory=dict)  # family -> [count, bytes]
    tombstone_fields: tuple[str, ...] = ()

    def bytes(self, leave_out: Collection[str] = ()) -> int:
        own = sum(f.bytes for name, f in self.own.items() if name not in leave_out)
        return own + sum(b for _, b in self.entries.values())

    @property
    def lasting(self) -> int:
        """What is still there once the horizon has passed: hash fields carry no TTL here."""
        return sum(f.lasting_bytes for f in self.own.values()) + sum(
            b for _, b in self.entries.values())

    def lines(self) -> Iterable[str]:
        for name, f in sorted(self.own.items()):
            ttl = (f"TTL on {f.ttl_keys:,}, up to {days(f.max_ttl_ms)}" if f.ttl_keys
                   else "no TTL")
            fields = (f", fields {', '.join(self.tombstone_fields)}"
                      if name == "lb:{t:default}:listing:{ref}" else "")
            yield (f"    {f.bytes / self.listings:9.1f}  {f.keys:9,d} keys  {name:<38} "
                   f"{ttl}{fields}")
        for name, (count, size) in sorted(self.entries.items()):
            yield f"    {size / self.listings:9.1f}  {count:9,d} entries in {name}"
        if not self.entries:
            yield "    no entry in another hash, set or sorted set names one of them"


def remains(redis: Redis, footprint: Footprint, group_of: dict[str, str],
            horizon_ms: int | None) -> Remains:
    """Look up every listing of ``group_of`` (ref -> group) in the families ``footprint``
    found: its own keys, and the entries naming it in its group's and the global keys."""
    out = Remains(len(group_of))
    own = [name for name in footprint.families if "{ref}" in name and name.count("{") == 1]
    for name in own:
        answers = _pipelined(redis, [name.replace("{ref}", ref) for ref in group_of], _usage)
        family = out.own.setdefault(name, Family())
        for size, ttl in zip(answers[::2], answers[1::2], strict=True):
            if size is not None:
                _count(family, int(size), int(ttl), horizon_ms)
    containers = [name for name in footprint.families
                  if "{ref}" not in name and "{n}" not in name and "{webhook_id}" not in name
                  and name.count("{") == name.count("{group}")]
    checks = [(name, name.replace("{group}", group), ref)
              for ref, group in group_of.items() for name in containers]
    kinds = _types(redis, sorted({key for _, key, _ in checks}))
    checks = [c for c in checks if kinds[c[1]] in ENTRY]
    answers = _pipelined(redis, checks, lambda pipe, c: ENTRY[kinds[c[1]]](pipe, c[1], c[2]))
    for (name, key, ref), answer in zip(checks, answers, strict=True):
        if answer is not None and answer is not False and answer != 0:
            entry = out.entries.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += len(ref) + (int(answer) if kinds[key] == "hash" else 0) + (
                8 if kinds[key] == "zset" else 0)
    present = next((ref for ref in group_of if redis.exists(f"{ks().LISTING}{ref}")), None)
    if present is not None:
        out.tombstone_fields = tuple(sorted(f.decode() for f in
                                            redis.hkeys(f"{ks().LISTING}{present}")))
    return out


# Per type, a command that answers something falsy when the key holds no entry for the ref:
# a hash field's value length (HSTRLEN: 0 when absent), set membership, a sorted set's score.
ENTRY: dict[str, Any] = {
    "hash": lambda pipe, key, ref: pipe.hstrlen(key, ref),
    "set": lambda pipe, key, ref: pipe.sismember(key, ref),
    "zset": lambda pipe, key, ref: pipe.zscore(key, ref),
}


def _types(redis: Redis, keys: list[str]) -> dict[str, str]:
    kinds = _pipelined(redis, keys, lambda pipe, key: pipe.type(key))
    return {key: kind.decode() if isinstance(kind, bytes) else str(kind)
            for key, kind in zip(keys, kinds, strict=True)}


def _pipelined(redis: Redis, items: list[Any], queue: Any) -> list[Any]:
    """``queue(pipe, item)`` for every item, BATCH at a time; every answer, in order."""
    answers: list[Any] = []
    for start in range(0, len(items), BATCH):
        pipe = redis.pipeline(transaction=False)
        for item in items[start:start + BATCH]:
            queue(pipe, item)
        answers += pipe.execute()
    return answers


def _count(family: Family, size: int, ttl: int, horizon_ms: int | None) -> None:
    family.keys += 1
    family.bytes += size
    if ttl >= 0:
        family.ttl_keys += 1
        family.ttl_bytes += size
        family.max_ttl_ms = max(family.max_ttl_ms, ttl)
    if ttl < 0 or (horizon_ms is not None and ttl > horizon_ms):
        family.lasting_bytes += size


def days(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 86_400_000:.2f} d"


def breakdown(before: Footprint, after: Footprint, per: int, title: str,
              limit: int = 14) -> Iterable[str]:
    """The families that grew or shrank most between two readings, per listing."""
    names = set(before.families) | set(after.families)
    rows = []
    for name in names:
        b, a = before.families.get(name, Family()), after.families.get(name, Family())
        rows.append((a.bytes - b.bytes, a.keys - b.keys, name, a))
    rows.sort(key=lambda row: -abs(row[0]))
    yield f"  {title} (bytes per listing; keys; TTL on the family's keys now)"
    for delta, keys, name, now in rows[:limit]:
        if not delta:
            continue
        ttl = (f"TTL on {now.ttl_keys:,}, up to {days(now.max_ttl_ms)}" if now.ttl_keys
               else "no TTL")
        yield f"    {delta / per:+9.1f}  {keys:+9,d} keys  {name:<38} {ttl}"
    rest = sum(row[0] for row in rows[limit:])
    if rest:
        yield f"    {rest / per:+9.1f}  (the other {len(rows) - limit} families)"

