"""The webhook's path: ``webhook`` (the ASGI endpoint) verifies with ``signatures``, validates
with ``events`` and ``listing`` (the canonical listing), and stores with ``store``: one Lua script
run through ``script_client``, the pipelined connection, that dedupes the event and appends it to
the inbox. Nothing else happens before the answer. Then ``inbox``, run by every worker's
scheduler, folds the inbox into the desired state that delivery reads (``store``'s fold script).
"""
