"""``POST /webhooks/crm``: verify, validate, store in one Redis round trip, answer.

Everything else (planning, delivery) is the worker's. A ``202`` is sent only after Redis holds
the event; when Redis cannot be reached the answer is ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from bridge.events import InvalidEvent, parse_event
from bridge.responses import JSONResponse, error
from bridge.signatures import SignatureError, Verifier
from bridge.store import EventStore

log = logging.getLogger("bridge.webhooks")

RETRY_AFTER_S = "5"


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes ``limit`` bytes (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and
                                           media.endswith("+json"))


class WebhookEndpoint:
    def __init__(self, verifier: Verifier, store: EventStore, max_body_bytes: int) -> None:
        self.verifier = verifier
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        response = await self._handle(request)
        if response.status_code >= 400 and response.status_code != 503:
            await self.store.count_rejection(self._reason(response), int(time.time() * 1000))
        return response

    @staticmethod
    def _reason(response: Response) -> str:
        return {401: "invalid_signature", 413: "body_too_large", 415: "unsupported_media_type"
                }.get(response.status_code, "invalid_event")

    async def _handle(self, request: Request) -> Response:
        if not is_json(request.headers.get("content-type")):
            return error(415, "unsupported_media_type",
                         "send the event as JSON with Content-Type: application/json")
        try:
            body = await read_limited(request, self.max_body_bytes)
        except BodyTooLarge:
            return error(413, "body_too_large",
                         f"the body is larger than the limit of {self.max_body_bytes} bytes")
        now = time.time()
        try:
            webhook_id = self.verifier.verify(request.headers, body, now)
        except SignatureError as exc:
            return error(401, "invalid_signature", str(exc))
        try:
            event = parse_event(body)
        except InvalidEvent as exc:
            first = exc.errors[0]
            return error(400, "invalid_json" if exc.not_json else "invalid_event",
                         f"{first.field}: {first.message}", field=first.field,
                         errors=[{"field": e.field, "message": e.message} for e in exc.errors])
        try:
            stored = await self.store.put(webhook_id, event, body, int(now * 1000))
        except (RedisError, OSError) as exc:
            log.warning("webhook %s not stored, Redis unavailable: %s", webhook_id, exc)
            return error(503, "storage_unavailable",
                         "the event could not be stored; retry later",
                         headers={"Retry-After": RETRY_AFTER_S})
        if stored.duplicate:
            return JSONResponse({"duplicate": True, "id": webhook_id}, status_code=200)
        return JSONResponse({"accepted": True, "id": webhook_id}, status_code=202)
