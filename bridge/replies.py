"""Redis replies as text: clients made with ``decode_responses`` answer ``str``, the others
``bytes``, and the bridge's code takes either (one helper, not a copy per module)."""

from __future__ import annotations


def text(value: bytes | str) -> str:
    """A reply as ``str`` (UTF-8, as the bridge writes every value)."""
    return value.decode() if isinstance(value, bytes) else value


def maybe_text(value: bytes | str | None) -> str | None:
    """``text``, keeping a missing value (nil) as ``None``."""
    return None if value is None else text(value)
