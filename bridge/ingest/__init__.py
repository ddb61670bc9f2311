"""The webhook's path: ``webhook`` (the ASGI endpoint) verifies with ``signatures``, validates
with ``events`` and ``listing`` (the canonical listing), and stores with ``store``: one Lua script
run through ``script_client``, the pipelined connection. Nothing else happens before the answer.
"""
