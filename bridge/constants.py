"""Every Redis key the bridge uses, in one place.

All keys start with ``lb:`` so the bridge can share a Redis with other programs (arq's own keys
start with ``arq:``). ``{x}`` stands for a value. Times are Unix milliseconds unless named ``_s``.

Ingest (written by the webhook's Lua script, ``bridge/store.py``):

    lb:seen:{webhook_id}          string  accepted-at; TTL = webhook.dedupe_ttl_seconds
    lb:listing:{ref}              hash    the bridge's desired state of one listing:
                                          g (group), v (version, -1 when absent),
                                          t (occurred_at), d ("1" when deleted),
                                          body (canonical listing JSON), at (received)
    lb:members:{group}            set     refs whose current group is {group}, tombstones too
    lb:groups                     set     every group ever seen
    lb:pending:{group}            hash    first (first unflushed change), last (latest change),
                                          seq (change counter, never reset)
    lb:due                        zset    group -> when its flush is due (debounce, retry or
                                          a flush lease); the worker's scheduler polls it
    lb:stats:{minute}             hash    per-minute counters (received, duplicate, stale, ...)

Delivery (written by the worker, ``workers/``):

    lb:accepted:{target}          hash    ref -> JSON {digest, payload, at}: what a per-listing
                                          target last accepted for that listing
    lb:accepted:{target}:{group}  hash    the same for a group-sync target: the group as the
                                          portal holds it after the last accepted sync
    lb:syncdigest:{target}:{group} string digest of the last sync the target accepted
    lb:quarantine:{target}        hash    ref (or "(group):{group}") -> JSON {digest, group,
                                          error_type, message, field, since, discarded}
    lb:retries:{target}           hash    ref (or "(group):{group}") -> operator retries so far,
                                          folded into the idempotency key
    lb:held:{target}              hash    group -> JSON held sync {digest, reason, deletions, ...}
    lb:release:{target}:{group}   string  digest an operator released for sending
    lb:discarded:{target}:{group} string  digest an operator refused: never sent
    lb:backoff:{target}:{group}   hash    attempts, not_before
    lb:target:{target}            hash    paused (reason), blocked_until, last_error, ...
    lb:ratelimit:{target}         string  GCRA theoretical arrival time shared by all workers
    lb:history                    list    latest delivery attempts (capped), newest first
    lb:history:{group}            list    the same for one group (capped)
    lb:latency                    list    recent webhook-to-acceptance latencies, ms (capped)
    lb:linked:{target}            set     refs known to be linked on a per-listing portal
                                          (by `bridge link`, a scan, or found while adopting)
    lb:adopt:{target}             hash    ref -> held create while the target is in adoption:
                                          JSON {ref, group, since} (``bridge/delivery/adoption.py``)
    lb:adopted:{target}           string  when adoption of the target ended; absent: adopting
                                          if the target says ``adopt = true``
    lb:workers                    hash    worker id -> last heartbeat
"""

from __future__ import annotations

PREFIX = "lb:"

SEEN = PREFIX + "seen:"
LISTING = PREFIX + "listing:"
MEMBERS = PREFIX + "members:"
GROUPS = PREFIX + "groups"
PENDING = PREFIX + "pending:"
DUE = PREFIX + "due"
STATS = PREFIX + "stats:"

ACCEPTED = PREFIX + "accepted:"
SYNC_DIGEST = PREFIX + "syncdigest:"
QUARANTINE = PREFIX + "quarantine:"
RETRIES = PREFIX + "retries:"
HELD = PREFIX + "held:"
RELEASE = PREFIX + "release:"
DISCARDED = PREFIX + "discarded:"
BACKOFF = PREFIX + "backoff:"
TARGET = PREFIX + "target:"
RATE_LIMIT = PREFIX + "ratelimit:"
HISTORY = PREFIX + "history"
LATENCY = PREFIX + "latency"
LINKED = PREFIX + "linked:"
ADOPT = PREFIX + "adopt:"
ADOPTED = PREFIX + "adopted:"
WORKERS = PREFIX + "workers"

HISTORY_MAXLEN = 5_000
GROUP_HISTORY_MAXLEN = 200
LATENCY_MAXLEN = 2_000
STATS_TTL_S = 2 * 3600

# The quarantine entry of a whole group sync the portal refused without naming a listing.
GROUP_QUARANTINE = "(group):"

# arq job names and the queue the bridge's workers listen on.
QUEUE = "arq:queue:listing-bridge"
FLUSH_JOB = "flush_group"
FLUSH_JOB_ID = "flush:"
