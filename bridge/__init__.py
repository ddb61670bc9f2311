"""listing-bridge: keeps property portals in step with an agency's CRM.

Follow a webhook from the endpoint to the portal call by opening one package per step:

    ingest/      the CRM's webhook: verify the signature, validate the event, one Lua call that
                 dedupes it and appends it to the inbox; then answer. The workers' fold (also
                 here: ``inbox.py``) orders the inbox's events into the desired state and
                 marks their groups due
    delivery/    the flush of one group: claim its changes, plan the difference between desired
                 state and what each portal accepted (the ledger), send it with idempotency keys
                 within each portal's rate limit, record the outcome. ``flush`` drives the
                 turns; ``per_listing`` (Rentix) and ``group_sync`` (Travtus) each deliver one
                 portal mode, on the ground ``turns`` gives both
    portals/     one adapter per portal (Rentix per listing, Travtus per group): mapping,
                 local validation, HTTP, and the outcome of every answer
    linking/     connecting hand-made Rentix listings to CRM records by external ID
    ops/         what an operator sees and does: typed read models and actions
    dashboard/   the operator's pages, JSON API and /metrics, behind one auth check
    cli/         the ``bridge`` command, one module per command family
    dev/         ``bridge dev`` (embedded Redis and everything wired together), the event
                 generator and sender; never imported by serve or worker code
    sandbox/     both portal APIs in memory, written from their references alone

Shared ground: ``settings`` (the TOML file), ``constants`` (every Redis key and its lifetime),
``connections`` (Redis clients and start-up checks), ``scripts`` (reading the ``.lua`` files that
sit beside the module owning each script, every key declared in its header),
``packing`` (compact storage of per-listing JSON), ``stories`` (how listings' stories are stored),
``counters`` (the Prometheus totals kept in Redis), ``logs`` (log context and JSON lines),
``clock``, ``responses``, and ``app`` (the web process). The Lua fragments ``declared.lua``
(the keys a script was given) and ``group_state.lua`` (a group's scheduling keys: the
debounce and counter rules, stated once, and every write to them) sit here
too. The arq worker process is the top-level
package ``workers``, which imports ``bridge`` and is never imported by it. The import rules are
contracts in ``pyproject.toml``.
"""
