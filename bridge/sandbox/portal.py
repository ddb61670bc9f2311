"""What both portals do around each request: journal, Idempotency-Key, faults, the state lock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from .idempotency import Claim, Verdict, fingerprint
from .state import Sandbox, State
from .wire import Answer, describe_body, media_type, now_iso, route_path

log = logging.getLogger(__name__)

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# The journal's status for a request whose client went away before its body arrived whole
# (nginx's "client closed request"): a real event (a process killed mid-send) that the witness
# must show as such, not as a request without a body.
CUT_OFF = 499


@dataclass
class Exchange:
    """One request as it moves through a portal."""

    request: Request
    state: State  # captured on arrival, so a concurrent reset cannot split a request
    method: str
    path: str
    raw: bytes | None = None  # None until (unless) the body is read
    parsed: Any = None
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # added to whatever is answered

    @property
    def idempotency_key(self) -> str | None:
        return self.request.headers.get("idempotency-key") or None


class PortalApp:
    """Base ASGI app of one portal; subclasses implement `dispatch` and the error formats."""

    name = ""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        ex = Exchange(request, self.sandbox.state, request.method.upper(), route_path(scope))
        arrived, started = now_iso(), time.monotonic()
        try:
            answer = await self.dispatch(ex)
        except ClientDisconnect:  # nothing was applied, and there is nobody to answer
            self._record(ex, arrived, started, CUT_OFF, cut_off=True)
            return
        except Exception:  # a sandbox bug must still be journalled and answered in format
            log.exception("%s sandbox failed on %s %s", self.name, ex.method, ex.path)
            answer = self.error_answer(500, "fault")
        # An answer's own headers (a fault's, say) win over the rate-limit ones.
        answer = Answer(answer.status, answer.body, {**ex.headers, **answer.headers})
        self._record(ex, arrived, started, answer.status)
        await answer.to_response()(scope, receive, send)

    def _record(self, ex: Exchange, arrived: str, started: float, status: int,
                cut_off: bool = False) -> None:
        ex.state.journal.record(
            portal=self.name, method=ex.method, path=ex.path, query=ex.request.url.query,
            status=status, idempotency_key=ex.idempotency_key, replayed=ex.replayed,
            body=None if cut_off else ex.parsed if ex.parsed is not None and ex.raw
            else describe_body(ex.raw, media_type(ex.request)),
            at=arrived, duration_ms=round((time.monotonic() - started) * 1000, 3),
            cut_off=cut_off,
        )

    async def dispatch(self, ex: Exchange) -> Answer:
        raise NotImplementedError

    def error_answer(self, status: int, kind: str) -> Answer:
        """The portal's error for `kind`: a fault's status, or an Idempotency-Key refusal."""
        raise NotImplementedError

    async def perform(self, ex: Exchange, credential: str,
                      operation: Callable[[State], Answer], write: bool) -> Answer:
        """Run a checked request: Idempotency-Key first, then faults, then the operation."""
        claim = Claim(Verdict.PROCEED)
        key = ex.idempotency_key
        if write and key:
            fp = fingerprint(ex.method, ex.path, ex.parsed, ex.raw or b"")
            claim = ex.state.idempotency.claim(self.name, credential, key, fp)
            if claim.verdict is Verdict.REPLAY and claim.answer is not None:
                ex.replayed = True
                stored = claim.answer
                return Answer(stored.status, stored.body,
                              {**stored.headers, "Idempotent-Replayed": "true"})
            if claim.verdict is Verdict.MISMATCH:
                return self.error_answer(422, "idempotency_mismatch")
            if claim.verdict is Verdict.IN_FLIGHT:
                return self.error_answer(409, "idempotency_in_flight")
        answer: Answer | None = None
        try:
            answer = await self._faulted(ex)
            if answer is None:
                async with self.sandbox.lock:
                    answer = operation(ex.state)
            return answer
        finally:
            ex.state.idempotency.finish(claim, answer)

    async def _faulted(self, ex: Exchange) -> Answer | None:
        fault = ex.state.faults.take(self.name, ex.method, ex.path)
        if fault is None:
            return None
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.status is None:
            return None
        answer = self.error_answer(fault.status, "fault")
        body = fault.body if fault.body is not None else answer.body
        return Answer(fault.status, body, dict(fault.headers))


def is_write(method: str) -> bool:
    return method in WRITE_METHODS
