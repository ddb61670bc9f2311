"""The webhook's path to Redis: one Lua script, called by many concurrent requests, pipelined.

Requests that arrive in the same event-loop turn share one socket write; replies come back in
order on one connection and each caller gets its own. redis-py spends ~55 µs of CPU per pipelined
command (argument encoding, bookkeeping); this path packs one RESP command with a single join and
lets hiredis parse the replies, which is what makes the webhook fast. Everything else in the
bridge uses redis-py.

The URL means what it means to redis-py (its own parser reads it): ``redis://`` (host, port,
``/db`` or ``?db=``), ``rediss://`` (TLS, with redis-py's ``ssl_*`` query options and defaults),
``unix:///path?db=N``, and ``user:password@`` (ACL) with %xx escapes decoded.

Durability: the app's ``prepare`` check runs on every new connection before any script call goes
out on it; its ``Durability`` says what a call waits for after its script ran: ``WAITAOF`` (or
``WAIT`` for replicas) on the same connection, group-committed: one covers every script call
written before it, and at most one is in flight (the server blocks this client until it
answers, so calls written meanwhile run after it and wait for the next). A call is answered only
once its script reply and the wait covering it are both in; a wait that falls short fails every
call in flight (the webhook answers 503, never 202) and the next call reconnects, so ``prepare``
looks at the server again.

Failure rules: if the connection drops or a round trip passes its deadline, every call in flight
fails (the webhook answers 503, the CRM retries, dedupe makes that safe) and the next call
reconnects. A failed connect (refused, unknown host, TLS, credentials) or a failed ``prepare``
fails every call waiting for that connection at once, with a ``StorageUnavailable`` naming the
cause; the next call tries again. A ``NOSCRIPT`` reply (Redis restarted and forgot the script)
means that call never ran: the script is loaded again and the call retried.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from bridge.connections import Durability
from bridge.scripts import Lua, ScriptError

Prepare = Callable[[], Awaitable[Durability]]

# How long a TLS handshake may take before we ask, on a second connection, whether the port
# speaks plain text: a plain Redis reads a ClientHello as an unfinished command and never answers.
TLS_PROBE_AFTER_S = 0.2
# First bytes of a TLS record (alert, handshake): what a TLS port sends back to plain text.
TLS_RECORDS = (b"\x15", b"\x16")
REFUSED_CREDENTIALS = ("WRONGPASS", "ERR invalid password", "ERR AUTH", "ERR Client sent AUTH")


class StorageUnavailable(RedisConnectionError):
    """Redis cannot take the webhook's writes now; the message names the cause."""


class NotDurable(StorageUnavailable):
    """The script ran but Redis did not confirm it durable in time: the call must not succeed."""


