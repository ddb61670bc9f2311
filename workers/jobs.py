"""The arq jobs a worker runs: one flush of one group (``bridge.delivery.flush``)."""

from __future__ import annotations

from typing import Any

from bridge.delivery.flush import Delivery


async def flush_group(ctx: dict[str, Any], group: str) -> str:
    delivery: Delivery = ctx["delivery"]
    return await delivery.flush(group)
