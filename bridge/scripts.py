"""Lua scripts with the bridge's names spliced in: the one way a script learns a key name.

A script writes ``__NAME__`` where a value belongs; :func:`splice` replaces it with that value
as a Lua literal (a string is quoted, a tuple of strings becomes a comma-separated list of
them, for a call's arguments or a table constructor). Spliced constants cost nothing per call,
unlike arguments. A placeholder without a value, or a value without a placeholder, raises
:class:`ScriptError` when the script is built (at import or registration), so a misspelt name
can never reach Redis as a literal ``__FOO__``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

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
