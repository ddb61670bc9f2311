"""HTTP plumbing shared by the two sandbox portals: answers, bounded body reading, paths."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

# After an oversized body is refused we keep discarding (not storing) up to this much more, so
# the client gets to read the 413 instead of a reset connection; beyond it we just answer.
DRAIN_CAP = 16 * 1024 * 1024


@dataclass
class Answer:
    """A portal's reply before it becomes a response (so it can be stored and replayed)."""

    status: int
    body: Any = None  # a JSON value; a str is sent as text/plain
    headers: dict[str, str] = field(default_factory=dict)

    def to_response(self) -> Response:
        if isinstance(self.body, str):
            return Response(self.body, self.status, headers=self.headers, media_type="text/plain")
        return JSONResponse(self.body, self.status, headers=self.headers)


class BodyTooLarge(Exception):
    """The request body exceeded the portal's limit."""


# The phrases the interpretations page names, where Python's differ (413, 422 vary by version).
REASONS = {413: "Payload Too Large", 422: "Unprocessable Entity", 415: "Unsupported Media Type"}


def reason(status: int) -> str:
    if status in REASONS:
        return REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def route_path(scope: Scope) -> str:
    """The path below the mount point (`/listings`, not `/rentix/api/v1/listings`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it grows past `limit` without buffering the rest."""
    declared = request.headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            over = True
        if over:
            chunks.clear()
            if size > limit + DRAIN_CAP:
                break
            continue
        chunks.append(chunk)
    if over:
        raise BodyTooLarge
    return b"".join(chunks)


def parse_json(raw: bytes) -> tuple[bool, Any]:
    """(ok, value): `ok` is False when the bytes are not one JSON document."""
    try:
        return True, json.loads(raw)
    except ValueError:
        return False, None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def describe_body(raw: bytes | None, content_type: str) -> Any:
    """How the journal shows a body: parsed JSON when possible, a form as a dict, else text."""
    if not raw:
        return None
    ok, value = parse_json(raw)
    if ok:
        return value
    text = raw.decode("utf-8", errors="replace")
    if content_type == "application/x-www-form-urlencoded":
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    return text
