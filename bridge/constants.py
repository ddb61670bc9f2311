"""Every Redis key the bridge uses, in one place: the one written key layout.

All keys start with ``lb:`` so the bridge can share a Redis with other programs; arq's own keys
use arq's prefixes (``arq.constants``). ``{x}`` stands for a value. Times are Unix milliseconds
unless named ``_s``. Every key reaches a Lua script in KEYS, never as a literal, built in Python
from the names here. Keys without a TTL live until the code named under "lifetime" removes them.

Tenants (contract section 4a): every key below belongs to one tenant and starts with the tenant's
prefix, ``lb:{t:NAME}:`` (``Keyspace``; the hash tag keeps all of a tenant's keys in one Redis
Cluster slot, so no script spans two tenants or two slots): ``lb:due`` below is
``lb:{t:north}:due`` for tenant north, and the single tenant of a configuration without
``[[tenants]]`` is ``default``. Code names them with ``ks()``, the keys of the tenant the current
work is for (``bridge/tenancy.py``). Apart from them:

    lb:{wake}                     zset    tenant -> when its next turn of the workers'
                                          schedulers is due (0: now). The webhook's script
                                          sets 0 with the event it stores; a job's end and an
                                          operator's action too (group_state.wake); a turn
                                          (workers/scheduler.py) moves it on by its lease
                                          while it runs and ends by setting when the tenant
                                          next has work, or removing it (none), unless it was
                                          woken meanwhile. Forever; a tenant with no work has
                                          no member
    lb:{wake}:turns               hash    tenant -> the token of its latest turn, set by the
                                          take, removed by that turn's end (only the latest
                                          turn may end it); a dead worker's stays until the
                                          tenant's next take
    lb:workers                    hash    worker heartbeats (see Delivery)
    lb:{r:CREDENTIAL}:ratelimit   string  a portal credential's GCRA bucket (``Keyspace.bucket``,
                                          CREDENTIAL: bridge.settings.credential_id): rate
                                          budgets belong to credentials, so tenants on one
                                          Rentix API key share one; ``:reads``, ``:bulk`` and
                                          ``:puts`` after it as listed under
                                          lb:ratelimit:{target} below (what a target without
                                          known credentials uses, under its tenant)
    lb:migration                  hash    the one-off move of a single-tenant release's keys
                                          under tenant default (``bridge/migration.py``):
                                          state, moved, dropped, conflicts, at; forever.
                                          lb:migration:lock (PX, renewed) while it runs;
                                          lb:migration:conflict:{old name}: a key whose new
                                          name was taken, set aside for an operator
    lb:check:waitaof              string  the start-up probe of appendfsync's waits
                                          (bridge/connections.py); deleted by the probe

Ingest (the webhook's and the workers' Lua scripts, ``bridge/ingest/store.py``):

    lb:seen:{webhook_id}          string  accepted-at; TTL webhook.dedupe_ttl_seconds
    lb:inbox                      list    events stored by the webhook and not yet folded into
                                          the state below, oldest first, each a msgpack array
                                          (``bridge.ingest.store.entry``); the workers' fold
                                          (``bridge/ingest/inbox.py``) folds and removes them
                                          in one script; no TTL, empty (absent) while the
                                          workers keep up
    lb:inbox:dead                 list    inbox entries the fold could not handle, set aside
                                          in the order it met them, each a JSON line {error,
                                          at, attempts} then the entry as it was; until an
                                          operator retries (back to the inbox's head) or
                                          discards it (``bridge inbox dead``); while it is not
                                          empty no tombstone is purged (a retried event is
                                          judged as of its receipt)
    lb:inbox:retries              hash    sha1 of a retried entry -> the times it was set aside:
                                          read and removed by the fold that sets it aside
                                          again; PX INBOX_RETRIES_MS after the last retry (an
                                          entry folded after its retry leaves its field until
                                          then)
    lb:listing:{ref}              hash    the desired state of one listing, decoded only by
                                          ``bridge/delivery/desired.py``: g (group), v (version,
                                          -1 when absent), t (occurred_at), d ("1" when
                                          deleted), body (only in hashes written before
                                          lb:body: a claim moves it there), at (received),
                                          c (cause of the deletion:
                                          "deleted" for a listing.deleted event, "snapshot"
                                          for absence from a group.snapshot; removed
                                          when the listing is upserted again), f (snapshot
                                          floor: the latest occurred_at of a group.snapshot
                                          that left the listing out and deleted it or found it
                                          deleted; an event from before it is stale whatever
                                          its version; ingest only); names: LISTING_FIELDS;
                                          w (LISTING_SOURCES: the webhook ids, one a line, of
                                          the events that set the state at its time t: at an
                                          equal time a redelivery of one of them changes
                                          nothing; ingest only); no TTL; once every target has
                                          accepted its deletion, a flush compacts it to a bare
                                          tombstone (g, v, t, d, f, w) listed in lb:tombstones
                                          (``delivery/tombstones.py``), which the fold removes
                                          once it expired for every event that may still be
                                          folded; an event that brings it back unlists it
    lb:body:{ref}                 string  the listing's canonical JSON as the webhook stored it,
                                          packed by the flush that claims it
                                          (``bridge/packing.py``). Apart from lb:listing so
                                          that hash holds only short values and stays a
                                          listpack (~230 B less per listing on Redis 7.0);
                                          written by ingest, kept while the listing is
                                          deleted, removed with the listing's compaction to
                                          a tombstone; no TTL
    lb:members:{group}            set     refs whose current group is {group}, tombstones too;
                                          a ref leaves when its listing moves to another group
                                          or is compacted to a tombstone
    lb:groups                     set     every group ever seen; forever
    lb:pending:{group}            hash    first (first unflushed change; cleared by a claim),
                                          last (latest change), seq (change counter, never
                                          reset; also bumped by mark_due); expires GROUP_IDLE_MS
                                          after the group's last change (each fold batch that
                                          changes the group renews it); a counter that expired
                                          starts again above every seq lb:settled and lb:dirty
                                          still hold, so it never goes back. Owner (with
                                          lb:dirty, lb:settled, lb:due): bridge/group_state.lua,
                                          the fragment through which every script writes them
                                          (fold, acceptance, claim, finish, mark_due); outside
                                          Lua only reconcile deletes lb:settled
    lb:dirty:{group}              hash    ref -> the group's seq when the listing last changed:
                                          what flushes plan (``claims.py``); an entry goes once
                                          every target has settled that change (lb:settled);
                                          an acceptance of content the listing has moved past
                                          sets it again, with a fresh seq, in the listing's
                                          current group (``bridge/delivery/accepted.lua``); PX
                                          GROUP_IDLE_MS, renewed with lb:pending's; owner:
                                          bridge/group_state.lua
    lb:tombstones                 zset    ref -> when its compacted tombstone expires (ms:
                                          retention.horizon_days after max(t, f)), set by the
                                          compaction; the tombstone orders events received
                                          until then. The fold removes member and hash once
                                          the expiry is before the receipt of the inbox's
                                          oldest event and before Redis's clock, both less
                                          TOMBSTONE_GRACE_MS; an event that revives the
                                          listing removes the member
    lb:settled:{group}            hash    target -> the seq up to which that target has settled
                                          every change of the group (accepted, quarantined, or
                                          queued for bulk), set by a flush whose turn for it was
                                          clean; deleted by mark_due (an operator's action, a
                                          resume, a repair: doubt), so the next flush plans the
                                          whole group; PX GROUP_IDLE_MS, renewed by each finish
                                          and with lb:pending's; owner: bridge/group_state.lua
    lb:due                        zset    group -> when its flush is due (debounce, retry, or
                                          when a running flush's lease would lapse); the
                                          scheduler polls it; a finish removes the group
                                          (delivery); owner: bridge/group_state.lua
    lb:stats:{minute}             hash    per-minute counters: received, duplicate, stale,
                                          rejected:{reason}; delivery adds calls:{target} and
                                          {outcome}:{target}; TTL STATS_TTL_S (2 h)
    lb:metrics                    hash    cumulative counters and histogram buckets for
                                          Prometheus (``bridge/counters.py``): written by the
                                          ingest scripts, the webhook's rejections, the ledger's
                                          attempts and each flush; forever (never reset)

Delivery (the worker's flush, ``bridge/delivery/`` and ``workers/``):

    lb:fence                      string  counter: INCR gives each claim a fencing token that
                                          never repeats; forever
    lb:lease:{group}              string  the token of the flush holding the group; PX
                                          delivery.lease_ms, renewed while the flush runs,
                                          deleted by its finish (``claims.py``); every write of
                                          a flush after a portal call checks it, atomically
    lb:flushing                   zset    group -> when its running flush's lease lapses (set
                                          by claim and renew, removed by finish): what the
                                          dashboard shows as running, without a keyspace scan
    lb:epoch                      string  random id of the current epoch: a new one whenever
                                          Redis may have lost state (``witness.py``); forever
    lb:witness                    hash    run_id: the server identity the epoch was checked
                                          against; forever
    lb:verified:{target}          hash    group -> the epoch in which a group-sync target's
                                          group was last read from or synced to the portal;
                                          another epoch means: read the portal before syncing
    lb:intent:{target}            hash    ref (or "(group):{group}") -> JSON {digest, base, key}:
                                          the write in flight and its idempotency key, recorded
                                          before the call; removed once the portal's answer is
                                          recorded (accepted or refused) or an operator retries;
                                          replaced by a marker no content matches (distrusted)
                                          when another write of the ref landed after the
                                          listing moved on: the next flush writes it again
    lb:accepted:{target}          hash    ref -> JSON {digest, payload, at}: what a per-listing
                                          target last accepted for that listing; removed when
                                          the listing is compacted to a tombstone
    lb:accepted:{target}:{group}  hash    the same for a group-sync target, packed
                                          (``bridge/packing.py``): the group as the portal holds
                                          it after the last accepted sync; each accepted sync
                                          writes what changed
    lb:syncdigest:{target}:{group} string digest of the last sync the target accepted; PX
                                          GROUP_IDLE_MS (gone: the next sync reads the portal)
    lb:quarantine:{target}        hash    ref (or "(group):{group}") -> JSON {digest, group,
                                          error_type, message, field, since, discarded}: until
                                          the target accepts that ref (or an operator retries,
                                          or the listing is compacted to a tombstone)
    lb:held:{target}              hash    group -> JSON held change {digest, reason, deletions,
                                          listings, since, unknown_on_portal, causes}: the
                                          guards' one decision per group, the same entry on
                                          every target it holds; until the target sends the
                                          deletions, no longer needs to, or a discard
    lb:backoff:{target}:{group}   hash    attempts, not_before: until the target accepts again;
                                          PX GROUP_IDLE_MS
    lb:target:{target}            hash    blocked_until, last_error, last_error_at (delivery);
                                          budget:general, budget:bulk: JSON {limit, remaining,
                                          reset, at}, the X-RateLimit-* headers last seen
                                          (per-listing targets: general with each single
                                          write's record, bulk with each bulk's);
                                          token_expires_at: when the group-sync target's
                                          OAuth token a worker fetched last expires (ms; set
                                          with the first call's record after the fetch);
                                          paused, paused_at (operators); forever, fields cleared
                                          by an operator's resume
    lb:ratelimit:{target}         string  GCRA theoretical arrival time shared by all workers;
                                          TTL just past that time
    lb:ratelimit:{target}:reads   string  the same for reads (reconcile's read-back) alone, at
                                          reconcile.read_share of the target's rate; a read
                                          takes from both buckets; TTL just past that time
    lb:ratelimit:{target}:bulk    string  the same for bulk requests, at the target's
                                          bulk_per_minute; a bulk takes from both buckets; TTL
                                          just past that time
    lb:ratelimit:{target}:puts    string  the same for the sender's PUT lane, at the general
                                          rate less one request per bulk slot; a lane PUT
                                          takes from both it and the shared bucket (keeping a
                                          request of headroom there for the next bulk); TTL
                                          just past that time
    lb:history                    list    latest delivery attempts (JSON), newest first; capped
                                          at HISTORY_MAXLEN
    lb:history:{group}            list    the same for one group; capped at GROUP_HISTORY_MAXLEN;
                                          expires GROUP_IDLE_MS after its last entry
    lb:latency                    list    recent webhook-to-acceptance latencies, ms; capped at
                                          LATENCY_MAXLEN
    lb:adopt:{target}             hash    ref -> JSON {ref, group, since}: a create held while
                                          the target adopts (``bridge/delivery/adoption.py``);
                                          until the ref is linked or adoption ends (linking), or
                                          the listing is compacted to a tombstone
    lb:linked:{target}            set     refs known to be linked on a per-listing portal; found
                                          while adopting, or written by linking; a ref leaves
                                          when it is unlinked (linking) or its listing is
                                          compacted to a tombstone
    lb:outbox:{target}            hash    ref -> JSON write {ref, group, operation, payload,
                                          digest, base, key, received_ms, queued_at, attempts,
                                          stamp (the desired state it was planned from)}:
                                          a per-listing write waiting to go out by bulk
                                          (``outbox.py``), newest content per ref; removed when
                                          the target's answer for that very content (digest and
                                          key) is recorded
    lb:outbox:ready:{target}      zset    ref -> when its write may go (queued, or its backoff
                                          after a failed operation); same members as the hash
    lb:outbox:ready:{target}:{group} zset  the group's lane: ref -> when its write may go, for
                                          the refs first queued by that group's flushes or
                                          taken ahead (a ref joins at when the change it
                                          carries came: oldest change first; newer content of a
                                          waiting ref, queued or taken by the sender
                                          (``fresh.py``), keeps its lane and place);
                                          a ref leaves when its entry does, or while a PUT of
                                          it is in flight (lb:outbox:puts); the sender takes
                                          round-robin across lanes, oldest first in each;
                                          deleted with its last member
    lb:outbox:groups:{target}     zset    group -> its turn: the groups with a lane, the one
                                          served longest ago first (joined: when it joined;
                                          served: when a bulk or PUT last took from it);
                                          a group leaves with its lane's last member
    lb:outbox:puts:{target}       hash    ref -> JSON {lane, at, attempts, not_before, op (the
                                          outbox entry as sent)}: a write the sender took for
                                          a single PUT (its spare general budget), recorded
                                          before the PUT goes out and resent by PUT with the
                                          same key (the entry's intent key) after a timeout or
                                          a crash, never in a bulk; deleted when its answer
                                          is recorded
    lb:outbox:batch:{target}      string  JSON {key, ops, at, attempts}: the bulk request in
                                          flight, recorded before it goes out, so a timeout or a
                                          crash resends exactly it, with its key; deleted when
                                          its answer is recorded
    lb:ahead:{target}:{group}     hash    ref -> "<seq>" or "<seq>:c": a write the sender took
                                          into the outbox ahead of the group's flush
                                          (``delivery/ahead.py``), with the seq of the change
                                          it carries (lb:dirty: the same change is not taken
                                          twice); ":c" marks a create, which that flush's
                                          guards count as part of its change, not as a
                                          listing the group held. Deleted by the first flush
                                          of the group whose turn for the target settles
                                          cleanly after it; PX GROUP_IDLE_MS, renewed by each
                                          write ahead
    lb:sender:{target}            string  the fencing token (from lb:fence) of the one sender
                                          draining the outbox; PX delivery.lease_ms, renewed
                                          while it runs, deleted when it stops
    lb:senders                    zset    target -> when its outbox is due to be drained (an
                                          enqueue: now; a spent budget: its reset); removed
                                          when the outbox is empty
    lb:workers                    hash    worker id -> JSON heartbeat {at, pid, host}
                                          (``workers/worker.py``); until the worker shuts down
                                          (a killed worker's entry stays, its heartbeat stale)

Linking (``bridge link``, its scan and adoption: ``bridge/linking/service.py``):

    lb:linked:{target}            set     refs linked by ``bridge link`` or seen linked by a scan
                                          (see Delivery)
    lb:adopt:{target}             hash    a linked ref's held create is removed (its group made
                                          due); ending adoption deletes the whole hash
    lb:adopted:{target}           string  when adoption of the target ended (ADOPTED); absent:
                                          adopting if the target says ``adopt = true``; forever
    lb:pending:{group}, lb:due    seq bumped and the group made due (mark_due) when a held
                                  create can go out

Operators (the dashboard and CLI: ``bridge/ops/actions.py`` through the ledger):

    lb:release:{target}:{group}   string  JSON {digest, seq}: the held sync an operator
                                          reviewed and released (checked atomically against the
                                          held digest); until the group's next accepted sync or
                                          the next hold
    lb:discarded:{target}:{group} string  JSON {digest, seq}: the held sync an operator refused;
                                          spent (deleted by a flush) once the group's seq moves;
                                          both markers PX GROUP_IDLE_MS
    lb:quarantine:{target}        hash    a retry removes the entry and its intent (a new key
                                          next time); a discard marks it ``discarded``
    lb:held:{target}              hash    a discard removes the group (see Delivery)
    lb:target:{target}            hash    pause sets paused, paused_at; resume clears them and
                                          blocked_until, and makes every group due
    lb:pending:{group}, lb:due    "flush now", a release or a retry makes groups due
                                  (mark_due: bumps seq so a running flush keeps them due)

Reconciliation, the workers' periodic pass (``workers/scheduler.py`` takes checks when due,
``workers/jobs.py`` runs them, ``bridge/reconcile/records.py`` writes what they found). A
"group" below is a CRM group, or "" for the whole of a per-listing portal (read page by page for
listings no CRM listing is linked to):

    lb:reconcile:due:{target}     zset    group -> when its next check on {target} is due: spread
                                          over [reconcile] interval_s by a hash of target and
                                          group; added by every worker's scheduler for groups
                                          of lb:groups it lacks, moved on by each check (the
                                          next slot) or failure (backoff); a taken group is
                                          moved RECONCILE_RETAKE_MS on, so a lost check comes
                                          back; left behind when {target} leaves the
                                          configuration (delete it by hand)
    lb:reconcile:running:{target} zset    group -> when its check's lock lapses: the checks
                                          running on {target} (at most RECONCILE_PER_TARGET);
                                          added when taken, renewed by the check, removed when
                                          it ends or lapses
    lb:reconcile:lock:{target}:{group} string the token of the one check of that group
                                          running; PX RECONCILE_LOCK_MS, renewed while it runs;
                                          deleted when it ends; a check records only while it
                                          holds it
    lb:reconcile:checks:{target}  hash    group -> JSON of its last check {at, found, repaired
                                          (kind -> count), unknown ([{ref, detail}], at most
                                          RECONCILE_UNKNOWN_KEPT), unknown_count}; forever
    lb:reconcile:failed:{target}  hash    group -> JSON {attempts, error, at}: its checks fail
                                          (the portal, or Redis mid-check); removed by its next
                                          check that succeeds
    lb:reconcile:pass:{target}    hash    the pass under way: started, checks, found:{kind},
                                          repaired:{kind}; the last full one (every group
                                          checked since it started): last_started,
                                          last_finished, last_checks, last_found:{kind},
                                          last_repaired:{kind}; unknown: listings unknown to
                                          the bridge in the groups' last checks; forever
    lb:reconcile:pass:{target}:groups set groups checked in the pass under way; deleted when
                                          the pass is full
    lb:reconcile:unknown:{target} zset    group -> when its last check found listings unknown
                                          to the bridge; removed when a check finds none;
                                          capped at the RECONCILE_UNKNOWN_GROUPS newest
    lb:reconcile:found:{target}   zset    group -> when its last check found anything; removed
                                          when a check finds nothing; capped at the
                                          RECONCILE_FOUND_GROUPS newest

A listing's story (``bridge trace``, read by ``bridge/ops/trace.py``):

    lb:trace:{ref}                list    compact JSON entries (bridge/stories.py), newest
                                          first: every event received for the listing
                                          (written by the ingest fold, duplicates
                                          and stale ones too), every flush decision about it per
                                          target and every portal call that carried it (the
                                          flush's ledger, fenced). Capped at TRACE_MAXLEN; each
                                          write sets a TTL of [trace] retention_days, so the
                                          list goes that long after its last entry, and readers
                                          leave out entries older than that

arq (written by arq itself; names from ``arq.constants``, derived below):

    QUEUE                         zset    job id -> when to run: the bridge's flush jobs and
                                          reconciliation checks (arq's own ids; the lease or
                                          the check's lock, not the id, guards a group); the
                                          name is arq's default queue name + ":listing-bridge"
    IN_PROGRESS + job id          string  set while a worker runs that job; TTL the job timeout
    arq's job, result and retry keys per job id, with arq's own TTLs (results are not kept)
"""

