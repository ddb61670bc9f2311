"""``POST /webhooks/crm``: verify, validate, store in one Redis round trip, answer.

Everything else (planning, delivery) is the worker's. A ``202`` is sent only after Redis holds
the event; when Redis cannot be reached the answer is ``503`` with ``Retry-After``, and the cause
(in the script client's words: credentials, TLS, durability...) is logged once, not per request.
So is a Redis near its memory ceiling or a full inbox (``storage_full``, see
bridge/ingest/admission.py): refused while the workers still have room to fold what was accepted.

What a request costs (a 1 KB generated event; medians of repeated runs on a shared 2-core VM,
so ±20 %). Per step, in-process: verifying 6.5 -> 3.9 µs (each secret's HMAC keyed once and
copied); validating with pydantic 10 µs and writing the listing back with ``model_dump_json``
7 µs -> 5.9 µs for both with msgspec (bridge/ingest/events.py); packing EVALSHA 3.8 -> 2.1 µs;
``asyncio.timeout`` ~4 µs a call -> one timer per loop turn; one socket write per loop turn to
Redis instead of one per call. This endpoint without Redis: 32-39 -> 17-19 µs; the script client
per call: 18 -> 7 µs. The web process under ``python -m tests.bench.webhook`` (user + system
CPU per request, /proc): 134-232 -> 68-96 µs, against 40-52 µs for the no-op endpoint.

The benchmark's ratio went from 0.26-0.37 to 0.26-0.58 (5 and 10 s runs); the rest is Redis's:
with ``appendfsync always`` Valkey fsyncs once per event-loop cycle and reads 16 KB per client
per cycle, ~13 events, and the ingest script takes 45-60 µs per event (35-48 before it kept
traces and metrics). At 4-6k events/s Valkey is 70-85 % busy; the script alone, called by 32
in-process callers, does 6-13k events/s against 12-19k requests/s for the no-op endpoint.

Later (2026-11-30, a slower host): the script's arguments packed in one format per listing, the
script client keeping its loop (``asyncio.get_running_loop()`` is a getpid() call on 3.11), this
endpoint dispatched ahead of Starlette's middleware and router (``bridge.app.BridgeApp``) and two
Redis calls less per event in the ingest script. Same host, minutes apart, 3 alternating rounds
each: web CPU per request 213 -> 191 µs against the no-op endpoint's 125-128 µs, Redis 129 ->
117 µs, ratio medians 0.42 -> 0.47.

Where a request's time goes (2026-11-30, a faster host; the calls timed in this process under
the benchmark, then the timing taken out again): of ~3.3 ms, ~1.6 ms from the loop turn's write
to Redis to the script's reply (Redis runs the batch, ~13 events, and fsyncs before it answers
any; a batch written mid-cycle also waits for the rest of that cycle), ~0.3 ms waiting for the
loop turn's write, ~0.4 ms from the reply until the request's task runs (the batch's other tasks
write their answers first), the rest in uvicorn and wrk. The machine is ~75 % busy: at 32
connections the webhook is latency-bound (at 64 it runs at 0.77 of the no-op endpoint, with less
CPU per event). So each µs of the ingest script costs ~20 µs of latency per request; its story
and counter upkeep is ~10 of its ~55 µs (measured by leaving them out). Tried and not kept: holding
calls while a batch is in flight, and writing a call at once when none is (both within the noise
of interleaved A/B runs); a second web process (slower: 0.44).

What bounded it (2026-11-30, a slower host again: no-op endpoint 7,300-8,700 req/s, the bridge
at median 0.41 of it, web CPU 219 µs per request, Valkey 135 µs per event): the Redis work per
event. The same benchmark with the ingest script cut down to its dedupe ``SET NX`` alone ran at
0.62, Valkey at 48 µs per event, and no single call of the ~12 per event was the lever.

So the fold left the request's path (later that day, a third host: no-op endpoint 19,700-24,000
req/s, where the code before ran at 0.38). The webhook's script now dedupes and appends the
event to the inbox, two calls; the workers fold it (``bridge/ingest/inbox.py``), in batches whose
writes to one key are made once. Valkey 65 -> 27-33 µs per event; the bridge at median 0.53 of
the no-op endpoint over 5 rounds (0.48-0.59; runs of 3 rounds: 0.50-0.52, single rounds down to
0.42: the host moves), 0.55 on redis-server 7.0; web
CPU, 68-86 µs per request against the no-op's 41-50, is now the larger part (the entry's body
packed as it came, not decoded and encoded again: 2.0 -> 0.8 µs). The fold's cost moved, it did
not vanish: a worker folds 19-22k events/s (Redis 39-44 µs per event); with one folding during
the run on the same 2 cores the bridge ran at 0.41-0.43 (Redis 56 µs per event in all), against
0.32-0.37 before the batch's writes were coalesced and 0.38 when the webhook folded every event
itself. Tried and not kept: two or three connections to Redis (within the noise: Redis takes
~10 events a cycle either way).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

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


class WebhookEndpoint:
    """A plain ASGI endpoint (routed by Starlette): the hot path skips the Request/Response
    wrapping, which costs more than the verification and validation themselves."""

    def __init__(self, verifier: Verifier, store: EventStore, max_body_bytes: int) -> None:
        self.verifier = verifier
        self.store = store
        self.max_body_bytes = max_body_bytes
        self._unavailable: str | None = None  # the cause last logged while events are refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.answer(wanted_headers(scope), receive)
        except ConnectionResetError:
            return  # nobody to answer
        if answer.status >= 400 and answer.status != 503:
            await self.store.count_rejection(answer.reason or "invalid_event",
                                             int(time.time() * 1000))
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(answer.body)), *answer.headers]})
        await send({"type": "http.response.body", "body": answer.body})

    async def answer(self, headers: dict[str, str], receive: Receive) -> Answer:
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
            webhook_id = self.verifier.verify(headers, body, now)
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
