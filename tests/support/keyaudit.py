"""Every key a Lua script touches must arrive in its KEYS: an audit of a live server by MONITOR.

Redis requires a script to receive every key it touches in KEYS (Redis Cluster routes a script
by them, and a key outside them may live on another node). Nothing in Redis enforces it on one
node, so this watches: MONITOR shows each EVAL/EVALSHA with its keys, then each command the
script ran (``[0 lua]``), and every key those commands name (``COMMAND INFO``'s key positions;
``COMMAND GETKEYS`` for commands whose keys move) must be one the script was given.

The test session runs it beside its own server for the whole run (``tests/conftest.py``): every
script every test runs is audited, in the test process's calls and in the bridge processes the
tests start alike. It runs as a process of its own (``python -m tests.support.keyaudit PORT
FILE``), so reading the server's every command costs the tests' processes nothing, and it
reconnects when a test restarts the server. Each script that touches an undeclared key is
written to FILE once, as a JSON line; the session fails on any.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# A MONITOR line: time, [db client], then the command's arguments, each quoted (sdscatrepr).
_LINE = re.compile(rb'^\+?[\d.]+ \[\d+ ([^\]]+)\] (.*)$')
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(rb'\\(x[0-9a-fA-F]{2}|.)')
_SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
NAME = b"lb-keyaudit"
_SCRIPTS = {b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"fcall", b"fcall_ro"}


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match[1]
    if code[:1] == b"x" and len(code) == 3:
        return bytes([int(code[1:], 16)])
    return _SIMPLE.get(code, code)


def arguments(text: bytes) -> list[bytes]:
    """A MONITOR line's arguments, as the client sent them."""
    return [_ESCAPE.sub(_unescape, arg) for arg in _ARG.findall(text)]


@dataclass
class KeySpecs:
    """Where each command's keys are (``COMMAND INFO``'s first, last and step)."""

    positions: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)
    movable: set[bytes] = field(default_factory=set)

    @classmethod
    def read(cls, conn: Connection) -> KeySpecs:
        specs = cls()
        for info in conn.call(b"COMMAND"):  # type: ignore[union-attr]
            name, flags = info[0].lower(), {f.lower() for f in info[2]}
            specs.positions[name] = (int(info[3]), int(info[4]), int(info[5]))
            if b"movablekeys" in flags:
                specs.movable.add(name)
        return specs

    def keys(self, command: list[bytes], ask: Connection) -> list[bytes]:
        name = command[0].lower()
        if name in self.movable:
            reply = ask.call(b"COMMAND", b"GETKEYS", *command)
            return list(reply) if isinstance(reply, list) else []
        first, last, step = self.positions.get(name, (0, 0, 0))
        if first <= 0:
            return []
        end = len(command) + last if last < 0 else last
        return command[first:end + 1:max(step, 1)]


class Connection:
    """A bare RESP connection: MONITOR's stream is read line by line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.call(b"CLIENT", b"SETNAME", NAME)  # tests that count clients leave it out

    def send(self, *args: bytes) -> None:
        self.sock.sendall(b"*%d\r\n" % len(args)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))

    def call(self, *args: bytes) -> object:
        self.send(*args)
        return self.reply()

    def reply(self) -> object:
        line = self.file.readline()
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"-"):
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.sock.close()


def lines(port: int, ready: str) -> Iterator[bytes]:
    conn = Connection(port)
    conn.sock.settimeout(None)
    conn.send(b"MONITOR")
    conn.file.readline()  # +OK
    open(ready, "w").close()  # the session's tests may start
    while True:
        line = conn.file.readline()
        if not line:
            return
        yield line.rstrip(b"\r\n")


def audit(port: int, out: str) -> None:
    reported: set[bytes] = set()
    with open(out, "a", buffering=1) as sink:
        while True:
            try:
                ask = Connection(port)
                specs = KeySpecs.read(ask)
                _watch(port, specs, ask, reported, sink)
            except OSError:
                time.sleep(0.2)  # the server restarts: a test stopped it


def _watch(port: int, specs: KeySpecs, ask: Connection, reported: set[bytes],
           sink: object) -> None:
    declared: set[bytes] = set()
    script = b""
    for line in lines(port, sink.name + ".ready"):  # type: ignore[attr-defined]
        found = _LINE.match(line)
        if not found:
            continue
        who, text = found[1], found[2]
        if who == b"lua":
            if not script:
                continue
            command = arguments(text)
            stray = [key for key in specs.keys(command, ask) if key not in declared]
            if stray and script not in reported:
                reported.add(script)
                print(json.dumps({"script": script.decode(errors="replace"),
                                  "command": [a.decode(errors="replace") for a in command[:6]],
                                  "undeclared": [k.decode(errors="replace") for k in stray],
                                  "declared": sorted(k.decode(errors="replace")
                                                     for k in declared)[:20]}),
                      file=sink)  # type: ignore[call-overload]
            continue
        head = text[1:12].lower()
        if not any(head.startswith(name + b'"') for name in _SCRIPTS):
            script = b""
            continue
        command = arguments(text)
        count = int(command[2])
        declared = set(command[3:3 + count])
        body = command[1]
        script = body if command[0].lower().startswith(b"evalsha") else (
            b"eval:" + body[:120])
        tenants = sorted({_tenant(key) for key in declared} - {b""})
        if len(tenants) > 1 and b"tenants:" + script not in reported:
            reported.add(b"tenants:" + script)
            print(json.dumps({"script": script.decode(errors="replace"),
                              "tenants": [t.decode(errors="replace") for t in tenants],
                              "declared": sorted(k.decode(errors="replace")
                                                 for k in declared)[:20]}),
                  file=sink)  # type: ignore[call-overload]


def _tenant(key: bytes) -> bytes:
    """The tenant whose key ``key`` is (``lb:{t:NAME}:...``); b"" for any other key."""
    if not key.startswith(b"lb:{t:"):
        return b""
    end = key.find(b"}", 6)
    return key[6:end] if end > 0 else b""


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    audit(int(sys.argv[1]), sys.argv[2])


if __name__ == "__main__":
    main()