from __future__ import annotations

import functools

from arq.constants import default_queue_name, in_progress_key_prefix

from bridge import tenancy

PREFIX = "lb:"

# Deployment-wide keys: no tenant's (see the layout above).
WORKERS = PREFIX + "workers"
WAKE = PREFIX + "{wake}"  # hash-tagged: the turns' scripts take it with TURNS, in one slot
TURNS = WAKE + ":turns"
MIGRATION = PREFIX + "migration"

# Suffixes of a key named above.
READS = ":reads"  # lb:ratelimit:{target}:reads
BULK = ":bulk"  # lb:ratelimit:{target}:bulk
PUTS = ":puts"  # lb:ratelimit:{target}:puts
RECONCILE_PASS_GROUPS = ":groups"  # lb:reconcile:pass:{target}:groups


class Keyspace:
    """One tenant's key names: ``ks().PENDING + group``. Every name starts with the tenant's
    prefix (``lb:{t:NAME}:``, ``bridge.tenancy.prefix``), so all of them share one hash slot."""

    __slots__ = (
        "ACCEPTED", "ADOPT", "ADOPTED", "AHEAD", "BACKOFF", "BODY", "DIRTY", "DISCARDED", "DUE",
        "EPOCH", "FENCE", "FLUSHING", "GROUPS", "HELD", "HISTORY", "INBOX", "INBOX_DEAD",
        "INBOX_RETRIES", "INTENT", "LATENCY", "LEASE", "LINKED", "LISTING", "MEMBERS",
        "METRICS", "OUTBOX", "OUTBOX_BATCH", "OUTBOX_GROUPS", "OUTBOX_PUTS", "OUTBOX_READY",
        "PENDING", "PREFIX", "QUARANTINE", "RATE_LIMIT", "RECONCILE_CHECKS", "RECONCILE_DUE",
        "RECONCILE_FAILED", "RECONCILE_FOUND", "RECONCILE_LOCK", "RECONCILE_PASS",
        "RECONCILE_RUNNING", "RECONCILE_UNKNOWN", "RELEASE", "SEEN", "SENDER", "SENDERS",
        "SETTLED", "STATS", "SYNC_DIGEST", "TARGET", "TOMBSTONES", "TRACE", "VERIFIED",
        "WITNESS", "tenant",
    )

    tenant: str
    PREFIX: str
    SEEN: str
    INBOX: str
    INBOX_DEAD: str
    INBOX_RETRIES: str
    LISTING: str
    BODY: str
    MEMBERS: str
    GROUPS: str
    TOMBSTONES: str
    PENDING: str
    DUE: str
    STATS: str
    LEASE: str
    DIRTY: str
    SETTLED: str
    FLUSHING: str
    FENCE: str
    EPOCH: str
    WITNESS: str
    VERIFIED: str
    INTENT: str
    ACCEPTED: str
    SYNC_DIGEST: str
    QUARANTINE: str
    HELD: str
    RELEASE: str
    DISCARDED: str
    BACKOFF: str
    TARGET: str
    RATE_LIMIT: str
    HISTORY: str
    LATENCY: str
    METRICS: str
    LINKED: str
    ADOPT: str
    ADOPTED: str
    TRACE: str
    OUTBOX: str
    OUTBOX_READY: str
    OUTBOX_BATCH: str
    OUTBOX_GROUPS: str
    OUTBOX_PUTS: str
    AHEAD: str
    SENDER: str
    SENDERS: str
    RECONCILE_DUE: str
    RECONCILE_RUNNING: str
    RECONCILE_LOCK: str
    RECONCILE_CHECKS: str
    RECONCILE_FAILED: str
    RECONCILE_PASS: str
    RECONCILE_UNKNOWN: str
    RECONCILE_FOUND: str

    def __init__(self, tenant: str) -> None:
        p = tenancy.prefix(tenant)
        self.tenant = tenant
        self.PREFIX = p
        self.SEEN = p + "seen:"
        self.INBOX = p + "inbox"
        self.INBOX_DEAD = p + "inbox:dead"
        self.INBOX_RETRIES = p + "inbox:retries"
        self.LISTING = p + "listing:"
        self.BODY = p + "body:"
        self.MEMBERS = p + "members:"
        self.GROUPS = p + "groups"
        self.TOMBSTONES = p + "tombstones"
        self.PENDING = p + "pending:"
        self.DUE = p + "due"
        self.STATS = p + "stats:"
        self.LEASE = p + "lease:"
        self.DIRTY = p + "dirty:"
        self.SETTLED = p + "settled:"
        self.FLUSHING = p + "flushing"
        self.FENCE = p + "fence"
        self.EPOCH = p + "epoch"
        self.WITNESS = p + "witness"
        self.VERIFIED = p + "verified:"
        self.INTENT = p + "intent:"
        self.ACCEPTED = p + "accepted:"
        self.SYNC_DIGEST = p + "syncdigest:"
        self.QUARANTINE = p + "quarantine:"
        self.HELD = p + "held:"
        self.RELEASE = p + "release:"
        self.DISCARDED = p + "discarded:"
        self.BACKOFF = p + "backoff:"
        self.TARGET = p + "target:"
        self.RATE_LIMIT = p + "ratelimit:"
        self.HISTORY = p + "history"
        self.LATENCY = p + "latency"
        self.METRICS = p + "metrics"
        self.LINKED = p + "linked:"
        self.ADOPT = p + "adopt:"
        self.ADOPTED = p + "adopted:"
        self.TRACE = p + "trace:"
        self.OUTBOX = p + "outbox:"
        self.OUTBOX_READY = p + "outbox:ready:"
        self.OUTBOX_BATCH = p + "outbox:batch:"
        self.OUTBOX_GROUPS = p + "outbox:groups:"
        self.OUTBOX_PUTS = p + "outbox:puts:"
        self.AHEAD = p + "ahead:"
        self.SENDER = p + "sender:"
        self.SENDERS = p + "senders"
        self.RECONCILE_DUE = p + "reconcile:due:"
        self.RECONCILE_RUNNING = p + "reconcile:running:"
        self.RECONCILE_LOCK = p + "reconcile:lock:"
        self.RECONCILE_CHECKS = p + "reconcile:checks:"
        self.RECONCILE_FAILED = p + "reconcile:failed:"
        self.RECONCILE_PASS = p + "reconcile:pass:"
        self.RECONCILE_UNKNOWN = p + "reconcile:unknown:"
        self.RECONCILE_FOUND = p + "reconcile:found:"

    def bucket(self, target: str) -> str:
        """The rate bucket of the portal credentials behind ``target`` (they, not the tenant,
        own a rate budget); the tenant's own when no credentials were registered for it."""
        credential = tenancy.credential(self.tenant, target)
        if credential is None:
            return self.RATE_LIMIT + target
        return PREFIX + "{r:" + credential + "}:ratelimit"