def pack(*args: bytes | str | int) -> bytes:
    """One RESP command: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), _bulks(args))


def _bulks(args: tuple[bytes | str | int, ...] | list[bytes | str | int]) -> bytes:
    parts: list[bytes] = []
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        else:
            data = b"%d" % arg
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, as redis-py reads the URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def where(self) -> str:
        return f"unix socket {self.path}" if self.path else f"{self.host}:{self.port}"

    def setup(self) -> list[bytes]:
        """Commands for a new connection; the PING makes a server that wants credentials say
        so now rather than on the first script call."""
        commands = []
        if self.username or self.password:
            # As redis-py: AUTH user password with a user, AUTH password without.
            credentials = ((self.username, self.password or "") if self.username
                           else (self.password or "",))
            commands.append(pack(b"AUTH", *credentials))
        if self.db:
            commands.append(pack(b"SELECT", self.db))
        commands.append(pack(b"PING"))
        return commands


def endpoint(url: str) -> Endpoint:
    """Read ``url`` with redis-py's own parser; ValueError for anything it cannot mean."""
    scheme = urlparse(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis_url must be a redis://, rediss:// or unix:// URL, "
                         f"not {scheme or 'schemeless'}://")
    options = cast(dict[str, Any], parse_url(url))
    username, password = options.get("username"), options.get("password")
    db = int(options.get("db", 0))
    if scheme == "unix":
        if not options.get("path"):
            raise ValueError("a unix:// redis_url needs the socket's path: unix:///path?db=N")
        return Endpoint(path=options["path"], username=username, password=password, db=db)
    tls = _tls_context(options) if scheme == "rediss" else None
    return Endpoint(host=options.get("host", "localhost"), port=options.get("port", 6379),
                    tls=tls, username=username, password=password, db=db)


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The context redis-py's SSLConnection builds from the URL's ssl_* options (its defaults
    included), made now so a wrong option fails at start, not on the first webhook."""
    tls_options = {name: value for name, value in options.items() if name.startswith("ssl_")}
    try:
        context: ssl.SSLContext = SSLConnection(**tls_options).ssl_context.get()
    except (TypeError, OSError, RedisError) as exc:
        raise ValueError(f"redis_url's TLS options cannot be used: {exc}") from exc
    return context


def barrier_command(durability: Durability | None) -> bytes | None:
    """What follows script calls before they may be answered; None: nothing."""
    if durability is None:
        return None
    if durability.wait_aof:
        return pack(b"WAITAOF", 1, durability.replicas, durability.timeout_ms)
    if durability.replicas > 0:
        return pack(b"WAIT", durability.replicas, durability.timeout_ms)
    return None


class _Connection(asyncio.Protocol):
    """One pipelined connection: replies are matched to waiters in order. With a barrier (the
    durability wait), script replies are held until the barrier written after them answers."""

    def __init__(self, where: str, tls: bool) -> None:
        self.where = where
        self.tls = tls
        self.reader = hiredis.Reader(replyError=ResponseError)
        # None stands for a barrier's reply.
        self.waiters: collections.deque[asyncio.Future[Any] | None] = collections.deque()
        self.transport: Any = None  # asyncio's or uvloop's transport
        # The loop it was made in, kept: asyncio.get_running_loop() costs a getpid() system
        # call on every call (CPython 3.11), and calls come from that loop only.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lost = False
        self.ready = False  # set up (AUTH, SELECT) and checked (prepare)
        self.barrier: bytes | None = None
        self.durability = Durability()
        self.held: list[tuple[asyncio.Future[Any], Any]] = []
        # Commands are written in the order their waiters are queued: through this buffer,
        # flushed once at the end of the loop turn, so concurrent calls share one socket write.
        self.out: list[bytes] = []
        self.flush_soon = False
        self.unbarriered = False  # script calls written since the last barrier went out
        self.barrier_out = False  # a barrier is written and not yet answered
        self.barrier_soon = False  # a barrier is scheduled for the end of this loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiters.popleft()
                if waiter is None:
                    self.settle(reply)
                    if self.lost:  # a wait fell short: every call failed, the rest unread
                        return
                elif self.barrier is not None:
                    self.held.append((waiter, reply))
                elif not waiter.done():
                    waiter.set_result(reply)
        except hiredis.ProtocolError:
            self.fail(StorageUnavailable(self._not_resp(data)))
            self.close()

    def _not_resp(self, data: bytes) -> str:
        if not self.ready and data[:1] in TLS_RECORDS:
            return (f"Redis at {self.where} answered in TLS, not plain text: use rediss:// in "
                    "redis_url")
        return (f"Redis at {self.where} answered with something other than the Redis "
                "protocol: is redis_url's port a Redis server?")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.ready:
            message = f"connection to Redis at {self.where} lost: {exc or 'closed'}"
        else:
            message = f"Redis at {self.where} closed the connection before answering"
            if exc is not None:
                message += f" ({exc})"
            if not self.tls:
                message += "; if it accepts only TLS, use rediss:// in redis_url"
        self.fail(StorageUnavailable(message))

    def fail(self, exc: Exception) -> None:
        held, self.held = self.held, []
        for waiter, _ in held:
            if not waiter.done():
                waiter.set_exception(exc)
        while self.waiters:
            pending = self.waiters.popleft()
            if pending is not None and not pending.done():
                pending.set_exception(exc)

    def send(self, payload: bytes, waiters: list[asyncio.Future[Any]]) -> None:
        """Write commands now; their replies resolve ``waiters``, in order."""
        assert self.transport is not None
        self.waiters.extend(waiters)
        self.out.append(payload)
        self.flush()
        if self.barrier is not None:
            self._barrier_due()

    def send_one(self, payload: bytes, waiter: asyncio.Future[Any]) -> None:
        """Write one command at the end of this loop turn, with the others made in it."""
        self.waiters.append(waiter)
        self.out.append(payload)
        if not self.flush_soon:
            self.flush_soon = True
            self.running_loop().call_soon(self.flush)
        if self.barrier is not None:
            self._barrier_due()

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this connection was made in (asked for only before it is connected)."""
        return self.loop or asyncio.get_running_loop()

    def flush(self) -> None:
        self.flush_soon = False
        if self.out and not self.lost:
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
        self.out.clear()

    def start(self, durability: Durability | None) -> None:
        """Ready for script calls, each followed by what ``durability`` asks for."""
        self.barrier = barrier_command(durability)
        self.durability = durability or Durability()
        self.ready = True

    def _barrier_due(self) -> None:
        # Calls written in this loop turn share the barrier sent at its end; if one is in
        # flight, the next goes out when it answers.
        self.unbarriered = True
        if not self.barrier_out and not self.barrier_soon:
            self.barrier_soon = True
            self.running_loop().call_soon(self._send_barrier)

    def _send_barrier(self) -> None:
        self.barrier_soon = False
        if self.lost or self.barrier_out or not self.unbarriered or self.barrier is None:
            return
        self.unbarriered = False
        self.barrier_out = True
        self.waiters.append(None)
        self.out.append(self.barrier)  # after every call queued before it
        self.flush()

    def settle(self, reply: Any) -> None:
        """The barrier answered: every held reply was written before it."""
        self.barrier_out = False
        shortfall = self._shortfall(reply)
        if shortfall is not None:
            # Every call in flight fails, and the next one reconnects: ``prepare`` then looks
            # at the server again (appendfsync or replicas may have changed) and says why.
            self.fail(shortfall)
            self.close()
            return
        held, self.held = self.held, []
        for waiter, result in held:
            if not waiter.done():
                waiter.set_result(result)
        if self.unbarriered:
            self._send_barrier()

    def _shortfall(self, reply: Any) -> StorageUnavailable | None:
        wanted = self.durability
        if isinstance(reply, ResponseError):
            return StorageUnavailable(f"Redis at {self.where} refused the durability wait "
                                      f"after the webhook's script: {reply}")
        if isinstance(reply, list):  # WAITAOF: [local fsyncs, replicas that fsynced]
            local, replicas = int(reply[0]), int(reply[1])
        else:  # WAIT: replicas that hold the writes
            local, replicas = 1, int(reply)
        if local >= 1 and replicas >= wanted.replicas:
            return None
        missing = [] if local >= 1 else ["not fsynced to its AOF"]
        if replicas < wanted.replicas:
            missing.append(f"held by {replicas} of {wanted.replicas} replicas")
        return NotDurable(f"Redis at {self.where} did not confirm the event durable within "
                          f"{wanted.timeout_ms} ms: {', '.join(missing)}")

    def close(self) -> None:
        self.lost = True  # nothing more may be written: replies would never come
        if self.transport is not None:
            self.transport.close()


