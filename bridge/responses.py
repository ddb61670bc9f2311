"""JSON responses and the bridge's error body: {"error": {"type", "message", ...}}."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, type_: str, message: str, headers: dict[str, str] | None = None,
          **details: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message, **details}
    return JSONResponse({"error": body}, status_code=status, headers=headers)