@functools.lru_cache(maxsize=4096)
def keyspace(tenant: str) -> Keyspace:
    """Tenant ``tenant``'s key names."""
    return Keyspace(tenant)


def ks() -> Keyspace:
    """The key names of the tenant the current work is for (``bridge.tenancy.current``)."""
    return keyspace(tenancy.current())


# The fields of lb:listing:{ref}, in one order: the ingest fold unpacks them by position and
# the delivery side reads all but the last (the snapshot floor, which only ingest needs).
LISTING_FIELDS = ("g", "v", "t", "d", "body", "at", "c", "f")
# And the webhook ids that set the state at its time: ingest's alone, so not among the fields
# above (the delivery side reads all of those but the last, by position).
LISTING_SOURCES = "w"
# The values of its cause field "c": why the listing is deleted.
CAUSE_DELETED = "deleted"  # a listing.deleted event
CAUSE_SNAPSHOT = "snapshot"  # absent from a group.snapshot

# A tombstone stays this long past its expiry by Redis's clock: a webhook reads its clock
# (the receipt time) before its script stores the event, on a host whose clock may differ.
TOMBSTONE_GRACE_MS = 2_000
# A retried inbox entry's count of failures is kept this long for the fold that meets it next.
INBOX_RETRIES_MS = 86_400_000
# Per-group markers and histories (lb:pending, lb:history, lb:syncdigest, lb:release,
# lb:discarded, lb:backoff of a group) expire when the group has been idle this long.
GROUP_IDLE_MS = 30 * 86_400_000
HISTORY_MAXLEN = 5_000
GROUP_HISTORY_MAXLEN = 200
LATENCY_MAXLEN = 2_000
STATS_TTL_S = 2 * 3600
# A listing's story keeps its newest entries only: a busy listing's traces stay small.
TRACE_MAXLEN = 200

# The periodic reconciliation: a taken check comes back this much later unless it reschedules
# itself first; its lock lapses this long after its last renewal; at most this many checks run
# on one target at once (reads share one budget, so more would only wait, holding job slots).
RECONCILE_RETAKE_MS = 60_000
RECONCILE_LOCK_MS = 30_000
RECONCILE_PER_TARGET = 2
# What the records keep: unknown listings per group check, and groups listed per target.
RECONCILE_UNKNOWN_KEPT = 50
RECONCILE_UNKNOWN_GROUPS = 1_000
RECONCILE_FOUND_GROUPS = 1_000

# The quarantine entry of a whole group sync the portal refused without naming a listing.
GROUP_QUARANTINE = "(group):"

# arq job names and the queue the bridge's workers listen on. The queue's name must not change:
# running deployments keep their queued jobs under it.
QUEUE = default_queue_name + ":listing-bridge"
IN_PROGRESS = in_progress_key_prefix  # + job id: arq's marker of a running job
FLUSH_JOB = "flush_group"
RECONCILE_JOB = "reconcile_group"
SEND_JOB = "send_outbox"