class _Deadline:
    """When the calls made in one loop turn time out: one timer for all of them, cancelled once
    the last is answered (a timer per call cost ~1.2 µs of each)."""

    __slots__ = ("futures", "started", "timer", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, late: str) -> None:
        self.started = loop.time()
        self.futures: list[asyncio.Future[Any]] = []
        self.waiting = 0
        self.timer = loop.call_at(self.started + timeout_s, self._expire, late)

    def add(self, future: asyncio.Future[Any]) -> None:
        self.futures.append(future)
        self.waiting += 1

    def answered(self) -> None:
        self.waiting -= 1
        if not self.waiting:
            self.timer.cancel()
            self.futures.clear()

    def _expire(self, late: str) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(TimeoutError(late))


class ScriptBatcher:
    def __init__(self, url: str, script: Lua | str, timeout_s: float = 5.0,
                 connect_timeout_s: float = 2.0, prepare: Prepare | None = None,
                 keys: int | None = None) -> None:
        """``script``: a loaded Lua file, whose header fixes how many KEYS every call passes
        (``keys`` where it takes a variable number; a bare source takes none). ``prepare``
        runs on every new connection before a script call goes out on it; what it returns
        says what each call waits for, and if it raises, the calls waiting for that
        connection fail with its error."""
        self._endpoint = endpoint(url)
        self._lua = script if isinstance(script, Lua) else None
        self.keys = _fixed_keys(script, keys) if isinstance(script, Lua) else 0
        self._source = (script.source if isinstance(script, Lua) else script).encode()
        self._sha = hashlib.sha1(self._source).hexdigest().encode()
        self._evalsha = _bulks((b"EVALSHA", self._sha, self.keys))  # packed once
        self._timeout = timeout_s
        self._late = f"Redis at {self._endpoint.where} did not answer within {timeout_s:g} s"
        self._connect_timeout = connect_timeout_s
        self._prepare = prepare
        self._conn: _Connection | None = None  # only ever a ready connection
        self._connector: asyncio.Task[None] | None = None
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._deadline: _Deadline | None = None  # the latest loop turn's

    async def call(self, args: list[bytes | str | int],
                   keys: list[bytes | str | int] | None = None) -> Any:
        """Run the script with ``keys`` (as many as its header declares) and ``args``; raises
        ConnectionError (StorageUnavailable when the cause is known), TimeoutError or
        ResponseError."""
        keys = keys or []
        if len(keys) != self.keys:
            raise ScriptError(f"the script takes {self.keys} keys; {len(keys)} given")
        return await self.call_packed(len(keys) + len(args), _bulks([*keys, *args]))

    async def call_packed(self, count: int, bulks: bytes) -> Any:
        """``call`` with its keys, then its arguments, already packed as RESP bulk strings,
        ``count`` in all (a caller that knows their types packs them in one step, ~2 µs less
        than ``_bulks``)."""
        evalsha = b"*%d\r\n%s%s" % (count + 3, self._evalsha, bulks)
        reply = await self._call(evalsha)
        if isinstance(reply, ResponseError):
            if str(reply).startswith("NOSCRIPT"):
                await self._call(pack(b"SCRIPT", b"LOAD", self._source))
                reply = await self._call(evalsha)
            if isinstance(reply, ResponseError):
                raise self._script_error(reply)
        return reply

    async def _call(self, command: bytes) -> Any:
        conn = self._conn
        loop = conn.running_loop() if conn is not None else asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if conn is not None and not conn.lost:
            # Written at the end of this loop turn, in one write with the calls made in it.
            conn.send_one(command, future)
        else:
            # Calls made while there is no ready connection queue up and go out together
            # once there is, in order.
            self._pending.append((command, future))
            if self._connector is None:
                self._connector = asyncio.ensure_future(self._connect_and_flush())
        # Not asyncio.timeout() (~4 µs a call): the turn's shared timer fails the future.
        deadline = self._deadline
        if deadline is None or not deadline.waiting or deadline.started != loop.time():
            deadline = self._deadline = _Deadline(loop, self._timeout, self._late)
        deadline.add(future)
        try:
            return await future
        except TimeoutError:
            self._drop()  # replies may still come, out of step with waiters: start afresh
            raise
        finally:
            deadline.answered()

    async def _connect_and_flush(self) -> None:
        try:
            conn = await self._ready_connection()
        except Exception as exc:
            self._fail_pending(_unavailable(exc))
        else:
            self._conn = conn
            batch, self._pending = self._pending, []
            if batch:
                conn.send(b"".join(command for command, _ in batch), [f for _, f in batch])
        finally:
            self._connector = None

    def _fail_pending(self, exc: Exception) -> None:
        batch, self._pending = self._pending, []
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _ready_connection(self) -> _Connection:
        conn = await self._open()
        try:
            durability = None
            if self._prepare is not None:
                async with asyncio.timeout(self._timeout):
                    durability = await self._prepare()
            if conn.lost:
                raise StorageUnavailable(f"connection to Redis at {conn.where} lost while its "
                                         "durability settings were checked")
        except BaseException:
            conn.close()
            raise
        conn.start(durability)
        return conn

    async def _open(self) -> _Connection:
        """A connection, authenticated and on its database, or StorageUnavailable naming why
        not."""
        where = self._endpoint.where
        conn = _Connection(where, tls=self._endpoint.tls is not None)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._transport(conn)
        except TimeoutError as exc:
            doing = "TLS handshake with" if conn.tls else "connect to"
            raise StorageUnavailable(f"{doing} Redis at {where} did not finish within "
                                     f"{self._connect_timeout:g} s") from exc
        except OSError as exc:
            raise StorageUnavailable(self._describe(exc)) from exc
        try:
            await self._set_up(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _transport(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        ep = self._endpoint
        if ep.path is not None:
            await loop.create_unix_connection(lambda: conn, ep.path)
        elif ep.tls is None:
            await loop.create_connection(lambda: conn, ep.host, ep.port)
        else:
            handshake = asyncio.ensure_future(loop.create_connection(
                lambda: conn, ep.host, ep.port, ssl=ep.tls, server_hostname=ep.host))
            try:
                done, _ = await asyncio.wait({handshake}, timeout=TLS_PROBE_AFTER_S)
                if not done and await speaks_plain_text(ep.host, ep.port):
                    raise StorageUnavailable(
                        f"TLS handshake with Redis at {ep.where} failed: the port speaks plain "
                        "text; use redis:// in redis_url, or the server's TLS port")
                await handshake
            finally:
                handshake.cancel()  # a no-op once it is done; else closes the half-open socket

    async def _set_up(self, conn: _Connection) -> None:
        setup = self._endpoint.setup()
        replies: list[asyncio.Future[Any]] = [
            asyncio.get_running_loop().create_future() for _ in setup]
        conn.send(b"".join(setup), replies)
        try:
            async with asyncio.timeout(self._connect_timeout):
                for reply in replies:
                    if isinstance(result := await reply, ResponseError):
                        raise StorageUnavailable(refusal(str(result), self._endpoint) or
                                                 f"Redis at {conn.where} refused the "
                                                 f"connection: {result}")
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"Redis at {conn.where} accepted the connection but did not answer within "
                f"{self._connect_timeout:g} s") from exc

    def _describe(self, exc: OSError) -> str:
        where = self._endpoint.where
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS handshake with Redis at {where} failed: certificate verify failed "
                    f"({exc.verify_message}); does ssl_ca_certs in redis_url name the CA that "
                    "signed the server's certificate?")
        if isinstance(exc, ssl.SSLError):
            return (f"TLS handshake with Redis at {where} failed: {exc.reason or exc}; does the "
                    "port speak TLS?")
        if isinstance(exc, socket.gaierror):
            return (f"cannot connect to Redis at {where}: unknown host "
                    f"{self._endpoint.host!r} ({exc.strerror})")
        if isinstance(exc, ConnectionRefusedError):
            return (f"cannot connect to Redis at {where}: connection refused (is it running and "
                    "listening there?)")
        if isinstance(exc, FileNotFoundError):
            return f"cannot connect to Redis at {where}: no such socket"
        if self._endpoint.tls is not None and isinstance(exc, ConnectionResetError):
            return (f"TLS handshake with Redis at {where} failed: the server closed the "
                    "connection; does the port speak TLS?")
        return f"cannot connect to Redis at {where}: {exc.strerror or exc}"

    def _script_error(self, reply: ResponseError) -> Exception:
        text = str(reply)
        if text.startswith("NOSCRIPT"):
            return NoScriptError(text)
        cause = refusal(text, self._endpoint)
        if cause is not None:
            return StorageUnavailable(cause)
        return reply if self._lua is None else ResponseError(self._lua.where(text))

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.fail(TimeoutError(
                f"Redis at {self._conn.where} did not answer within {self._timeout:g} s"))
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        self._fail_pending(StorageUnavailable("the webhook's Redis client is closed"))
        self._drop()


