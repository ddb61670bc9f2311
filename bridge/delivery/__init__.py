"""One group's flush, from claim to portal call. ``flush`` drives it: ``claims`` takes the
group's pending changes under a lease (its desired state read through ``desired``), ``planning``
compares it with the ``ledger`` of what each target accepted and names every write with a key
from ``idempotency``; ``adoption`` may hold creates, ``ratelimit`` paces calls per target.
"""
