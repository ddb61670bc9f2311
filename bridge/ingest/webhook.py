"""``POST /webhooks/crm/{tenant}`` (``/webhooks/crm``: tenant ``default``): verify with that
tenant's secrets, validate, store in one Redis round trip, answer.

Everything else (planning, delivery) is the worker's. A ``202`` is sent only after Redis holds
the event; when Redis cannot be reached the answer is ``503`` with ``Retry-After``, and the cause
(in the script client's words: credentials, TLS, durability...) is logged once, not per request.
So is a Redis near its memory ceiling or a full inbox (``storage_full``, see
bridge/ingest/admission.py): refused while the workers still have room to fold what was accepted.

What a request costs, and how it got there: ``docs/performance.md``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from bridge import tenancy
from bridge.ingest.admission import StorageFull
from bridge.ingest.events import InvalidEvent, ValidEvent, parse_event
from bridge.ingest.signatures import SignatureError, Verifier
from bridge.ingest.store import EventStore
from bridge.logs import about

log = logging.getLogger("bridge.ingest.webhook")

RETRY_AFTER_S = "5"
# The only request headers this endpoint reads (raw name: its str); the rest are skipped unparsed.
WANTED = {name.encode(): name for name in (
    "content-type", "content-length", "webhook-id", "webhook-timestamp", "webhook-signature",
    "svix-id", "svix-timestamp", "svix-signature",
)}


class BodyTooLarge(Exception):
    pass


class Answer:
    """Status, JSON body and extra headers, before they become ASGI messages."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, body: bytes,
                 headers: list[tuple[bytes, bytes]] | None = None,
                 reason: str | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []
        self.reason = reason  # a refusal's error type: what the rejection counters name


def refuse(status: int, type_: str, message: str, **details: Any) -> Answer:
    headers = [(b"retry-after", RETRY_AFTER_S.encode())] if status == 503 else None
    body = {"error": {"type": type_, "message": message, **details}}
    return Answer(status, orjson.dumps(body), headers, reason=type_)


def stored(status: int, key: bytes, webhook_id: str) -> Answer:
    """202 ``{"accepted": true, "id": ...}`` or 200 ``{"duplicate": true, "id": ...}``."""
    return Answer(status, b'{"%s":true,"id":%s}' % (key, orjson.dumps(webhook_id)))


def wanted_headers(scope: Scope) -> dict[str, str]:
    return {WANTED[name]: value.decode("latin-1")
            for name, value in scope["headers"] if name in WANTED}


async def read_limited(headers: dict[str, str], receive: Receive, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes ``limit`` bytes (never buffered whole)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def is_json(content_type: str | None) -> bool:
    if content_type == "application/json":
        return True
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and
                                           media.endswith("+json"))


PATH = "/webhooks/crm"


def tenant_of(path: str) -> str | None:
    """The tenant a webhook path is for: ``/webhooks/crm`` is ``default``,
    ``/webhooks/crm/{tenant}`` that tenant; None: not a webhook path."""
    if path == PATH:
        return tenancy.DEFAULT
    if path.startswith(PATH + "/") and len(path) > len(PATH) + 1:
        name = path[len(PATH) + 1:]
        return name if tenancy.valid(name) else ""  # "": no such tenant (401)
    return None


class WebhookEndpoint:
    """A plain ASGI endpoint (routed by Starlette): the hot path skips the Request/Response
    wrapping, which costs more than the verification and validation themselves. Each tenant's
    requests are verified with its own secrets only (``verifiers``, replaced whole when the
    configuration is reloaded) and stored under its own keys."""

    def __init__(self, verifiers: dict[str, Verifier], store: EventStore,
                 max_body_bytes: int) -> None:
        self.verifiers = verifiers
        self.store = store
        self.max_body_bytes = max_body_bytes
        self._unavailable: str | None = None  # the cause last logged while events are refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = tenant_of(scope["path"]) or ""
        verifier = self.verifiers.get(tenant)
        try:
            if verifier is None:
                # The same answer as a wrong secret: which tenants exist is nobody's business.
                answer = refuse(401, "invalid_signature", "no webhook secret of the tenant "
                                "this path names verifies the request: check the tenant in "
                                "the URL (/webhooks/crm/{tenant}) and its webhook_secrets")
            else:
                with tenancy.use(tenant):
                    answer = await self.answer(verifier, wanted_headers(scope), receive)
        except ConnectionResetError:
            return  # nobody to answer
        if answer.status >= 400 and answer.status != 503 and verifier is not None:
            with tenancy.use(tenant):
                await self.store.count_rejection(answer.reason or "invalid_event",
                                                 int(time.time() * 1000))
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(answer.body)), *answer.headers]})
        await send({"type": "http.response.body", "body": answer.body})

    async def answer(self, verifier: Verifier, headers: dict[str, str],
                     receive: Receive) -> Answer:
        if not is_json(headers.get("content-type")):
            return refuse(415, "unsupported_media_type",
                          "send the event as JSON with Content-Type: application/json")
        try:
            body = await read_limited(headers, receive, self.max_body_bytes)
        except BodyTooLarge:
            return refuse(413, "body_too_large",
                          f"the body is larger than the limit of {self.max_body_bytes} bytes")
        now = time.time()
        try:
            webhook_id = verifier.verify(headers, body, now)
        except SignatureError as exc:
            return refuse(401, "invalid_signature", str(exc))
        try:
            event = parse_event(body)
        except InvalidEvent as exc:
            first = exc.errors[0]
            return refuse(400, "invalid_json" if exc.not_json else "invalid_event",
                          f"{first.field}: {first.message}", field=first.field,
                          errors=[{"field": e.field, "message": e.message} for e in exc.errors])
        try:
            outcome = await self.store.put(webhook_id, event, int(now * 1000))
        except StorageFull as exc:
            # Refused with headroom left: the workers need it to fold what was accepted.
            self._refused(webhook_id, exc, event)
            await self.store.count_rejection("storage_full", int(now * 1000))
            return refuse(503, "storage_full", f"{exc}; retry later")
        except (RedisError, OSError) as exc:
            self._refused(webhook_id, exc, event)
            return refuse(503, "storage_unavailable", "the event could not be stored; retry later")
        if self._unavailable is not None:
            self._unavailable = None
            log.info("Redis stores events again (webhook %s)", webhook_id,
                     extra=subject(event))
        if outcome.duplicate:
            return stored(200, b"duplicate", webhook_id)
        return stored(202, b"accepted", webhook_id)

    def _refused(self, webhook_id: str, exc: BaseException, event: ValidEvent) -> None:
        """Log why events are answered 503: once per cause, every request at debug level."""
        cause = str(exc) or type(exc).__name__
        if cause == self._unavailable:
            log.debug("webhook %s not stored: %s", webhook_id, cause, extra=subject(event))
            return
        self._unavailable = cause
        log.warning("webhooks are answered 503 until Redis can store them: %s (first: webhook %s)",
                    cause, webhook_id, extra=subject(event))


def subject(event: ValidEvent) -> dict[str, str]:
    """The group and listing an event is about, for its log lines (a snapshot: the group)."""
    if event.type == "group.snapshot" or len(event.listings) != 1:
        return about(event.group)
    return about(event.group, listing=event.listings[0][0])