def _fixed_keys(lua: Lua, keys: int | None) -> int:
    """How many KEYS each call passes ``lua``: one packed EVALSHA prefix serves every call
    (``keys``: the count chosen for a script that takes a variable number)."""
    if keys is not None:
        lua.check_keys(keys)
        return keys
    if lua.more_keys:
        raise ScriptError(f"{lua.name} takes any number of keys: the webhook's client packs "
                          "a fixed count; say how many")
    return len(lua.keys)


def _unavailable(exc: Exception) -> Exception:
    """A connect or ``prepare`` failure as the calls waiting for it see it: Redis and socket
    errors as they are (the webhook answers 503), anything else as StorageUnavailable."""
    if isinstance(exc, (RedisError, OSError)):
        return exc
    error = StorageUnavailable(f"Redis is not ready for the webhook: {exc}")
    error.__cause__ = exc
    return error


def refusal(error: str, ep: Endpoint) -> str | None:
    """The cause in words when Redis refuses the URL's credentials, user or database; None for
    any other error."""
    if error.startswith(REFUSED_CREDENTIALS):
        return f"Redis refused the credentials in redis_url ({error})"
    if error.startswith("NOAUTH"):
        return f"Redis requires credentials (user:password@ in redis_url): {error}"
    if error.startswith("NOPERM"):
        return f"the Redis user in redis_url lacks a permission the webhook needs: {error}"
    if error.startswith("ERR DB index"):
        return f"Redis refused database {ep.db} from redis_url: {error}"
    return None


async def speaks_plain_text(host: str, port: int) -> bool:
    """Does ``host:port`` answer an inline PING in plain RESP? (Asked when a TLS handshake
    hangs: a plain port waits for the rest of a command that never comes.)"""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        first = await reader.read(1)
    except OSError:
        return False
    finally:
        writer.close()
    return first in (b"+", b"-")
