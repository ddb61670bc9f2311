"""One group's flush, from claim to portal call. ``flush`` drives it: ``claims`` takes the
group's pending changes under a lease (its desired state read through ``desired``), each target
takes its turn by its portal's mode (``per_listing``, ``group_sync``, on the ground ``turns``
gives both), ``planning`` compares the desired state with the ``ledger`` of what each target
accepted and names every write with a key from ``idempotency``; ``adoption`` may hold creates,
``ratelimit`` paces calls per target. A flush answers a typed ``results.FlushResult``.

What other packages (operations, reconciliation, linking, the workers) use is exported here;
they import it from ``bridge.delivery``, not from its modules.
"""

from bridge.delivery.adoption import Adoption
from bridge.delivery.budget import BUCKETS, Bucket, Budget
from bridge.delivery.claims import Claim, LeaseLost, mark_due
from bridge.delivery.desired import DesiredListing, Unreadable, read_listings
from bridge.delivery.flush import Delivery, GroupFlush
from bridge.delivery.idempotency import digest
from bridge.delivery.ledger import (
    Accepted,
    Attempt,
    Held,
    HeldChanged,
    Ledger,
    Quarantined,
    sync_scope,
)
from bridge.delivery.outbox import Outbox, drain_seconds
from bridge.delivery.planning import desired_content, desired_digest, plan_sync
from bridge.delivery.ratelimit import RateLimiter, read_pace
from bridge.delivery.results import FlushOutcome, FlushResult

__all__ = [
    "BUCKETS", "Accepted", "Adoption", "Attempt", "Bucket", "Budget", "Claim", "Delivery",
    "DesiredListing", "FlushOutcome", "FlushResult", "GroupFlush", "Held", "HeldChanged",
    "LeaseLost", "Ledger", "Outbox", "Quarantined", "RateLimiter", "Unreadable",
    "desired_content", "desired_digest", "digest", "drain_seconds", "mark_due", "plan_sync",
    "read_listings", "read_pace", "sync_scope",
]
