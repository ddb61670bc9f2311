"""``bridge send``: sign and post events to a bridge, reporting what it answered."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bridge.ingest.signatures import sign


def quiet_requests() -> None:
    """httpx logs every request at INFO: one line per event would bury the progress bar."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class SendReport:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def lines(self) -> list[str]:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        out = [f"sent {self.sent} events in {self.elapsed_s:.2f}s ({rate:.0f}/s); "
               f"latency p50 {self.percentile(0.5):.1f} ms, p95 {self.percentile(0.95):.1f} ms"]
        for status, count in sorted(self.statuses.items()):
            out.append(f"  {status}: {count}")
        for reason, count in sorted(self.errors.items()):
            out.append(f"  {reason}: {count}")
        return out


def signed_request(secret: str, event: Any) -> tuple[bytes, dict[str, str]]:
    body = event if isinstance(event, bytes) else orjson.dumps(event)
    msg_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    return body, headers


async def send_events(
    url: str,
    secret: str,
    events: Iterable[Any],
    *,
    concurrency: int = 16,
    rate: float | None = None,
    on_sent: Callable[[], None] | None = None,
) -> SendReport:
    """Post every event (at most ``rate`` per second when given) with ``concurrency`` in flight."""
    report = SendReport()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 2)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        while (event := await queue.get()) is not None:
            body, headers = signed_request(secret, event)
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                report.statuses[response.status_code] += 1
            except httpx.HTTPError as exc:
                report.errors[type(exc).__name__] += 1
            report.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if on_sent:
                on_sent()

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        for n, event in enumerate(events):
            if rate:
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the stream, not waiting on a result
            await queue.put(event)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    report.elapsed_s = time.perf_counter() - started
    return report
