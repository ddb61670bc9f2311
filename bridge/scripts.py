"""The bridge's Lua scripts: read from ``.lua`` files, constants spliced, keys declared.

Below: how a script is read (:func:`load`) and called (:class:`Script`). First, splicing. A
script writes ``__NAME__`` where a value belongs; :func:`splice` replaces it with that value
as a Lua literal (a string is quoted, a tuple of strings becomes a comma-separated list of
them, for a call's arguments or a table constructor). Spliced constants cost nothing per call,
unlike arguments. A placeholder without a value, or a value without a placeholder, raises
:class:`ScriptError` when the script is built (at import or registration), so a misspelt name
can never reach Redis as a literal ``__FOO__``. Splicing keeps line numbers: a value never
holds a line break.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, KeyT

# A splice-able value: a string, an integer, or a tuple of strings (a list of arguments).
LuaValue = str | int | tuple[str, ...]

# Anything shaped like a placeholder, misspelt ones (lower case, stray underscores) included.
_PLACEHOLDER = re.compile(r"__(\w+?)__")
# Bytes that may stand as themselves inside a Lua string literal; all others are escaped.
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-.{}()/@ ")


class ScriptError(ValueError):
    """A script's placeholders and the values given for them do not match."""


def placeholders(script: str) -> set[str]:
    """The names of the ``__NAME__`` placeholders left in ``script``."""
    return set(_PLACEHOLDER.findall(script))


def splice(script: str, values: Mapping[str, LuaValue], *, later: Collection[str] = ()) -> str:
    """``script`` with every ``__NAME__`` replaced by ``values[NAME]`` as a Lua literal.

    ``later`` names placeholders left for a second splice (values known only at run time, such
    as settings); any other placeholder without a value, and any value without a placeholder,
    raises :class:`ScriptError`.
    """
    found = placeholders(script)
    unknown = found - set(values) - set(later)
    unused = set(values) - found
    if unknown or unused:
        raise ScriptError("script placeholders do not match their values: "
                          + "; ".join(f"{what}: {', '.join(sorted(names))}" for what, names in
                                      (("no value for", unknown), ("no placeholder for", unused))
                                      if names))
    spliced = _PLACEHOLDER.sub(
        lambda m: lua_literal(values[m[1]]) if m[1] in values else m[0], script)
    if not later and "__" in spliced:
        raise ScriptError(f"script has a malformed placeholder near {_near(spliced)!r}")
    return spliced


def lua_literal(value: LuaValue) -> str:
    """``value`` as Lua source: a quoted string, a decimal integer, or a list of strings."""
    if isinstance(value, bool):  # a bool is an int to Python, never what a script means
        raise ScriptError(f"cannot splice a bool ({value!r}) into a script")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _lua_string(value)
    if not value:
        raise ScriptError("cannot splice an empty list into a script")
    return ", ".join(_lua_string(item) for item in value)


def _lua_string(text: str) -> str:
    # Decimal escapes for anything unusual: a value can never end the literal early.
    return '"' + "".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in text.encode()) + '"'


def _near(script: str) -> str:
    at = script.index("__")
    return script[max(0, at - 20):at + 20]


# --- Lua files --------------------------------------------------------------------------------
#
# Every script lives in a ``.lua`` file beside the module that owns it (rq's ``scripts.py`` is
# the model). Its header says what it takes and answers, one line each, before any code:
#
#     -- KEYS[1] inbox: lb:inbox
#     -- KEYS[2...] listing: lb:listing:<ref>, one per listing the caller read  (variadic)
#     -- ARGV[1] webhook id
#     -- Returns: {status, 0}
#
# A line ``--!include name.lua`` stands for that file's text (a fragment: shared functions, no
# header of its own), resolved beside the including file. Placeholders (``__NAME__``) are code
# constants (field names, counter names), never key names and never settings: every key arrives
# in KEYS (Redis requires it, and Redis Cluster routes by it) and every setting in ARGV.

_HEADER = re.compile(r"^--\s*(KEYS|ARGV)\[(\d+)(\.\.\.)?\]\s+(.*)$")
_INCLUDE = re.compile(r"^--!include\s+(\S+)\s*$")
_SCRIPT_LINE = re.compile(r"user_script:(\d+):")


@dataclass(frozen=True)
class Lua:
    """A script read from its file, fragments included and constants spliced.

    ``keys`` and ``argv``: the header's descriptions, in order; ``more_keys``/``more_argv``:
    whether the last one stands for any number (``KEYS[3...]``). ``origin``: per line of
    ``source``, the file and line it came from (errors name those, not the assembled text)."""

    name: str
    source: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    more_keys: bool
    more_argv: bool
    origin: tuple[tuple[str, int], ...]

    def check_keys(self, count: int) -> None:
        """Raise ScriptError unless ``count`` keys is what the header declares."""
        fixed = len(self.keys) - (1 if self.more_keys else 0)
        if count < fixed or (count > fixed and not self.more_keys):
            raise ScriptError(f"{self.name} takes {'at least ' if self.more_keys else ''}"
                              f"{fixed} keys ({', '.join(self.keys)}); {count} given")

    def where(self, message: str) -> str:
        """``message`` (a Redis error) with ``user_script:N`` read as the file and line."""
        def at(match: re.Match[str]) -> str:
            line = int(match[1])
            if 1 <= line <= len(self.origin):
                name, number = self.origin[line - 1]
                return f"{name}:{number}:"
            return match[0]
        return _SCRIPT_LINE.sub(at, message)


LOADED: dict[str, Lua] = {}  # by file path: every script this process has read


def load(beside: str, name: str, values: Mapping[str, LuaValue] | None = None) -> Lua:
    """The script ``name`` from the folder of ``beside`` (the owning module's ``__file__``),
    its fragments included and ``values`` spliced; ScriptError if its header or placeholders
    are wrong."""
    path = Path(beside).with_name(name)
    lines, origin = _assemble(path, ())
    keys, argv, more_keys, more_argv = _header(path)
    source = splice("\n".join(lines) + "\n", values or {})
    lua = Lua(name=name, source=source, keys=keys, argv=argv, more_keys=more_keys,
              more_argv=more_argv, origin=tuple(origin))
    LOADED[str(path)] = lua
    return lua


def _assemble(path: Path, within: tuple[Path, ...]) -> tuple[list[str], list[tuple[str, int]]]:
    if path in within:
        raise ScriptError(f"{path.name} includes itself through {within[-1].name}")
    lines: list[str] = []
    origin: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        found = _INCLUDE.match(line)
        if found:
            more, where = _assemble((path.parent / found[1]).resolve(), (*within, path))
            lines += more
            origin += where
        else:
            lines.append(line)
            origin.append((path.name, number))
    return lines, origin


def _header(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], bool, bool]:
    found: dict[str, list[tuple[int, bool, str]]] = {"KEYS": [], "ARGV": []}
    for number, line in enumerate(path.read_text().splitlines()):
        if number == 0 and line.startswith("#!"):
            continue  # Redis's shebang (``#!lua flags=allow-oom``) comes first
        if not line.startswith("--"):
            break
        match = _HEADER.match(line)
        if match:
            found[match[1]].append((int(match[2]), bool(match[3]), match[4]))
    out: list[tuple[str, ...]] = []
    more: list[bool] = []
    for what in ("KEYS", "ARGV"):
        entries = found[what]
        if [n for n, _, _ in entries] != list(range(1, len(entries) + 1)):
            raise ScriptError(f"{path.name}: its header's {what} are not numbered 1, 2, ...")
        if any(variadic for _, variadic, _ in entries[:-1]):
            raise ScriptError(f"{path.name}: only its last {what} may stand for more")
        out.append(tuple(text for _, _, text in entries))
        more.append(bool(entries) and entries[-1][1])
    return out[0], out[1], more[0], more[1]


class Script:
    """A loaded script registered with a client: checks the key count against the header and
    names the file and line in an error. Owning modules wrap it in a typed function."""

    def __init__(self, redis: Redis, lua: Lua) -> None:
        self.lua = lua
        self._script = redis.register_script(lua.source)

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT] = ()) -> Any:
        self.lua.check_keys(len(keys))
        try:
            return await self._script(keys=keys, args=args)
        except ResponseError as exc:  # its own class kept: CLUSTERDOWN, TRYAGAIN are outages
            raise type(exc)(self.lua.where(str(exc))) from exc
